//! QDQ form of a translated model, the form NPU compilers (QNN, and ONNX Runtime's QDQ
//! transformers) take: every float value passes through a QuantizeLinear/DequantizeLinear pair
//! with a scale calibrated on real inputs, and weights become int8 with one scale per output row.
//!
//! Calibration ranges are the min and max of each value over calibration runs
//! ([`with_observers`] makes every float value an output so a runtime can report them). Values
//! that only move data (reshape, transpose, slice, gather) keep their input's parameters, as
//! compilers require; a scatter's data, updates and result share one range.

use std::collections::{HashMap, HashSet};

use tessera_quantize::RowCodes;

use crate::builder::attr_int;
use crate::proto::{data_type, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::OnnxError;

/// The range of each float value, by ONNX name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// How [`quantize_model`] quantizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QdqOptions {
    pub activations: Activations,
    /// Values computed by arithmetic (not data movement) whose calibrated range is wider than
    /// this stay float: one 16-bit scale over SmolLM2's residual stream (±13,000 on a few
    /// channels) or over the down projections feeding it steps by 0.1 to 0.4, erasing the
    /// ordinary values.
    pub float_above: Option<f32>,
    /// Attention's products of two activations (`MatMul`: scores and the weighted sum of
    /// values) and its softmax stay float: the HTP's 16 × 16-bit MatMul is off by about 1% of
    /// the scores' range against the same graph on ONNX Runtime's CPU kernels, and the softmax
    /// spreads that to 2 to 4% of its probabilities.
    pub float_attention: bool,
}

/// Activation width of a QDQ model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activations {
    /// uint8 (`qdq-int8`).
    U8,
    /// uint16 (`qdq-a16w8`).
    U16,
}

impl Activations {
    fn qmax(self) -> f32 {
        match self {
            Activations::U8 => 255.0,
            Activations::U16 => 65535.0,
        }
    }

    fn elem(self) -> i32 {
        match self {
            Activations::U8 => data_type::UINT8,
            Activations::U16 => data_type::UINT16,
        }
    }
}

/// Ops whose output holds some of their first input's values, unchanged.
fn moves_data(op: &str) -> bool {
    matches!(op, "Reshape" | "Transpose" | "Slice" | "Gather" | "Identity" | "Squeeze" | "Unsqueeze")
}

/// The element type of every value of `model` (inputs, initializers, node outputs).
pub fn value_types(model: &ModelProto) -> HashMap<String, i32> {
    let mut types = HashMap::new();
    let Some(g) = &model.graph else { return types };
    for i in &g.input {
        let t = i.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()).map_or(0, |t| t.elem_type);
        types.insert(i.name.clone(), t);
    }
    for init in &g.initializer {
        types.insert(init.name.clone(), init.data_type);
    }
    for n in &g.node {
        let first = |i: usize| n.input.get(i).and_then(|x| types.get(x)).copied().unwrap_or(data_type::FLOAT);
        let t = match n.op_type.as_str() {
            "Cast" => n.attribute.iter().find(|a| a.name == "to").map_or(data_type::FLOAT, |a| a.i as i32),
            "Equal" => 9,
            "MatMulInteger" => data_type::INT32,
            "Where" => first(1),
            "QuantizeLinear" => first(2),
            "DequantizeLinear" => data_type::FLOAT,
            op if moves_data(op) || matches!(op, "Concat" | "ScatterND") => first(0),
            _ => data_type::FLOAT,
        };
        for o in &n.output {
            types.insert(o.clone(), t);
        }
    }
    types
}

/// The float values whose ranges calibration must record: float inputs and node outputs.
pub fn float_values(model: &ModelProto) -> Vec<String> {
    let types = value_types(model);
    let Some(g) = &model.graph else { return vec![] };
    let inputs = g.input.iter().map(|i| &i.name);
    let outputs = g.node.iter().flat_map(|n| n.output.iter());
    inputs.chain(outputs).filter(|n| types.get(*n) == Some(&data_type::FLOAT)).cloned().collect()
}

