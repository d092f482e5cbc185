//! Computation graphs: what a backend executes. Built only through [`GraphBuilder`], which checks
//! every op's input types and shapes, so a backend may trust a [`Graph`] it is given.

use std::fmt;

use tessera_core::{DType, Shape};

use crate::contract::BufferId;

/// Index of a node in its graph. Inputs always have smaller ids than the nodes that use them.
pub type NodeId = usize;

/// Where a stored tensor lives: a buffer and a byte offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorRef {
    pub buffer: BufferId,
    pub offset: usize,
}

/// How RoPE pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: GGUF Llama models, whose Q/K rows were permuted for it.
    Interleaved,
    /// Halves `(x[i], x[i + d/2])`: GPT-NeoX, Qwen, Gemma, and Hugging Face Llama checkpoints.
    Halves,
}

/// The operations a backend computes. All activations are F32; weights and the KV cache keep
/// their stored type. Shapes are row-major, `[rows, cols]` unless said otherwise.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A tensor stored in a buffer (weights, KV cache, per-step inputs). No inputs.
    Leaf(TensorRef),
    /// `[table: any [V, D], ids: I32 [N]] -> F32 [N, D]`: row `ids[n]` of `table`, dequantized
    /// as `tessera_quant::dequantize` does (bit-exact with ggml for its types). I8 and F8_E4M3
    /// rows are their decoded values, with no scale. An id outside `0..V` is an error.
    GetRows,
    /// `[x: F32 [.., K], w: any [M, K]] -> F32 [.., M]`: `y = x · wᵀ`, `w` read in its stored type.
    ///
    /// What each weight type means:
    /// - F32, F16, BF16: the values. A backend may round `x` to F16/BF16 first, as ggml does.
    /// - ggml's block types (Q*, MXFP4, NVFP4): the dequantized values. A backend may quantize
    ///   each row of `x` to ggml's `vec_dot_type` first: Q8_0 for Q4_0, Q5_0, Q8_0, MXFP4 and
    ///   NVFP4, Q8_1 for Q4_1 and Q5_1, Q8_K for the K-quants.
    /// - I8 (INT8 W8A8): each row of `x` is quantized on its own (per token) to int8:
    ///   `d = max|x| / 127`, `q[k] = round_half_away_from_zero(x[k] * (127 / max|x|))` computed in
    ///   f32 and clamped to `[-127, 127]` (`d = 0` and `q = 0` for an all-zero row; exactly
    ///   `tessera_quant::int8::quantize_activation_row`), then `y[n, m] = d * Σ_k q[k] · w[m, k]`
    ///   with the sum exact in integers.
    /// - F8_E4M3: the exactly decoded E4M3 values times the f32 `x` (the NaN codes 0x7F and
    ///   0xFF are not valid weights).
    ///
    /// I8 and F8_E4M3 weights carry no scale: their checkpoint's per-output-channel or
    /// per-tensor scale is applied by the model, which multiplies this op's output by it (a
    /// separate `Mul`), as it does NVFP4's per-tensor factor.
    MatMul,
    /// `[a: F32 S, b: F32 S or [cols(S)]] -> F32 S`: elementwise sum; a one-row `b` is broadcast.
    Add,
    /// `[a: F32 S, b: F32 S or [cols(S)]] -> F32 S`: elementwise product, broadcast as for `Add`.
    Mul,
    /// `[x: F32 S] -> F32 S`: `x * factor`.
    Scale { factor: f32 },
    /// `[x: F32 [.., D], w: F32 [D]] -> F32 [.., D]`: `x / sqrt(mean(x²) + eps) * w`, per row.
    RmsNorm { eps: f32 },
    /// `[x: F32 [N, H * head_dim], pos: I32 [N]] -> F32 [N, H * head_dim]`: rotary position
    /// embedding of the first `rot_dims` dims of every head. For pair `i < rot_dims / 2` of a head
    /// in row `n`, the angle is `pos[n] * freq_scale * base^(-2i / rot_dims)`.
    Rope { head_dim: usize, rot_dims: usize, base: f32, freq_scale: f32, style: RopeStyle },
    /// `[gate: F32 S, up: F32 S] -> F32 S`: `silu(gate) * up`.
    SwiGlu,
    /// `[gate: F32 S, up: F32 S] -> F32 S`: `gelu_tanh(gate) * up`.
    GeGlu,
    /// `[q: F32 [N, H * head_dim], k: F32|F16 [C, KVH * head_dim], v: same as k, pos: I32 [N]]
    /// -> F32 [N, H * head_dim]`: causal attention over a KV cache of `C` rows. Query row `n`,
    /// head `h` attends to cache rows `j <= pos[n]` (and `pos[n] - j < window` when a window is
    /// set) of KV head `h / (H / KVH)`, with weights `softmax(scale * q·k)`.
    /// `pos[n] >= C` is an error.
    Attention { n_heads: usize, n_kv_heads: usize, head_dim: usize, scale: f32, window: Option<usize> },
    /// `[src: F32 [N, D], dst: F32|F16 [C, D]] -> dst`: writes `src` into rows `row..row + N` of
    /// `dst` (converting to its type). `dst` must be a `Leaf` or another `Store`; the result is
    /// `dst` itself, so ops that read it after the write take this node as their input.
    Store { row: usize },
    /// `[src: F32 [N, D], dst: F32|F16 [C, D], slots: I32 [N]] -> dst`: writes row `n` of `src`
    /// into row `slots[n]` of `dst` (a paged KV cache). Like `Store`, `dst` must be a `Leaf` or
    /// another store and the result is `dst` itself. A slot outside `0..C` is an error; slots
    /// must be distinct.
    StoreRows,
    /// `[q: F32 [N, H * head_dim], k: F32|F16 [S, KVH * head_dim], v: same as k, pos: I32 [N],
    /// tables: I32 [N, B]] -> F32 [N, H * head_dim]`: causal attention over a paged KV cache, as
    /// `Attention` over positions `j <= pos[n]` (and `pos[n] - j < window` when set), where
    /// position `j` of query row `n` lives in cache row
    /// `tables[n, j / block_size] * block_size + j % block_size`. Rows of one sequence repeat its
    /// block table; rows of different sequences may share blocks (a common prefix). A table
    /// entry that is needed and points outside the cache, or `pos[n] >= B * block_size`, is an
    /// error. Each row's result depends only on its own inputs, never on the other rows.
    PagedAttention {
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        window: Option<usize>,
        block_size: usize,
    },
    /// `[x: any [R, ..]] -> [len, ..]`: rows `start..start + len` (a view).
    SliceRows { start: usize, len: usize },
    /// `[x] -> x` with the node's shape (same element count; a view).
    Reshape,
}

