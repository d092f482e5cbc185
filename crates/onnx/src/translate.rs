//! One Tessera graph to one ONNX model. Values are computed in f32 as the contract defines them;
//! weights are dequantized exactly (`tessera_quant::dequantize`) into initializers.

use std::collections::HashMap;

use tessera_backend::{BufferId, DType, Graph, NodeId, Op, RopeStyle};

use crate::builder::{attr_int, attr_string, value_info, Builder};
use crate::proto::{
    attribute_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto,
};
use crate::OnnxError;

/// The ONNX operator set the models use: 21 has 16-bit QuantizeLinear, `Gelu` (20) and
/// `ReduceMean` with axes as an input (18).
pub const OPSET: i64 = 21;
/// IR version 10 goes with opset 21.
const IR_VERSION: i64 = 10;
/// The file name initializers refer to (a session gets the blob from memory under this name).
pub const WEIGHTS_FILE: &str = "weights.bin";
/// Added to masked attention scores: large enough that `exp` underflows to zero, finite.
pub const MASKED: f32 = -1.0e9;
/// The same for quantized models, whose masked scores share one scale with the others: small
/// enough to keep their precision, still `exp(-100) ≈ 4e-44` after the softmax.
pub const MASKED_QUANTIZED: f32 = -100.0;

/// How a leaf enters the ONNX model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafRole {
    /// Constant for the model's lifetime: an initializer in the weight blob.
    Weight,
    /// Read each run: a model input (token ids; positions and tables feed host inputs).
    Input,
    /// Written by a store in the graph and read back (KV cache, logits): a model input holding
    /// its contents before the run; the stores' rows are outputs.
    State,
}

/// The usual roles: store targets are state, I32 tensors inputs, everything else weights.
pub fn classify_leaves(graph: &Graph) -> Vec<Option<LeafRole>> {
    let mut roles: Vec<Option<LeafRole>> = graph
        .nodes()
        .iter()
        .map(|n| match n.op {
            Op::Leaf(_) if n.dtype == DType::I32 => Some(LeafRole::Input),
            Op::Leaf(_) => Some(LeafRole::Weight),
            _ => None,
        })
        .collect();
    for n in graph.nodes() {
        if n.op.is_store() {
            if let Some((leaf, _)) = graph.storage_of(n.inputs[1]) {
                roles[leaf] = Some(LeafRole::State);
            }
        }
    }
    roles
}

/// The numeric form of the exported weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// F32 weights and activations.
    Fp32,
    /// F16 weights (converted to f32 where used), f32 activations.
    Fp16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

/// How a graph is translated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TranslateOptions {
    pub precision: Precision,
    /// Added to masked attention scores ([`MASKED`], or [`MASKED_QUANTIZED`] for QDQ).
    pub masked: f32,
}

impl TranslateOptions {
    /// Float numerics in standard ONNX ops.
    pub fn float(precision: Precision) -> TranslateOptions {
        TranslateOptions { precision, masked: MASKED }
    }

    /// What QDQ models are calibrated and exported with.
    pub fn quantized() -> TranslateOptions {
        TranslateOptions { precision: Precision::Fp32, masked: MASKED_QUANTIZED }
    }
}

/// Reads the bytes of the buffers a graph names (weights, inputs, state).
pub trait BufferReader {
    /// The `len` bytes of `buffer` from byte `offset`.
    fn read(&self, buffer: BufferId, offset: usize, len: usize) -> Result<Vec<u8>, String>;
}

/// A weight's buffer, byte offset, layout and shape.
type PlacementKey = (BufferId, usize, Form, Vec<usize>);
/// Byte offset and length in the blob, and the ONNX element type.
type Placed = (usize, usize, i32);

/// Initializer data shared by every model translated for one device or export: each weight
/// once, 64-byte aligned, in the form its precision asks for.
#[derive(Default)]
pub struct WeightBlob {
    pub data: Vec<u8>,
    placed: HashMap<PlacementKey, Placed>,
    /// Buffers with placed weights, so that forgetting any other (a KV cache written every
    /// step) costs a lookup.
    buffers: std::collections::HashSet<BufferId>,
}