/// `model` with every float node output also a graph output, for recording ranges.
pub fn with_observers(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    let types = value_types(model);
    if let Some(g) = &mut m.graph {
        let existing: std::collections::HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        let extra: Vec<ValueInfoProto> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter())
            .filter(|o| types.get(*o) == Some(&data_type::FLOAT) && !existing.contains(*o))
            .map(|o| ValueInfoProto {
                name: o.clone(),
                r#type: Some(crate::proto::TypeProto {
                    tensor_type: Some(crate::proto::TensorTypeProto { elem_type: data_type::FLOAT, shape: None }),
                }),
            })
            .collect();
        g.output.extend(extra);
    }
    m
}

/// Widens `ranges[name]` to cover `values`.
pub fn observe(ranges: &mut Ranges, name: &str, values: &[f32]) {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    if lo > hi {
        return;
    }
    let e = ranges.entry(name.to_string()).or_insert((lo, hi));
    e.0 = e.0.min(lo);
    e.1 = e.1.max(hi);
}

/// A byte offset and length in a blob.
type Span = (usize, usize);

/// Quantized weights shared by the graphs of one export.
#[derive(Default)]
pub struct QuantizedBlob {
    pub data: Vec<u8>,
    /// Source blob (offset, length) to the int8 codes' and the scales' (offset, length).
    placed: HashMap<Span, (Span, Span)>,
    /// Source blob (offset, length) to the fp16 copy's (offset, length), for weights left float.
    placed_f16: HashMap<Span, Span>,
    /// Source blob (offset, length) to the activation-width codes of a table read by `Gather`.
    placed_tables: HashMap<Span, Span>,
}

impl QuantizedBlob {
    /// Appends `bytes` at the next 64-byte boundary; returns where they went.
    fn append(&mut self, bytes: impl IntoIterator<Item = u8>) -> Span {
        let start = self.data.len().next_multiple_of(64);
        self.data.resize(start, 0);
        self.data.extend(bytes);
        (start, self.data.len() - start)
    }
}

/// The external-data entries of a tensor at `offset`, `length` in the weights file.
fn external_entries(offset: usize, length: usize) -> Vec<crate::proto::StringStringEntryProto> {
    let e = |k: &str, v: String| crate::proto::StringStringEntryProto { key: k.into(), value: v };
    vec![e("location", crate::WEIGHTS_FILE.into()), e("offset", offset.to_string()), e("length", length.to_string())]
}

/// An initializer of type `elem` whose bytes are `span` of the weights file.
fn external_tensor(name: &str, elem: i32, dims: Vec<i64>, (offset, length): Span) -> TensorProto {
    TensorProto {
        dims,
        data_type: elem,
        name: name.into(),
        external_data: external_entries(offset, length),
        data_location: 1,
        ..Default::default()
    }
}

/// The float values a QDQ model leaves float: results of arithmetic whose range is wider than
/// `float_above`, attention's products and softmax (with `float_attention`), and data movement
/// of those (they have no encoding to keep). Graph outputs and the values they copy are always
/// quantized: they are dequantized from their source's quantized value.
fn kept_float(g: &GraphProto, ranges: &Ranges, options: QdqOptions) -> HashSet<String> {
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let feeds_output: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Identity" && outputs.contains(n.output[0].as_str()))
        .map(|n| n.input[0].as_str())
        .collect();
    let wide = |name: &str| {
        let limit = options.float_above.unwrap_or(f32::INFINITY);
        ranges.get(name).is_some_and(|&(lo, hi)| hi - lo > limit)
    };
    let mut kept = HashSet::new();
    for n in &g.node {
        let op = n.op_type.as_str();
        let follows_float = moves_data(op) && n.input.first().is_some_and(|i| kept.contains(i));
        let attention = matches!(op, "Softmax" | "MatMul") && options.float_attention;
        for o in &n.output {
            let stays = follows_float || attention || (!moves_data(op) && wide(o));
            if stays && !outputs.contains(o.as_str()) && !feeds_output.contains(o.as_str()) {
                kept.insert(o.clone());
            }
        }
    }
    kept
}

fn scale_zero_point(lo: f32, hi: f32, act: Activations) -> (f32, u32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / act.qmax() } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, act.qmax()) as u32;
    (scale, zp)
}

struct Rewriter<'a> {
    act: Activations,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
    ranges: &'a Ranges,
    /// The dequantized name standing for each float value.
    dq: HashMap<String, String>,
    /// The quantized (Q output) name of each float value.
    q: HashMap<String, String>,
    /// For tables read by Gather, their per-tensor dequantized name.
    gather_dq: HashMap<String, String>,
}