impl Op {
    /// Ops that write into their destination input (`Store`, `StoreRows`); their result is it.
    pub fn is_store(&self) -> bool {
        matches!(self, Op::Store { .. } | Op::StoreRows)
    }

    /// What a store may write into: a leaf or the result of another store.
    pub fn is_store_target(&self) -> bool {
        matches!(self, Op::Leaf(_)) || self.is_store()
    }

    /// Short lower-case name, as used in errors, logs and the conformance report.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Leaf(_) => "leaf",
            Op::GetRows => "get_rows",
            Op::MatMul => "mat_mul",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Rope { .. } => "rope",
            Op::SwiGlu => "swiglu",
            Op::GeGlu => "geglu",
            Op::Attention { .. } => "attention",
            Op::Store { .. } => "store",
            Op::StoreRows => "store_rows",
            Op::PagedAttention { .. } => "paged_attention",
            Op::SliceRows { .. } => "slice_rows",
            Op::Reshape => "reshape",
        }
    }
}

/// One node: an op, its inputs, and the type and shape of its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub dtype: DType,
    pub shape: Shape,
    /// Free-form label for logs and errors (`blk.3.attn_q`).
    pub label: String,
}

/// A checked, topologically ordered computation graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
}

impl Graph {
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The types of a node's inputs, in order.
    pub fn input_dtypes(&self, id: NodeId) -> Vec<DType> {
        self.nodes[id].inputs.iter().map(|&i| self.nodes[i].dtype).collect()
    }