impl WeightBlob {
    pub fn new() -> WeightBlob {
        WeightBlob::default()
    }

    /// Forgets weights held in `buffer` (its contents changed); their bytes stay in the blob.
    pub fn forget(&mut self, buffer: BufferId) {
        if self.buffers.remove(&buffer) {
            self.placed.retain(|k, _| k.0 != buffer);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        source: &dyn BufferReader,
        leaf: NodeId,
        buffer: BufferId,
        offset: usize,
        dtype: DType,
        dims: &[usize],
        form: Form,
    ) -> Result<Placed, OnnxError> {
        let key = (buffer, offset, form, dims.to_vec());
        if let Some(&p) = self.placed.get(&key) {
            return Ok(p);
        }
        let count: usize = dims.iter().product();
        let err = |message: String| OnnxError::Leaf { node: leaf, message };
        let len = dtype.bytes_for(count).map_err(|e| err(e.to_string()))?;
        let bytes = source.read(buffer, offset, len).map_err(err)?;
        let start = self.data.len().next_multiple_of(64);
        self.data.resize(start, 0);
        let elem = match form {
            Form::Values(precision) => {
                let mut values = vec![0f32; count];
                tessera_quant::dequantize(dtype, &bytes, &mut values).map_err(|e| err(e.to_string()))?;
                match precision {
                    Precision::Fp32 => {
                        self.data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                        data_type::FLOAT
                    }
                    Precision::Fp16 => {
                        self.data.extend(values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()));
                        data_type::FLOAT16
                    }
                }
            }
            Form::I8Transposed => {
                // [M, K] int8 codes as [K, M], the layout MatMulInteger takes.
                let (m, k) = (dims[0], dims[1]);
                self.data.extend((0..k * m).map(|i| bytes[(i % m) * k + i / m]));
                data_type::INT8
            }
        };
        let placed = (start, self.data.len() - start, elem);
        self.placed.insert(key, placed);
        self.buffers.insert(buffer);
        Ok(placed)
    }
}

/// How a weight is laid out in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Form {
    /// Its values, in the precision's float type, as stored (`[M, K]`).
    Values(Precision),
    /// INT8 codes transposed.
    I8Transposed,
}

/// What the host computes for one model input before each run.
#[derive(Clone, Debug, PartialEq)]
pub enum HostInput {
    /// The stored bytes of a leaf or a view of one (I32 ids, the KV cache's contents).
    Leaf { node: NodeId },
    /// `cos` of the rotary angles, `[N, rot_dims / 2]` f32, for the I32 positions at `pos`.
    RopeCos { pos: NodeId, rot_dims: usize, base: f32, freq_scale: f32 },
    /// `sin` of the same angles.
    RopeSin { pos: NodeId, rot_dims: usize, base: f32, freq_scale: f32 },
    /// Additive attention mask `[N, rows]` f32: 0 where query row `n` may attend to cache row
    /// `j`, a large negative number elsewhere. With `tables`, rows are a paged pool.
    Mask { pos: NodeId, tables: Option<NodeId>, rows: usize, window: Option<usize>, block_size: usize, masked: f32 },
    /// Additive mask `[N, rows + M]` over a cache of `rows` rows followed by the `M` rows that
    /// `store` (a `Store { row }`) writes: cache row `j` is visible to a token at position `p`
    /// when `j < row` and `j <= p`, new row `m` when `row + m <= p` (and both within `window`).
    AppendMask { pos: NodeId, store: NodeId, rows: usize, window: Option<usize>, masked: f32 },
    /// The destination rows of a `Store` (`row..row + N`) or `StoreRows` (its slots), `[N, 1]`
    /// i64, checked against the destination.
    Rows { store: NodeId },
}

/// One model input: its name, what fills it, its ONNX element type and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxInput {
    pub name: String,
    pub source: HostInput,
    pub elem_type: i32,
    pub dims: Vec<usize>,
}

/// One model output: the f32 rows `[N, D]` that store node `store` writes into its destination.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOutput {
    pub name: String,
    pub store: NodeId,
}