impl Rewriter<'_> {
    fn constant(&mut self, hint: &str, elem: i32, raw: Vec<u8>, dims: Vec<i64>) -> String {
        self.next += 1;
        let name = format!("{hint}.qp{}", self.next);
        self.initializers.push(TensorProto {
            dims,
            data_type: elem,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    fn zero_point(&mut self, hint: &str, zp: u32) -> String {
        match self.act {
            Activations::U8 => self.constant(hint, data_type::UINT8, vec![zp as u8], vec![]),
            Activations::U16 => self.constant(hint, data_type::UINT16, (zp as u16).to_le_bytes().to_vec(), vec![]),
        }
    }

    /// Appends the Q/DQ pair of float value `name` with range `(lo, hi)`.
    fn pair(&mut self, name: &str, lo: f32, hi: f32) {
        let (scale, zp) = scale_zero_point(lo, hi, self.act);
        let s = self.constant(name, data_type::FLOAT, scale.to_le_bytes().to_vec(), vec![]);
        let z = self.zero_point(name, zp);
        let (q, dq) = (format!("{name}.q"), format!("{name}.dq"));
        self.nodes.push(node("QuantizeLinear", &[name, &s, &z], &q));
        self.nodes.push(node("DequantizeLinear", &[&q, &s, &z], &dq));
        self.q.insert(name.to_string(), q);
        self.dq.insert(name.to_string(), dq);
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.into(),
        ..Default::default()
    }
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Symmetric int8 per row: codes and one scale per row. Each row's scale is the one, among
/// its absolute maximum and a few clipped fractions of it, with the least squared error
/// (clipping a rare outlier buys precision for every other value of the row).
fn quantize_rows(values: &[f32], rows: usize) -> (Vec<u8>, Vec<f32>) {
    const CLIPS: [f32; 6] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.7];
    let cols = values.len() / rows.max(1);
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    let code = |v: f32, scale: f32| (v / scale).round().clamp(-127.0, 127.0);
    for row in values.chunks(cols.max(1)) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if amax > 0.0 {
            let error = |scale: f32| row.iter().map(|&v| (code(v, scale) * scale - v).powi(2)).sum::<f32>();
            CLIPS
                .iter()
                .map(|c| amax * c / 127.0)
                .min_by(|a, b| error(*a).total_cmp(&error(*b)))
                .unwrap_or(amax / 127.0)
        } else {
            1.0
        };
        scales.push(scale);
        codes.extend(row.iter().map(|&v| (code(v, scale) as i8) as u8));
    }
    (codes, scales)
}

fn external(t: &TensorProto) -> Option<(usize, usize)> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).and_then(|e| e.value.parse::<usize>().ok());
    (t.data_location == 1).then(|| Some((get("offset")?, get("length")?))).flatten()
}