    /// The leaf or store a view (`Reshape`, `SliceRows`) ultimately reads, with the byte offset of
    /// the view inside it; `None` when the chain ends at a computed node.
    pub fn storage_of(&self, mut id: NodeId) -> Option<(NodeId, usize)> {
        let mut offset = 0usize;
        loop {
            let node = &self.nodes[id];
            match node.op {
                Op::Leaf(_) | Op::Store { .. } | Op::StoreRows => return Some((id, offset)),
                Op::Reshape => id = node.inputs[0],
                Op::SliceRows { start, .. } => {
                    let src = &self.nodes[node.inputs[0]];
                    let row_elems = src.shape.count() / src.shape.dims()[0].max(1);
                    offset += src.dtype.bytes_for(start * row_elems).ok()?;
                    id = node.inputs[0];
                }
                _ => return None,
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    #[error("node id {0} does not exist yet")]
    UnknownNode(NodeId),
}

fn invalid(op: &Op, message: impl Into<String>) -> GraphError {
    GraphError::Invalid { op: op.name(), message: message.into() }
}

/// Builds a [`Graph`], inferring and checking the type and shape of every node.
#[derive(Default)]
pub struct GraphBuilder {
    graph: Graph,
    label: String,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    pub fn finish(self) -> Graph {
        self.graph
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Sets the label given to the nodes added next.
    pub fn label(&mut self, label: impl Into<String>) -> &mut Self {
        self.label = label.into();
        self
    }

    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.graph.nodes[id].shape
    }

    pub fn dtype(&self, id: NodeId) -> DType {
        self.graph.nodes[id].dtype
    }

    fn get(&self, id: NodeId) -> Result<&Node, GraphError> {
        self.graph.nodes.get(id).ok_or(GraphError::UnknownNode(id))
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, dtype: DType, shape: Shape) -> NodeId {
        self.graph.nodes.push(Node { op, inputs, dtype, shape, label: self.label.clone() });
        self.graph.nodes.len() - 1
    }

    fn expect_dtype(&self, op: &Op, id: NodeId, allowed: &[DType], what: &str) -> Result<(), GraphError> {
        let d = self.get(id)?.dtype;
        if allowed.contains(&d) {
            Ok(())
        } else {
            Err(invalid(op, format!("{what} must be {allowed:?}, got {d}")))
        }
    }

    /// A tensor stored at `tensor`. Quantized tensors must have whole blocks in every row.
    pub fn leaf(&mut self, tensor: TensorRef, dtype: DType, shape: impl Into<Shape>) -> Result<NodeId, GraphError> {
        let shape = shape.into();
        let op = Op::Leaf(tensor);
        shape.checked_count().map_err(|e| invalid(&op, e.to_string()))?;
        if shape.cols() % dtype.block_len() != 0 {
            return Err(invalid(&op, format!("rows of {} {dtype} values are not whole blocks", shape.cols())));
        }
        Ok(self.push(op, vec![], dtype, shape))
    }

    pub fn get_rows(&mut self, table: NodeId, ids: NodeId) -> Result<NodeId, GraphError> {
        let op = Op::GetRows;
        self.expect_dtype(&op, ids, &[DType::I32], "ids")?;
        let t = self.get(table)?;
        if t.shape.rank() != 2 {
            return Err(invalid(&op, format!("table must be 2-D, got {}", t.shape)));
        }
        let d = t.shape.cols();
        let n = self.get(ids)?.shape.count();
        Ok(self.push(op, vec![table, ids], DType::F32, Shape::from([n, d])))
    }

    pub fn mat_mul(&mut self, x: NodeId, w: NodeId) -> Result<NodeId, GraphError> {
        let op = Op::MatMul;
        self.expect_dtype(&op, x, &[DType::F32], "x")?;
        let (xs, ws) = (self.get(x)?.shape.clone(), self.get(w)?.shape.clone());
        if ws.rank() != 2 || xs.rank() == 0 || xs.cols() != ws.cols() {
            return Err(invalid(&op, format!("x {xs} and w {ws} do not share their last dimension")));
        }
        let mut out = xs.dims().to_vec();
        *out.last_mut().unwrap_or(&mut 0) = ws.dims()[0];
        Ok(self.push(op, vec![x, w], DType::F32, Shape::new(out)))
    }

    fn binary(&mut self, op: Op, a: NodeId, b: NodeId) -> Result<NodeId, GraphError> {
        self.expect_dtype(&op, a, &[DType::F32], "a")?;
        self.expect_dtype(&op, b, &[DType::F32], "b")?;
        let (sa, sb) = (self.get(a)?.shape.clone(), self.get(b)?.shape.clone());
        let broadcast_row = sb.count() == sa.cols() && sb.rows() == 1;
        if sa != sb && !broadcast_row {
            return Err(invalid(&op, format!("shapes {sa} and {sb} neither match nor broadcast a row")));
        }
        Ok(self.push(op, vec![a, b], DType::F32, sa))
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, GraphError> {
        self.binary(Op::Add, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, GraphError> {
        self.binary(Op::Mul, a, b)
    }

    pub fn swiglu(&mut self, gate: NodeId, up: NodeId) -> Result<NodeId, GraphError> {
        self.gated(Op::SwiGlu, gate, up)
    }

    pub fn geglu(&mut self, gate: NodeId, up: NodeId) -> Result<NodeId, GraphError> {
        self.gated(Op::GeGlu, gate, up)
    }

    fn gated(&mut self, op: Op, gate: NodeId, up: NodeId) -> Result<NodeId, GraphError> {
        self.expect_dtype(&op, gate, &[DType::F32], "gate")?;
        self.expect_dtype(&op, up, &[DType::F32], "up")?;
        let (sg, su) = (self.get(gate)?.shape.clone(), self.get(up)?.shape.clone());
        if sg != su {
            return Err(invalid(&op, format!("gate {sg} and up {su} differ")));
        }
        Ok(self.push(op, vec![gate, up], DType::F32, sg))
    }

    pub fn scale(&mut self, x: NodeId, factor: f32) -> Result<NodeId, GraphError> {
        let op = Op::Scale { factor };
        self.expect_dtype(&op, x, &[DType::F32], "x")?;
        let s = self.get(x)?.shape.clone();
        Ok(self.push(op, vec![x], DType::F32, s))
    }

    pub fn rms_norm(&mut self, x: NodeId, w: NodeId, eps: f32) -> Result<NodeId, GraphError> {
        let op = Op::RmsNorm { eps };
        self.expect_dtype(&op, x, &[DType::F32], "x")?;
        self.expect_dtype(&op, w, &[DType::F32], "weight")?;
        let (sx, sw) = (self.get(x)?.shape.clone(), self.get(w)?.shape.clone());
        if sw.count() != sx.cols() {
            return Err(invalid(&op, format!("weight {sw} does not match rows of {sx}")));
        }
        Ok(self.push(op, vec![x, w], DType::F32, sx))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &mut self,
        x: NodeId,
        pos: NodeId,
        head_dim: usize,
        rot_dims: usize,
        base: f32,
        freq_scale: f32,
        style: RopeStyle,
    ) -> Result<NodeId, GraphError> {
        let op = Op::Rope { head_dim, rot_dims, base, freq_scale, style };
        self.expect_dtype(&op, x, &[DType::F32], "x")?;
        self.expect_dtype(&op, pos, &[DType::I32], "pos")?;
        let sx = self.get(x)?.shape.clone();
        let n = self.get(pos)?.shape.count();
        if head_dim == 0
            || rot_dims == 0
            || rot_dims > head_dim
            || !rot_dims.is_multiple_of(2)
            || sx.cols() % head_dim != 0
        {
            return Err(invalid(&op, format!("head_dim {head_dim}, rot_dims {rot_dims} do not fit rows of {sx}")));
        }
        if sx.rows() != n {
            return Err(invalid(&op, format!("{} rows but {n} positions", sx.rows())));
        }
        Ok(self.push(op, vec![x, pos], DType::F32, sx))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        pos: NodeId,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        window: Option<usize>,
    ) -> Result<NodeId, GraphError> {
        let op = Op::Attention { n_heads, n_kv_heads, head_dim, scale, window };
        let (sq, _) = self.check_attention(&op, [q, k, v, pos], n_heads, n_kv_heads, head_dim, window)?;
        Ok(self.push(op, vec![q, k, v, pos], DType::F32, sq))
    }

    /// What `Attention` and `PagedAttention` both require of q, k, v and pos, and of the window;
    /// returns the shapes of q and k.
    fn check_attention(
        &self,
        op: &Op,
        [q, k, v, pos]: [NodeId; 4],
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        window: Option<usize>,
    ) -> Result<(Shape, Shape), GraphError> {
        self.expect_dtype(op, q, &[DType::F32], "q")?;
        self.expect_dtype(op, k, &[DType::F32, DType::F16], "k")?;
        self.expect_dtype(op, pos, &[DType::I32], "pos")?;
        let (sq, sk, sv) = (self.get(q)?.shape.clone(), self.get(k)?.shape.clone(), self.get(v)?.shape.clone());
        if self.dtype(k) != self.dtype(v) || sk != sv {
            return Err(invalid(op, format!("k {sk} and v {sv} must match in type and shape")));
        }
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || head_dim == 0 {
            return Err(invalid(op, format!("{n_heads} heads cannot share {n_kv_heads} KV heads")));
        }
        if sq.rank() != 2 || sq.cols() != n_heads * head_dim || sk.rank() != 2 || sk.cols() != n_kv_heads * head_dim {
            return Err(invalid(op, format!("q {sq} / k {sk} do not fit {n_heads}x{n_kv_heads} heads of {head_dim}")));
        }
        if self.get(pos)?.shape.count() != sq.rows() {
            return Err(invalid(op, "one position per query row is required"));
        }
        if window == Some(0) {
            return Err(invalid(op, "a window of 0 attends to nothing"));
        }
        Ok((sq, sk))
    }

    /// The destination of a store: a leaf or another store, F32 or F16. Returns its shape and type.
    fn store_target(&self, op: &Op, dst: NodeId) -> Result<(Shape, DType), GraphError> {
        let d = self.get(dst)?;
        if !d.op.is_store_target() {
            return Err(invalid(op, "destination must be a leaf or a store"));
        }
        if !matches!(d.dtype, DType::F32 | DType::F16) {
            return Err(invalid(op, format!("destination type {} is not F32 or F16", d.dtype)));
        }
        Ok((d.shape.clone(), d.dtype))
    }

    pub fn store(&mut self, src: NodeId, dst: NodeId, row: usize) -> Result<NodeId, GraphError> {
        let op = Op::Store { row };
        self.expect_dtype(&op, src, &[DType::F32], "src")?;
        let (sd, dd) = self.store_target(&op, dst)?;
        let ss = self.get(src)?.shape.clone();
        if sd.rank() != 2 || ss.cols() != sd.cols() || row.checked_add(ss.rows()).is_none_or(|end| end > sd.rows()) {
            return Err(invalid(&op, format!("{ss} does not fit into {sd} at row {row}")));
        }
        Ok(self.push(op, vec![src, dst], dd, sd))
    }

    pub fn store_rows(&mut self, src: NodeId, dst: NodeId, slots: NodeId) -> Result<NodeId, GraphError> {
        let op = Op::StoreRows;
        self.expect_dtype(&op, src, &[DType::F32], "src")?;
        self.expect_dtype(&op, slots, &[DType::I32], "slots")?;
        let (sd, dd) = self.store_target(&op, dst)?;
        let ss = self.get(src)?.shape.clone();
        if sd.rank() != 2 || ss.rank() != 2 || ss.cols() != sd.cols() {
            return Err(invalid(&op, format!("rows of {ss} do not fit into {sd}")));
        }
        if self.get(slots)?.shape.count() != ss.rows() {
            return Err(invalid(&op, format!("{} slots for {} rows", self.get(slots)?.shape.count(), ss.rows())));
        }
        Ok(self.push(op, vec![src, dst, slots], dd, sd))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        pos: NodeId,
        tables: NodeId,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        window: Option<usize>,
        block_size: usize,
    ) -> Result<NodeId, GraphError> {
        let op = Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, block_size };
        let (sq, sk) = self.check_attention(&op, [q, k, v, pos], n_heads, n_kv_heads, head_dim, window)?;
        self.expect_dtype(&op, tables, &[DType::I32], "tables")?;
        let st = self.get(tables)?.shape.clone();
        if st.rank() != 2 || st.rows() != sq.rows() || st.cols() == 0 {
            return Err(invalid(&op, format!("block tables {st} must be [{}, blocks]", sq.rows())));
        }
        if block_size == 0 || !sk.rows().is_multiple_of(block_size) {
            return Err(invalid(&op, format!("a cache of {} rows is not made of blocks of {block_size}", sk.rows())));
        }
        Ok(self.push(op, vec![q, k, v, pos, tables], DType::F32, sq))
    }

    pub fn slice_rows(&mut self, x: NodeId, start: usize, len: usize) -> Result<NodeId, GraphError> {
        let op = Op::SliceRows { start, len };
        let n = self.get(x)?;
        let dims = n.shape.dims().to_vec();
        if dims.is_empty() || start.checked_add(len).is_none_or(|end| end > dims[0]) {
            return Err(invalid(&op, format!("rows {start}..+{len} are outside {}", n.shape)));
        }
        let mut out = dims;
        out[0] = len;
        let dtype = n.dtype;
        Ok(self.push(op, vec![x], dtype, Shape::new(out)))
    }

    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> Result<NodeId, GraphError> {
        let shape = shape.into();
        let op = Op::Reshape;
        let n = self.get(x)?;
        if shape.checked_count().ok() != Some(n.shape.count()) || shape.cols() % n.dtype.block_len() != 0 {
            return Err(invalid(&op, format!("cannot view {} as {shape}", n.shape)));
        }
        let dtype = n.dtype;
        Ok(self.push(op, vec![x], dtype, shape))
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            writeln!(f, "%{i} = {} {:?} {} {} [{}]", n.op.name(), n.inputs, n.dtype, n.shape, n.label)?;
        }
        Ok(())
    }
}

impl GraphBuilder {
    /// Adds `op` over `inputs`, checked like the typed methods; `shape` is used by `Reshape` and
    /// `Leaf` (with `dtype`) only. Lets code that rewrites graphs copy nodes generically.
    pub fn add_op(&mut self, op: &Op, inputs: &[NodeId], dtype: DType, shape: &Shape) -> Result<NodeId, GraphError> {
        let arity = match op {
            Op::Leaf(_) => 0,
            Op::Scale { .. } | Op::SliceRows { .. } | Op::Reshape => 1,
            Op::Attention { .. } => 4,
            Op::PagedAttention { .. } => 5,
            Op::StoreRows => 3,
            _ => 2,
        };
        if inputs.len() != arity {
            return Err(invalid(op, format!("takes {arity} inputs, got {}", inputs.len())));
        }
        let i = inputs;
        match *op {
            Op::Leaf(t) => self.leaf(t, dtype, shape.clone()),
            Op::GetRows => self.get_rows(i[0], i[1]),
            Op::MatMul => self.mat_mul(i[0], i[1]),
            Op::Add => self.add(i[0], i[1]),
            Op::Mul => self.mul(i[0], i[1]),
            Op::Scale { factor } => self.scale(i[0], factor),
            Op::RmsNorm { eps } => self.rms_norm(i[0], i[1], eps),
            Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
                self.rope(i[0], i[1], head_dim, rot_dims, base, freq_scale, style)
            }
            Op::SwiGlu => self.swiglu(i[0], i[1]),
            Op::GeGlu => self.geglu(i[0], i[1]),
            Op::Attention { n_heads, n_kv_heads, head_dim, scale, window } => {
                self.attention(i[0], i[1], i[2], i[3], n_heads, n_kv_heads, head_dim, scale, window)
            }
            Op::Store { row } => self.store(i[0], i[1], row),
            Op::StoreRows => self.store_rows(i[0], i[1], i[2]),
            Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, block_size } => self.paged_attention(
                i[0], i[1], i[2], i[3], i[4], n_heads, n_kv_heads, head_dim, scale, window, block_size,
            ),
            Op::SliceRows { start, len } => self.slice_rows(i[0], start, len),
            Op::Reshape => self.reshape(i[0], shape.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(g: &mut GraphBuilder, dtype: DType, shape: &[usize]) -> NodeId {
        g.leaf(TensorRef { buffer: BufferId(0), offset: 0 }, dtype, shape).unwrap()
    }

    #[test]
    fn infers_shapes() {
        let mut g = GraphBuilder::new();
        let x = leaf(&mut g, DType::F32, &[3, 64]);
        let w = leaf(&mut g, DType::Q4_0, &[10, 64]);
        let y = g.mat_mul(x, w).unwrap();
        assert_eq!(g.shape(y).dims(), &[3, 10]);
        let s = g.slice_rows(y, 2, 1).unwrap();
        assert_eq!(g.shape(s).dims(), &[1, 10]);
    }

    #[test]
    fn rejects_mismatches() {
        let mut g = GraphBuilder::new();
        let x = leaf(&mut g, DType::F32, &[3, 64]);
        let w = leaf(&mut g, DType::F32, &[10, 32]);
        assert!(g.mat_mul(x, w).is_err());
        assert!(g.leaf(TensorRef { buffer: BufferId(0), offset: 0 }, DType::Q4_0, [2, 40]).is_err());
        let ids = leaf(&mut g, DType::F32, &[3]);
        assert!(g.get_rows(w, ids).is_err());
        let cache = leaf(&mut g, DType::F16, &[4, 64]);
        assert!(g.store(x, cache, 2).is_err(), "3 rows do not fit at row 2 of 4");
        assert!(g.store(x, cache, 1).is_ok());
        assert!(g.slice_rows(x, 2, usize::MAX).is_err());
    }

    #[test]
    fn storage_of_follows_views() {
        let mut g = GraphBuilder::new();
        let x = leaf(&mut g, DType::F32, &[4, 8]);
        let s = g.slice_rows(x, 2, 2).unwrap();
        let r = g.reshape(s, [16]).unwrap();
        assert_eq!(g.graph().storage_of(r), Some((x, 2 * 8 * 4)));
    }
}