/// An ONNX model and how to drive it.
pub struct Translation {
    pub model: ModelProto,
    pub inputs: Vec<OnnxInput>,
    pub outputs: Vec<StoreOutput>,
    /// `GetRows` nodes and their ids input, checked on the host against the table's rows.
    pub id_checks: Vec<(NodeId, NodeId, usize)>,
}

/// Translates `graph`. `roles[n]` is the role of leaf `n` (see [`classify_leaves`]).
pub fn translate(
    graph: &Graph,
    roles: &[Option<LeafRole>],
    options: &TranslateOptions,
    weights: &mut WeightBlob,
    source: &dyn BufferReader,
) -> Result<Translation, OnnxError> {
    let mut t = Translator {
        graph,
        roles,
        precision: options.precision,
        masked: options.masked,
        weights,
        source,
        b: Builder::default(),
        values: HashMap::new(),
        weight_values: HashMap::new(),
        inputs: Vec::new(),
        input_names: HashMap::new(),
        outputs: Vec::new(),
        id_checks: Vec::new(),
    };
    for (id, node) in graph.nodes().iter().enumerate() {
        if node.op.is_store() {
            t.store_output(id)?;
        }
    }
    let Translator { b, inputs, outputs, id_checks, .. } = t;
    let opset_import = vec![OperatorSetIdProto { domain: String::new(), version: OPSET }];
    let graph_proto = GraphProto {
        node: b.nodes,
        name: "tessera".into(),
        initializer: b.initializers,
        input: inputs.iter().map(|i| value_info(&i.name, i.elem_type, &i.dims)).collect(),
        output: b.outputs,
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import,
        producer_name: "tessera".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: String::new(),
        graph: Some(graph_proto),
        metadata_props: vec![],
    };
    Ok(Translation { model, inputs, outputs, id_checks })
}

struct Translator<'a> {
    graph: &'a Graph,
    roles: &'a [Option<LeafRole>],
    precision: Precision,
    masked: f32,
    weights: &'a mut WeightBlob,
    source: &'a dyn BufferReader,
    b: Builder,
    /// The ONNX value (f32, or int32 for I32 tensors) of each translated node.
    values: HashMap<NodeId, String>,
    /// The f32 initializer-backed value of each weight leaf, by (buffer, offset, shape).
    weight_values: HashMap<PlacementKey, String>,
    inputs: Vec<OnnxInput>,
    input_names: HashMap<String, String>,
    outputs: Vec<StoreOutput>,
    id_checks: Vec<(NodeId, NodeId, usize)>,
}

fn dims_i64(dims: &[usize]) -> Vec<i64> {
    dims.iter().map(|&d| d as i64).collect()
}