/// The QDQ form of `model`, whose external weights live in `source` (the float blob); int8
/// weights and their scales go into `out`. `chosen` gives the codes already chosen for an
/// initializer (GPTQ), if any; the others are rounded to nearest.
pub fn quantize_model<'w>(
    model: &ModelProto,
    ranges: &Ranges,
    source: &[u8],
    out: &mut QuantizedBlob,
    options: QdqOptions,
    chosen: &dyn Fn(&str) -> Option<&'w RowCodes>,
) -> Result<ModelProto, OnnxError> {
    let act = options.activations;
    let g = model.graph.as_ref().ok_or_else(|| OnnxError::Manifest("model has no graph".into()))?;
    let types = value_types(model);
    let is_float = |n: &str| types.get(n) == Some(&data_type::FLOAT);
    let missing = |n: &str| OnnxError::Manifest(format!("no calibration range for {n}"));

    // Ranges as compilers want them: data movement keeps the input's, a scatter's operands and
    // result share the union.
    let mut r: Ranges = ranges.clone();
    for n in &g.node {
        if moves_data(&n.op_type) && is_float(&n.output[0]) {
            if let Some(&src) = n.input.first().and_then(|i| r.get(i)) {
                r.insert(n.output[0].clone(), src);
            }
        }
        if n.op_type == "ScatterND" {
            let parts = [&n.input[0], &n.input[2], &n.output[0]];
            let union =
                parts.iter().filter_map(|p| r.get(*p)).fold((0f32, 0f32), |(l, h), &(a, b)| (l.min(a), h.max(b)));
            for p in parts {
                r.insert(p.clone(), union);
            }
        }
    }

    let kept = kept_float(g, &r, options);
    // Weights of matmuls whose result stays float stay float too (fp16): an NPU runs such a
    // matmul in fp16 (Qualcomm's HTP refuses int8 weights with a float result).
    let float_weights: HashSet<&str> = g
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Gemm" | "MatMul") && kept.contains(&n.output[0]))
        .filter_map(|n| n.input.get(1).map(String::as_str))
        .collect();

    // Tables read by Gather: their rows come out under one scale, so they are quantized per
    // tensor at the activations' width (a per-row scale cannot pass through the gather).
    let gathered: HashSet<&str> =
        g.node.iter().filter(|n| n.op_type == "Gather").map(|n| n.input[0].as_str()).collect();
    let mut table_ranges: HashMap<String, (f32, f32)> = HashMap::new();
    let mut rw = Rewriter {
        act,
        nodes: Vec::new(),
        initializers: Vec::new(),
        next: 0,
        ranges: &r,
        dq: HashMap::new(),
        q: HashMap::new(),
        gather_dq: HashMap::new(),
    };
    // Weights and constants.
    for init in &g.initializer {
        if init.data_type != data_type::FLOAT {
            rw.initializers.push(init.clone());
            continue;
        }
        let dq = format!("{}.dq", init.name);
        if let Some((offset, len)) = external(init) {
            let raw = source.get(offset..offset + len).ok_or_else(|| missing(&init.name))?;
            let values = f32s(raw);
            if gathered.contains(init.name.as_str()) {
                let mut t = init.clone();
                t.name = format!("{}.table", init.name);
                t.external_data.clear();
                t.data_location = 0;
                quantize_constant(&mut rw, t, &values);
                // The table's codes go into the weights file, once for every graph of the export.
                let codes_name = format!("{}.table.codes", init.name);
                if let Some(codes) = rw.initializers.iter_mut().rev().find(|i| i.name == codes_name) {
                    let raw = std::mem::take(&mut codes.raw_data);
                    let (o, l) = match out.placed_tables.get(&(offset, len)) {
                        Some(&span) => span,
                        None => {
                            let span = out.append(raw);
                            *out.placed_tables.entry((offset, len)).or_insert(span)
                        }
                    };
                    codes.external_data = external_entries(o, l);
                    codes.data_location = 1;
                }
                let table_dq = rw.dq[&format!("{}.table", init.name)].clone();
                rw.gather_dq.insert(init.name.clone(), table_dq);
                let range = values.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                table_ranges.insert(init.name.clone(), range);
                if !g.node.iter().any(|n| n.op_type != "Gather" && n.input.contains(&init.name)) {
                    continue;
                }
            }
            if init.dims.len() == 2 && float_weights.contains(init.name.as_str()) {
                let span = match out.placed_f16.get(&(offset, len)) {
                    Some(&span) => span,
                    None => {
                        let span = out.append(values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()));
                        *out.placed_f16.entry((offset, len)).or_insert(span)
                    }
                };
                let f16 = format!("{}.f16", init.name);
                rw.initializers.push(external_tensor(&f16, data_type::FLOAT16, init.dims.clone(), span));
                let mut cast = node("Cast", &[&f16], &dq);
                cast.attribute.push(attr_int("to", data_type::FLOAT as i64));
                rw.nodes.push(cast);
                rw.dq.insert(init.name.clone(), dq);
                continue;
            }
            if init.dims.len() == 2 {
                let rows = init.dims[0] as usize;
                let ((co, cl), (so, sl)) = match out.placed.get(&(offset, len)) {
                    Some(&p) => p,
                    None => {
                        let (codes, scales) = match chosen(&init.name) {
                            Some(c) if c.codes.len() == values.len() && c.scales.len() == rows => {
                                (c.codes.iter().map(|&q| q as u8).collect(), c.scales.clone())
                            }
                            Some(c) => {
                                return Err(OnnxError::Manifest(format!(
                                    "{}: {} codes and {} scales chosen for a [{rows}, {}] weight",
                                    init.name,
                                    c.codes.len(),
                                    c.scales.len(),
                                    values.len() / rows.max(1)
                                )))
                            }
                            None => quantize_rows(&values, rows),
                        };
                        let p = (out.append(codes), out.append(scales.iter().flat_map(|s| s.to_le_bytes())));
                        out.placed.insert((offset, len), p);
                        p
                    }
                };
                let codes = format!("{}.int8", init.name);
                let scales = format!("{}.scale", init.name);
                rw.initializers.push(external_tensor(&codes, data_type::INT8, init.dims.clone(), (co, cl)));
                rw.initializers.push(external_tensor(&scales, data_type::FLOAT, vec![rows as i64], (so, sl)));
                let zp = rw.constant(&init.name, data_type::INT8, vec![0; rows], vec![rows as i64]);
                let mut n = node("DequantizeLinear", &[&codes, &scales, &zp], &dq);
                n.attribute.push(attr_int("axis", 0));
                rw.nodes.push(n);
                rw.dq.insert(init.name.clone(), dq);
                continue;
            }
            // Vectors (norm weights, biases): per tensor at the activations' width.
            let mut t = init.clone();
            t.external_data.clear();
            t.data_location = 0;
            t.raw_data = raw.to_vec();
            quantize_constant(&mut rw, t, &values);
            continue;
        }
        let values = f32s(&init.raw_data);
        quantize_constant(&mut rw, init.clone(), &values);
    }
    for input in &g.input {
        if is_float(&input.name) {
            let &(lo, hi) = rw.ranges.get(&input.name).ok_or_else(|| missing(&input.name))?;
            rw.pair(&input.name, lo, hi);
        }
    }
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    for n in &g.node {
        if n.op_type == "Identity" && outputs.contains(n.output[0].as_str()) {
            // A graph output: dequantized straight from its source's quantized value.
            let q = rw.q.get(&n.input[0]).cloned().ok_or_else(|| missing(&n.input[0]))?;
            let last_dq = rw.nodes.iter().rev().find(|x| x.op_type == "DequantizeLinear" && x.input[0] == q).cloned();
            let Some(dq) = last_dq else { return Err(missing(&n.input[0])) };
            rw.nodes.push(node("DequantizeLinear", &[&q, &dq.input[1], &dq.input[2]], &n.output[0]));
            continue;
        }
        // A matmul with int8 weights is compiled as one quantized unit: its activation comes in
        // quantized even when the value it reads was left float.
        let int8_weight = n.input.get(1).is_some_and(|w| rw.dq.contains_key(w) && !float_weights.contains(w.as_str()));
        if matches!(n.op_type.as_str(), "Gemm" | "MatMul") && int8_weight && kept.contains(&n.input[0]) {
            let x = &n.input[0];
            if !rw.dq.contains_key(x) {
                let &(lo, hi) = rw.ranges.get(x).ok_or_else(|| missing(x))?;
                rw.pair(x, lo, hi);
            }
        }
        let mut n = n.clone();
        let gather = n.op_type == "Gather";
        for (k, i) in n.input.iter_mut().enumerate() {
            if let Some(d) = rw.gather_dq.get(i.as_str()).filter(|_| gather && k == 0) {
                *i = d.clone();
            } else if let Some(d) = rw.dq.get(i.as_str()) {
                *i = d.clone();
            }
        }
        let outs = n.output.clone();
        // A gathered row keeps its table's encoding.
        let table =
            if gather { n.input.first().and_then(|t| table_ranges.get(t.trim_end_matches(".table.dq"))) } else { None };
        let table = table.copied();
        rw.nodes.push(n);
        for o in outs {
            if is_float(&o) && !kept.contains(&o) {
                let (lo, hi) = match table {
                    Some(r) => r,
                    None => *rw.ranges.get(&o).ok_or_else(|| missing(&o))?,
                };
                rw.pair(&o, lo, hi);
            }
        }
    }
    let mut m = model.clone();
    m.graph = Some(GraphProto {
        node: rw.nodes,
        name: g.name.clone(),
        initializer: rw.initializers,
        input: g.input.clone(),
        output: g.output.clone(),
    });
    Ok(m)
}

