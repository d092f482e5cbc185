//! QDQ form of a translated model, the form NPU compilers (QNN, and ONNX Runtime's QDQ
//! transformers) take: every float value passes through a QuantizeLinear/DequantizeLinear pair
//! with a scale calibrated on real inputs, and weights become int8 with one scale per output row.
//!
//! Calibration ranges are the min and max of each value over calibration runs
//! ([`with_observers`] makes every float value an output so a runtime can report them). Values
//! that only move data (reshape, transpose, slice, gather) keep their input's parameters, as
//! compilers require; a scatter's data, updates and result share one range.

use std::collections::HashMap;

use crate::proto::{data_type, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::OnnxError;

/// The range of each float value, by ONNX name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// How [`quantize_model`] quantizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QdqOptions {
    pub activations: Activations,
    /// Residual sums (`Add` outputs) whose calibrated range is wider than this stay float.
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
/// weights and their scales go into `out`.
pub fn quantize_model(
    model: &ModelProto,
    ranges: &Ranges,
    source: &[u8],
    out: &mut QuantizedBlob,
    options: QdqOptions,
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

    // Tables read by Gather: their rows come out under one scale, so they are quantized per
    // tensor at the activations' width (a per-row scale cannot pass through the gather).
    let gathered: std::collections::HashSet<&str> =
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
                let table_dq = rw.dq[&format!("{}.table", init.name)].clone();
                rw.gather_dq.insert(init.name.clone(), table_dq);
                let range = values.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                table_ranges.insert(init.name.clone(), range);
                if !g.node.iter().any(|n| n.op_type != "Gather" && n.input.contains(&init.name)) {
                    continue;
                }
            }
            if init.dims.len() == 2 {
                let rows = init.dims[0] as usize;
                let ((co, cl), (so, sl)) = match out.placed.get(&(offset, len)) {
                    Some(&p) => p,
                    None => {
                        let (codes, scales) = quantize_rows(&values, rows);
                        let co = out.data.len().next_multiple_of(64);
                        out.data.resize(co, 0);
                        out.data.extend(&codes);
                        let so = out.data.len().next_multiple_of(64);
                        out.data.resize(so, 0);
                        out.data.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
                        let p = ((co, codes.len()), (so, scales.len() * 4));
                        out.placed.insert((offset, len), p);
                        p
                    }
                };
                let ext = |o: usize, l: usize| {
                    let e = |k: &str, v: String| crate::proto::StringStringEntryProto { key: k.into(), value: v };
                    vec![
                        e("location", crate::WEIGHTS_FILE.into()),
                        e("offset", o.to_string()),
                        e("length", l.to_string()),
                    ]
                };
                let codes = format!("{}.int8", init.name);
                let scales = format!("{}.scale", init.name);
                rw.initializers.push(TensorProto {
                    dims: init.dims.clone(),
                    data_type: data_type::INT8,
                    name: codes.clone(),
                    external_data: ext(co, cl),
                    data_location: 1,
                    ..Default::default()
                });
                rw.initializers.push(TensorProto {
                    dims: vec![rows as i64],
                    data_type: data_type::FLOAT,
                    name: scales.clone(),
                    external_data: ext(so, sl),
                    data_location: 1,
                    ..Default::default()
                });
                let zp = rw.constant(&init.name, data_type::INT8, vec![0; rows], vec![rows as i64]);
                let mut n = node("DequantizeLinear", &[&codes, &scales, &zp], &dq);
                n.attribute.push(crate::proto::AttributeProto {
                    name: "axis".into(),
                    r#type: crate::proto::attribute_type::INT,
                    i: 0,
                    ..Default::default()
                });
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
    let outputs: std::collections::HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    for n in &g.node {
        if n.op_type == "Identity" && outputs.contains(n.output[0].as_str()) {
            // A graph output: dequantized straight from its source's quantized value.
            let q = rw.q.get(&n.input[0]).cloned().ok_or_else(|| missing(&n.input[0]))?;
            let last_dq = rw.nodes.iter().rev().find(|x| x.op_type == "DequantizeLinear" && x.input[0] == q).cloned();
            let Some(dq) = last_dq else { return Err(missing(&n.input[0])) };
            rw.nodes.push(node("DequantizeLinear", &[&q, &dq.input[1], &dq.input[2]], &n.output[0]));
            continue;
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
        let op = rw.nodes.last().map(|n| n.op_type.clone()).unwrap_or_default();
        for o in outs {
            let wide = |&(lo, hi): &(f32, f32)| options.float_above.is_some_and(|limit| hi - lo > limit);
            let wide_sum = op == "Add" && rw.ranges.get(&o).is_some_and(wide);
            let attention = matches!(op.as_str(), "Softmax" | "MatMul") && options.float_attention;
            if (wide_sum || attention) && !outputs.contains(o.as_str()) {
                continue;
            }
            if is_float(&o) {
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
}