impl Translator<'_> {
    fn untranslatable(&self, node: NodeId, message: impl Into<String>) -> OnnxError {
        OnnxError::Untranslatable { node, op: self.graph.node(node).op.name(), message: message.into() }
    }

    /// Registers (once) a host-computed input and returns its name.
    fn host_input(&mut self, hint: &str, source: HostInput, elem_type: i32, dims: Vec<usize>) -> String {
        let key = format!("{source:?}");
        if let Some(name) = self.input_names.get(&key) {
            return name.clone();
        }
        let name = format!("{hint}.{}", self.inputs.len());
        self.inputs.push(OnnxInput { name: name.clone(), source, elem_type, dims });
        self.input_names.insert(key, name.clone());
        name
    }

    fn role(&self, leaf: NodeId) -> LeafRole {
        self.roles.get(leaf).copied().flatten().unwrap_or(LeafRole::Weight)
    }

    /// The ONNX value of `id`: f32 for floating tensors, int32 for I32 ones.
    fn value(&mut self, id: NodeId) -> Result<String, OnnxError> {
        if let Some(v) = self.values.get(&id) {
            return Ok(v.clone());
        }
        let node = self.graph.node(id).clone();
        let dims = node.shape.dims().to_vec();
        let v = match &node.op {
            Op::Leaf(tensor) => match self.role(id) {
                LeafRole::Weight if node.dtype != DType::I32 => self.weight(id, tensor.buffer, tensor.offset)?,
                LeafRole::Weight | LeafRole::Input | LeafRole::State => {
                    let elem = match node.dtype {
                        DType::I32 => data_type::INT32,
                        DType::F32 => data_type::FLOAT,
                        DType::F16 => data_type::FLOAT16,
                        other => return Err(self.untranslatable(id, format!("a {other} input or state"))),
                    };
                    let hint = if self.role(id) == LeafRole::State { "state" } else { "input" };
                    let name = self.host_input(hint, HostInput::Leaf { node: id }, elem, dims.clone());
                    if elem == data_type::FLOAT16 {
                        self.b.cast(&name, data_type::FLOAT)
                    } else {
                        name
                    }
                }
            },
            Op::GetRows => {
                let table = self.value(node.inputs[0])?;
                let ids = self.value(node.inputs[1])?;
                let ids = self.b.reshape(&ids, &[-1]);
                let rows = self.graph.node(node.inputs[0]).shape.rows();
                self.id_checks.push((id, node.inputs[1], rows));
                self.b.op("Gather", &[&table, &ids], vec![attr_int("axis", 0)])
            }
            Op::MatMul => self.mat_mul(node.inputs[0], node.inputs[1], &dims)?,
            Op::Add if node.inputs.iter().all(|&i| self.is_row_selection(i)) => {
                // QNN's HTP (2.7.0, emulated and compiled) adds two row selections wrongly,
                // e.g. the last row of the attention output and of the residual; a - (-b) is
                // the same sum, exactly, and it computes that right.
                let a = self.value(node.inputs[0])?;
                let b = self.value(node.inputs[1])?;
                let minus_b = self.b.op("Neg", &[&b], vec![]);
                self.b.op("Sub", &[&a, &minus_b], vec![])
            }
            Op::Add | Op::Mul => {
                let a = self.value(node.inputs[0])?;
                let b = self.value(node.inputs[1])?;
                let op = if node.op == Op::Add { "Add" } else { "Mul" };
                self.b.op(op, &[&a, &b], vec![])
            }
            Op::Scale { factor } => {
                let x = self.value(node.inputs[0])?;
                let f = self.b.f32_scalar(*factor);
                self.b.op("Mul", &[&x, &f], vec![])
            }
            // One op, not its arithmetic: the squares of a residual stream carrying ±13,000
            // (SmolLM2) overflow fp16 (NPUs run float graphs in it) and defeat one quantization
            // scale; QNN maps it to its own RmsNorm.
            Op::RmsNorm { eps } => {
                let x = self.value(node.inputs[0])?;
                let w = self.value(node.inputs[1])?;
                let eps = AttributeProto {
                    name: "epsilon".into(),
                    r#type: attribute_type::FLOAT,
                    f: *eps,
                    ..Default::default()
                };
                self.b.op("SimplifiedLayerNormalization", &[&x, &w], vec![attr_int("axis", -1), eps])
            }
            Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
                self.rope(id, node.inputs[0], node.inputs[1], *head_dim, *rot_dims, *base, *freq_scale, *style)?
            }
            Op::SwiGlu => {
                let g = self.value(node.inputs[0])?;
                let u = self.value(node.inputs[1])?;
                let s = self.b.op("Sigmoid", &[&g], vec![]);
                let silu = self.b.op("Mul", &[&g, &s], vec![]);
                self.b.op("Mul", &[&silu, &u], vec![])
            }
            Op::GeGlu => {
                let g = self.value(node.inputs[0])?;
                let u = self.value(node.inputs[1])?;
                let gelu = self.b.op("Gelu", &[&g], vec![attr_string("approximate", "tanh")]);
                self.b.op("Mul", &[&gelu, &u], vec![])
            }
            Op::Attention { n_heads, n_kv_heads, head_dim, scale, window } => {
                let rows = self.graph.node(node.inputs[1]).shape.rows();
                let masked = self.masked;
                let (pos, window) = (node.inputs[3], *window);
                match (self.appended(node.inputs[1]), self.appended(node.inputs[2])) {
                    // The cache before the step with the step's rows after it: no scatter, which
                    // NPU compilers handle badly, and the mask hides the rows being replaced.
                    (Some((k_past, k_new, store)), Some((v_past, v_new, _))) => {
                        let new = self.graph.node(k_new).shape.rows();
                        let mask = HostInput::AppendMask { pos, store, rows, window, masked };
                        let k = self.concat_rows(k_past, k_new)?;
                        let v = self.concat_rows(v_past, v_new)?;
                        self.attention(
                            id,
                            node.inputs[0],
                            (k, v),
                            mask,
                            rows + new,
                            *n_heads,
                            *n_kv_heads,
                            *head_dim,
                            *scale,
                        )?
                    }
                    _ => {
                        let mask = HostInput::Mask { pos, tables: None, rows, window, block_size: 1, masked };
                        let kv = (self.value(node.inputs[1])?, self.value(node.inputs[2])?);
                        self.attention(id, node.inputs[0], kv, mask, rows, *n_heads, *n_kv_heads, *head_dim, *scale)?
                    }
                }
            }
            Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, block_size } => {
                let rows = self.graph.node(node.inputs[1]).shape.rows();
                let mask = HostInput::Mask {
                    pos: node.inputs[3],
                    tables: Some(node.inputs[4]),
                    rows,
                    window: *window,
                    block_size: *block_size,
                    masked: self.masked,
                };
                let kv = (self.value(node.inputs[1])?, self.value(node.inputs[2])?);
                self.attention(id, node.inputs[0], kv, mask, rows, *n_heads, *n_kv_heads, *head_dim, *scale)?
            }
            Op::Store { .. } | Op::StoreRows => {
                let dst_node = self.graph.node(node.inputs[1]);
                let (dst_dtype, width) = (dst_node.dtype, dst_node.shape.cols());
                let dst = self.value(node.inputs[1])?;
                let dst = self.b.reshape(&dst, &[-1, width as i64]);
                let src = self.store_rows_value(id)?;
                let n = self.graph.node(node.inputs[0]).shape.count() / width.max(1);
                let rows = self.host_input("rows", HostInput::Rows { store: id }, data_type::INT64, vec![n, 1]);
                // The rows read back are those the destination holds: rounded to its type.
                let src = if dst_dtype == DType::F16 {
                    let h = self.b.cast(&src, data_type::FLOAT16);
                    self.b.cast(&h, data_type::FLOAT)
                } else {
                    src
                };
                let updated = self.b.op("ScatterND", &[&dst, &rows, &src], vec![]);
                self.b.reshape(&updated, &dims_i64(&dims))
            }
            Op::SliceRows { start, len } => {
                let x = self.value(node.inputs[0])?;
                self.b.slice(&x, 0, *start as i64, (*start + *len) as i64)
            }
            Op::Reshape => {
                let x = self.value(node.inputs[0])?;
                self.b.reshape(&x, &dims_i64(&dims))
            }
        };
        self.values.insert(id, v.clone());
        Ok(v)
    }

    /// Whether a node picks rows of another value (`SliceRows`, `GetRows`).
    fn is_row_selection(&self, id: NodeId) -> bool {
        matches!(self.graph.node(id).op, Op::SliceRows { .. } | Op::GetRows)
    }

    /// The f32 value of a weight leaf, backed by an initializer in the blob.
    fn weight(&mut self, id: NodeId, buffer: BufferId, offset: usize) -> Result<String, OnnxError> {
        self.initializer(id, buffer, offset, Form::Values(self.precision))
    }

    /// An initializer holding a weight leaf in `form`; values come back as f32.
    fn initializer(&mut self, id: NodeId, buffer: BufferId, offset: usize, form: Form) -> Result<String, OnnxError> {
        let node = self.graph.node(id);
        let mut dims = node.shape.dims().to_vec();
        let key = (buffer, offset, form, dims.clone());
        if let Some(v) = self.weight_values.get(&key) {
            return Ok(v.clone());
        }
        let (start, len, elem) = self.weights.place(self.source, id, buffer, offset, node.dtype, &dims, form)?;
        if form == Form::I8Transposed {
            dims.reverse();
        }
        let name = format!("w.{}.{}", buffer.0, offset);
        let name = if self.b.initializers.iter().any(|i| i.name == name) { self.b.fresh(&name) } else { name };
        let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
        self.b.initializers.push(TensorProto {
            dims: dims_i64(&dims),
            data_type: elem,
            name: name.clone(),
            external_data: vec![
                entry("location", WEIGHTS_FILE.into()),
                entry("offset", start.to_string()),
                entry("length", len.to_string()),
            ],
            data_location: 1,
            ..Default::default()
        });
        let v = if elem == data_type::FLOAT16 { self.b.cast(&name, data_type::FLOAT) } else { name };
        self.weight_values.insert(key, v.clone());
        Ok(v)
    }

    /// The buffer and byte offset of a weight leaf or a view of one.
    fn weight_storage(&self, id: NodeId) -> Option<(BufferId, usize)> {
        let (leaf, offset) = self.graph.storage_of(id)?;
        match self.graph.node(leaf).op {
            Op::Leaf(t) if self.role(leaf) == LeafRole::Weight && self.graph.node(id).shape.rank() == 2 => {
                Some((t.buffer, t.offset + offset))
            }
            _ => None,
        }
    }

    fn mat_mul(&mut self, x: NodeId, w: NodeId, out_dims: &[usize]) -> Result<String, OnnxError> {
        let xv = self.value(x)?;
        let k = self.graph.node(x).shape.cols() as i64;
        let x2 = if self.graph.node(x).shape.rank() == 2 { xv } else { self.b.reshape(&xv, &[-1, k]) };
        let y = if self.graph.node(w).dtype == DType::I8 {
            self.mat_mul_i8(&x2, w)?
        } else if let Some((buffer, offset)) = self.weight_storage(w) {
            let wv = self.weight(w, buffer, offset)?;
            // Gemm reads the weight as stored, [M, K]: one initializer serves GetRows too.
            self.b.op("Gemm", &[&x2, &wv], vec![attr_int("transB", 1)])
        } else {
            let wv = self.value(w)?;
            let wt = self.b.transpose(&wv, &[1, 0]);
            self.b.op("MatMul", &[&x2, &wt], vec![])
        };
        Ok(if out_dims.len() == 2 { y } else { self.b.reshape(&y, &dims_i64(out_dims)) })
    }

    /// `MatMul` with INT8 weights as the contract defines it: each row of `x` quantized to int8
    /// (`round_half_away(x · 127 / max|x|)`), an exact integer product, then `max|x| / 127`.
    fn mat_mul_i8(&mut self, x: &str, w: NodeId) -> Result<String, OnnxError> {
        let wq = match self.weight_storage(w) {
            Some((buffer, offset)) => self.initializer(w, buffer, offset, Form::I8Transposed)?,
            None => return Err(self.untranslatable(w, "INT8 weights must be stored weights")),
        };
        let axes = self.b.i64s(&[-1]);
        let abs = self.b.op("Abs", &[x], vec![]);
        let amax = self.b.op("ReduceMax", &[&abs, &axes], vec![attr_int("keepdims", 1)]);
        let c127 = self.b.f32_scalar(127.0);
        let zero = self.b.f32_scalar(0.0);
        let d = self.b.op("Div", &[&amax, &c127], vec![]);
        let inv = self.b.op("Div", &[&c127, &amax], vec![]);
        let is_zero = self.b.op("Equal", &[&amax, &zero], vec![]);
        let inv = self.b.op("Where", &[&is_zero, &zero, &inv], vec![]);
        let q = self.b.op("Mul", &[x, &inv], vec![]);
        let half = self.b.f32_scalar(0.5);
        let mag = self.b.op("Abs", &[&q], vec![]);
        let mag = self.b.op("Add", &[&mag, &half], vec![]);
        let mag = self.b.op("Floor", &[&mag], vec![]);
        let sign = self.b.op("Sign", &[&q], vec![]);
        let q = self.b.op("Mul", &[&mag, &sign], vec![]);
        let lo = self.b.f32_scalar(-127.0);
        let q = self.b.op("Clip", &[&q, &lo, &c127], vec![]);
        let q = self.b.cast(&q, data_type::INT8);
        let acc = self.b.op("MatMulInteger", &[&q, &wq], vec![]);
        let acc = self.b.cast(&acc, data_type::FLOAT);
        Ok(self.b.op("Mul", &[&acc, &d], vec![]))
    }

    #[allow(clippy::too_many_arguments)]
    fn rope(
        &mut self,
        id: NodeId,
        x: NodeId,
        pos: NodeId,
        head_dim: usize,
        rot_dims: usize,
        base: f32,
        freq_scale: f32,
        style: RopeStyle,
    ) -> Result<String, OnnxError> {
        let xv = self.value(x)?;
        let shape = self.graph.node(x).shape.clone();
        let (n, cols) = (shape.rows(), shape.cols());
        if head_dim == 0 || rot_dims == 0 {
            return Ok(xv);
        }
        if !cols.is_multiple_of(head_dim) || !rot_dims.is_multiple_of(2) || rot_dims > head_dim {
            return Err(self.untranslatable(id, "head_dim and rot_dims do not divide the row"));
        }
        let heads = (cols / head_dim) as i64;
        let half = rot_dims / 2;
        let dims = vec![n, half];
        let cos = self.host_input(
            "rope_cos",
            HostInput::RopeCos { pos, rot_dims, base, freq_scale },
            data_type::FLOAT,
            dims.clone(),
        );
        let sin =
            self.host_input("rope_sin", HostInput::RopeSin { pos, rot_dims, base, freq_scale }, data_type::FLOAT, dims);
        let (n, hd, r, h) = (n as i64, head_dim as i64, rot_dims as i64, half as i64);
        let x3 = self.b.reshape(&xv, &[n, heads, hd]);
        let rot = if r == hd { x3.clone() } else { self.b.slice(&x3, 2, 0, r) };
        let (x0, x1, table_dims, pair_dims) = match style {
            RopeStyle::Halves => {
                let x0 = self.b.slice(&rot, 2, 0, h);
                let x1 = self.b.slice(&rot, 2, h, r);
                (x0, x1, vec![n, 1, h], vec![n, heads, r])
            }
            RopeStyle::Interleaved => {
                let pairs = self.b.reshape(&rot, &[n, heads, h, 2]);
                let x0 = self.b.slice(&pairs, 3, 0, 1);
                let x1 = self.b.slice(&pairs, 3, 1, 2);
                (x0, x1, vec![n, 1, h, 1], vec![n, heads, r])
            }
        };
        let cos = self.b.reshape(&cos, &table_dims);
        let sin = self.b.reshape(&sin, &table_dims);
        // As the CPU computes them: x0·cos − x1·sin and x0·sin + x1·cos.
        let a = self.b.op("Mul", &[&x0, &cos], vec![]);
        let bb = self.b.op("Mul", &[&x1, &sin], vec![]);
        let y0 = self.b.op("Sub", &[&a, &bb], vec![]);
        let c = self.b.op("Mul", &[&x0, &sin], vec![]);
        let d = self.b.op("Mul", &[&x1, &cos], vec![]);
        let y1 = self.b.op("Add", &[&c, &d], vec![]);
        let axis = if style == RopeStyle::Halves { 2 } else { 3 };
        let joined = self.b.op("Concat", &[&y0, &y1], vec![attr_int("axis", axis)]);
        let joined = self.b.reshape(&joined, &pair_dims);
        let full = if r == hd {
            joined
        } else {
            let pass = self.b.slice(&x3, 2, r, hd);
            self.b.op("Concat", &[&joined, &pass], vec![attr_int("axis", 2)])
        };
        Ok(self.b.reshape(&full, &[n, heads * hd]))
    }

    /// A `Store { row }` into a state leaf: the leaf, the rows stored and the store.
    fn appended(&self, id: NodeId) -> Option<(NodeId, NodeId, NodeId)> {
        let node = self.graph.node(id);
        let dst = node.inputs.get(1).copied()?;
        match (&node.op, &self.graph.node(dst).op) {
            (Op::Store { .. }, Op::Leaf(_)) if self.role(dst) == LeafRole::State => Some((dst, node.inputs[0], id)),
            _ => None,
        }
    }

    /// `past` (`[C, D]`) with the rows of `new` after it.
    fn concat_rows(&mut self, past: NodeId, new: NodeId) -> Result<String, OnnxError> {
        let width = self.graph.node(past).shape.cols() as i64;
        let p = self.value(past)?;
        let n = self.value(new)?;
        let n = self.b.reshape(&n, &[-1, width]);
        Ok(self.b.op("Concat", &[&p, &n], vec![attr_int("axis", 0)]))
    }

    /// Attention of `q` over the keys and values `kv` (`[rows, KVH · hd]` each).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        id: NodeId,
        q: NodeId,
        kv: (String, String),
        mask: HostInput,
        rows: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        scale: f32,
    ) -> Result<String, OnnxError> {
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(self.untranslatable(id, "heads are not a multiple of KV heads"));
        }
        let n = self.graph.node(q).shape.rows();
        let q = self.value(q)?;
        let (k, v) = kv;
        let mask = self.host_input("mask", mask, data_type::FLOAT, vec![n, rows]);
        let (n, c, kvh, g, hd) =
            (n as i64, rows as i64, n_kv_heads as i64, (n_heads / n_kv_heads) as i64, head_dim as i64);
        // Query heads grouped by the KV head they share: [KVH, G·N, hd].
        let q = self.b.reshape(&q, &[n, kvh, g, hd]);
        let q = self.b.transpose(&q, &[1, 2, 0, 3]);
        let q = self.b.reshape(&q, &[kvh, g * n, hd]);
        let k = self.b.reshape(&k, &[c, kvh, hd]);
        let kt = self.b.transpose(&k, &[1, 2, 0]);
        let v = self.b.reshape(&v, &[c, kvh, hd]);
        let v = self.b.transpose(&v, &[1, 0, 2]);
        let scores = self.b.op("MatMul", &[&q, &kt], vec![]);
        let s = self.b.f32_scalar(scale);
        let scores = self.b.op("Mul", &[&scores, &s], vec![]);
        let scores = self.b.reshape(&scores, &[kvh, g, n, c]);
        let scores = self.b.op("Add", &[&scores, &mask], vec![]);
        let p = self.b.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let p = self.b.reshape(&p, &[kvh, g * n, c]);
        let o = self.b.op("MatMul", &[&p, &v], vec![]);
        let o = self.b.reshape(&o, &[kvh, g, n, hd]);
        let o = self.b.transpose(&o, &[2, 0, 1, 3]);
        Ok(self.b.reshape(&o, &[n, kvh * g * hd]))
    }

    /// The source rows of a store as `[N, D]` f32, `D` the destination's row width.
    fn store_rows_value(&mut self, store: NodeId) -> Result<String, OnnxError> {
        let node = self.graph.node(store).clone();
        let width = self.graph.node(node.inputs[1]).shape.cols() as i64;
        let src = self.value(node.inputs[0])?;
        Ok(if self.graph.node(node.inputs[0]).shape.rank() == 2 { src } else { self.b.reshape(&src, &[-1, width]) })
    }

    fn store_output(&mut self, store: NodeId) -> Result<(), OnnxError> {
        let node = self.graph.node(store).clone();
        let width = self.graph.node(node.inputs[1]).shape.cols();
        let n = self.graph.node(node.inputs[0]).shape.count() / width.max(1);
        let src = self.store_rows_value(store)?;
        // An output must be a node's own output, not an input or initializer passed through.
        let name = format!("store.{store}");
        self.b.nodes.push(NodeProto {
            input: vec![src],
            output: vec![name.clone()],
            name: name.clone(),
            op_type: "Identity".into(),
            ..Default::default()
        });
        self.b.outputs.push(value_info(&name, data_type::FLOAT, &[n, width]));
        self.outputs.push(StoreOutput { name, store });
        Ok(())
    }
}