/// A float constant as its quantized codes and a DequantizeLinear, per tensor.
fn quantize_constant(rw: &mut Rewriter<'_>, t: TensorProto, values: &[f32]) {
    let (lo, hi) = values.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let (scale, zp) = scale_zero_point(lo, hi, rw.act);
    let codes: Vec<u8> = values
        .iter()
        .flat_map(|&v| {
            let q = ((v / scale).round() + zp as f32).clamp(0.0, rw.act.qmax()) as u32;
            match rw.act {
                Activations::U8 => vec![q as u8],
                Activations::U16 => (q as u16).to_le_bytes().to_vec(),
            }
        })
        .collect();
    let name = t.name.clone();
    let codes_name = format!("{name}.codes");
    rw.initializers.push(TensorProto {
        dims: t.dims.clone(),
        data_type: rw.act.elem(),
        name: codes_name.clone(),
        raw_data: codes,
        ..Default::default()
    });
    let s = rw.constant(&name, data_type::FLOAT, scale.to_le_bytes().to_vec(), vec![]);
    let z = rw.zero_point(&name, zp);
    let dq = format!("{name}.dq");
    rw.nodes.push(node("DequantizeLinear", &[&codes_name, &s, &z], &dq));
    rw.dq.insert(name, dq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_and_the_range_is_covered() {
        for (lo, hi) in [(-3.0f32, 5.0f32), (0.5, 2.0), (-7.0, -1.0), (0.0, 0.0)] {
            for act in [Activations::U8, Activations::U16] {
                let (scale, zp) = scale_zero_point(lo, hi, act);
                // Zero maps to the zero point: padding and masked rows stay exactly zero.
                assert_eq!(((0.0 / scale).round() + zp as f32) as u32, zp);
                let q = |v: f32| ((v / scale).round() + zp as f32).clamp(0.0, act.qmax());
                for v in [lo, hi] {
                    assert!(((q(v) - zp as f32) * scale - v).abs() <= scale * 0.5 + 1e-6, "{v} in {lo}..{hi}");
                }
            }
        }
    }

    #[test]
    fn row_scales_never_do_worse_than_the_row_maximum() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // Rows of small values with one outlier each, and a zero row.
        let (rows, cols) = (5, 64);
        let mut values: Vec<f32> = (0..rows * cols).map(|_| next() * 0.1).collect();
        for r in 0..rows - 1 {
            values[r * cols + r] = 3.0;
        }
        values[(rows - 1) * cols..].fill(0.0);
        let (codes, scales) = quantize_rows(&values, rows);
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let error = |scale: f32, code: &dyn Fn(usize) -> f32| {
                row.iter().enumerate().map(|(i, v)| (code(i) * scale - v).powi(2)).sum::<f32>()
            };
            let chosen = error(scales[r], &|i| codes[r * cols + i] as i8 as f32);
            let plain = amax / 127.0;
            let by_max = error(plain.max(f32::MIN_POSITIVE), &|i| (row[i] / plain).round().clamp(-127.0, 127.0));
            if amax == 0.0 {
                assert_eq!(chosen, 0.0);
            } else {
                assert!(chosen <= by_max * (1.0 + 1e-6), "row {r}: {chosen} > {by_max}");
            }
        }
    }

    /// `x → Gemm(W1) → y → Gemm(W2) → out`, with `y`'s range wide; W1 and W2 live in a float
    /// blob, `x` and `out` are the graph's input and output.
    fn two_matmuls() -> (ModelProto, Vec<u8>, Ranges) {
        use crate::builder::{attr_int, value_info, Builder};
        let mut b = Builder::default();
        let mut blob = Vec::new();
        let mut weight = |b: &mut Builder, name: &str, scale: f32| {
            let offset = blob.len();
            blob.extend((0..12).flat_map(|i| ((i as f32 - 5.5) * scale).to_le_bytes()));
            b.initializers.push(TensorProto {
                dims: vec![3, 4],
                data_type: data_type::FLOAT,
                name: name.into(),
                external_data: external_entries(offset, 48),
                data_location: 1,
                ..Default::default()
            });
        };
        weight(&mut b, "w1", 100.0);
        weight(&mut b, "w2", 0.01);
        let y = b.op("Gemm", &["x", "w1"], vec![attr_int("transB", 1)]);
        let y3 = b.reshape(&y, &[2, 3]);
        let z = b.op("Gemm", &[&y3, "w2"], vec![]);
        let out = b.op("Identity", &[&z], vec![]);
        let graph = GraphProto {
            node: b.nodes,
            name: "g".into(),
            initializer: b.initializers,
            input: vec![value_info("x", data_type::FLOAT, &[2, 4])],
            output: vec![value_info(&out, data_type::FLOAT, &[2, 4])],
        };
        let model = ModelProto { graph: Some(graph), ..Default::default() };
        let ranges: Ranges = [
            ("x", (-1.0, 1.0)),
            (y.as_str(), (-900.0, 900.0)),
            (y3.as_str(), (-900.0, 900.0)),
            (z.as_str(), (-2.0, 2.0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        (model, blob, ranges)
    }

    #[test]
    fn a_matmul_with_a_wide_result_keeps_fp16_weights_and_the_next_one_reads_a_quantized_input() {
        let (model, blob, ranges) = two_matmuls();
        let mut out = QuantizedBlob::default();
        let options = QdqOptions { activations: Activations::U16, float_above: Some(100.0), float_attention: true };
        let q = quantize_model(&model, &ranges, &blob, &mut out, options, &|_| None).unwrap();
        let g = q.graph.unwrap();
        let init = |name: &str| g.initializer.iter().find(|i| i.name == name);
        // W1's result is wide: W1 stays float (fp16 behind a Cast), its result unquantized.
        assert_eq!(init("w1.f16").map(|i| i.data_type), Some(data_type::FLOAT16));
        assert!(g.node.iter().any(|n| n.op_type == "Cast" && n.input[0] == "w1.f16"));
        let first = g.node.iter().find(|n| n.op_type == "Gemm").unwrap();
        assert!(!g.node.iter().any(|n| n.op_type == "QuantizeLinear" && n.input[0] == first.output[0]));
        // The reshape of that float value would be float too, but the second matmul has int8
        // weights, so it reads a quantized copy.
        let second = g.node.iter().filter(|n| n.op_type == "Gemm").nth(1).unwrap();
        assert!(second.input[0].ends_with(".dq"), "{:?}", second.input);
        let dq = g.node.iter().find(|n| n.output[0] == second.input[0]).unwrap();
        assert_eq!(dq.op_type, "DequantizeLinear");
        // fp16 copy of W1 in the blob: 12 values, 2 bytes each.
        let f16 = init("w1.f16").unwrap();
        let offset: usize = f16.external_data.iter().find(|e| e.key == "offset").unwrap().value.parse().unwrap();
        let first_value = half::f16::from_le_bytes([out.data[offset], out.data[offset + 1]]).to_f32();
        assert_eq!(first_value, -550.0);
    }

    #[test]
    fn chosen_codes_replace_rounding_and_must_fit_the_weight() {
        let (model, blob, ranges) = two_matmuls();
        let options = QdqOptions { activations: Activations::U16, float_above: None, float_attention: true };
        let chosen = RowCodes { codes: (0..12).map(|i| i as i8 - 6).collect(), scales: vec![0.5, 1.0, 2.0] };
        let mut out = QuantizedBlob::default();
        let pick = |name: &str| (name == "w1").then_some(&chosen);
        let q = quantize_model(&model, &ranges, &blob, &mut out, options, &pick).unwrap();
        let g = q.graph.unwrap();
        let codes = g.initializer.iter().find(|i| i.name == "w1.int8").unwrap();
        let offset: usize = codes.external_data.iter().find(|e| e.key == "offset").unwrap().value.parse().unwrap();
        let stored: Vec<i8> = out.data[offset..offset + 12].iter().map(|&b| b as i8).collect();
        assert_eq!(stored, chosen.codes);

        let wrong = RowCodes { codes: vec![0; 8], scales: vec![1.0; 2] };
        let pick = |name: &str| (name == "w1").then_some(&wrong);
        let err = quantize_model(&model, &ranges, &blob, &mut QuantizedBlob::default(), options, &pick).unwrap_err();
        assert!(err.to_string().contains("8 codes and 2 scales chosen for a [3, 4] weight"), "{err}");
    }
}
