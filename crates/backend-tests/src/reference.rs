//! The scalar reference: every [`Op`] evaluated naively, straight from its doc comment, with f64
//! arithmetic inside each op and f32 values between ops (all activations are F32). Stored
//! weights are read through `tessera_quant::dequantize`, which is bit-exact with ggml. This is the
//! op semantics in code; backends are compared against it.

use std::collections::HashMap;

use half::f16;
use tessera_backend::{BufferId, Graph, NodeId, Op, RopeStyle};
use tessera_core::DType;

/// Host copies of buffers, keyed by the ids the backend under test issued.
#[derive(Default, Clone, Debug)]
pub struct HostMemory {
    buffers: HashMap<BufferId, Vec<u8>>,
}

impl HostMemory {
    /// Sets the contents of buffer `id`.
    pub fn insert(&mut self, id: BufferId, bytes: Vec<u8>) {
        self.buffers.insert(id, bytes);
    }

    /// The contents of buffer `id`.
    pub fn get(&self, id: BufferId) -> Option<&[u8]> {
        self.buffers.get(&id).map(|b| b.as_slice())
    }

    /// The contents of buffer `id`, writable.
    pub fn get_mut(&mut self, id: BufferId) -> Option<&mut Vec<u8>> {
        self.buffers.get_mut(&id)
    }

    /// Forgets buffer `id`, returning its contents.
    pub fn remove(&mut self, id: BufferId) -> Option<Vec<u8>> {
        self.buffers.remove(&id)
    }
}

/// Why the reference rejected a graph (the same inputs a backend must reject).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node {node} ({op}): {message}")]
pub struct ReferenceError {
    pub node: NodeId,
    pub op: &'static str,
    pub message: String,
}

/// A node's value: f32 for everything but I32 leaves (and views of them).
#[derive(Clone, Debug, PartialEq)]
pub enum RefValue {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl RefValue {
    fn f32(&self) -> Result<&[f32], String> {
        match self {
            RefValue::F32(v) => Ok(v),
            RefValue::I32(_) => Err("expected f32 values, got i32".into()),
        }
    }

    fn i32(&self) -> Result<&[i32], String> {
        match self {
            RefValue::I32(v) => Ok(v),
            RefValue::F32(_) => Err("expected i32 values, got f32".into()),
        }
    }
}

/// Decodes `bytes` of `dtype` into values (dequantizing block types).
pub fn decode(dtype: DType, bytes: &[u8]) -> Result<RefValue, String> {
    if dtype == DType::I32 {
        return Ok(RefValue::I32(
            bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ));
    }
    tessera_quant::dequantize_to_vec(dtype, bytes).map(RefValue::F32).map_err(|e| e.to_string())
}

/// Evaluates every node of `graph` in order, applying `Store`s to `mem`; returns each node's value.
pub fn evaluate(graph: &Graph, mem: &mut HostMemory) -> Result<Vec<RefValue>, ReferenceError> {
    let mut values: Vec<RefValue> = Vec::with_capacity(graph.len());
    for (id, node) in graph.nodes().iter().enumerate() {
        let fail = |message: String| ReferenceError { node: id, op: node.op.name(), message };
        let input = |i: usize| &values[node.inputs[i]];
        let value = match &node.op {
            Op::Leaf(t) => {
                let len = node.dtype.bytes_for(node.shape.count()).map_err(|e| fail(e.to_string()))?;
                let buf = mem.get(t.buffer).ok_or_else(|| fail(format!("unknown buffer {:?}", t.buffer)))?;
                let bytes = t
                    .offset
                    .checked_add(len)
                    .and_then(|end| buf.get(t.offset..end))
                    .ok_or_else(|| fail("leaf outside its buffer".into()))?;
                decode(node.dtype, bytes).map_err(fail)?
            }
            Op::Reshape => input(0).clone(),
            Op::SliceRows { start, len } => {
                let src = graph.node(node.inputs[0]);
                let row = src.shape.count() / src.shape.dims()[0].max(1);
                let range = start * row..(start + len) * row;
                match input(0) {
                    RefValue::F32(v) => RefValue::F32(v[range].to_vec()),
                    RefValue::I32(v) => RefValue::I32(v[range].to_vec()),
                }
            }
            Op::Store { .. } | Op::StoreRows => {
                let src = input(0).f32().map_err(fail)?;
                let rows: Vec<usize> = match node.op {
                    Op::Store { row } => (row..row + src.len() / node.shape.cols().max(1)).collect(),
                    _ => slots(input(2).i32().map_err(fail)?, node.shape.rows()).map_err(fail)?,
                };
                store(graph, id, &rows, src, mem).map_err(fail)?;
                let target = store_leaf(graph, id);
                let Op::Leaf(t) = graph.node(target).op else { return Err(fail("no leaf".into())) };
                let len = node.dtype.bytes_for(node.shape.count()).map_err(|e| fail(e.to_string()))?;
                let buf = mem.get(t.buffer).ok_or_else(|| fail("unknown buffer".into()))?;
                decode(node.dtype, &buf[t.offset..t.offset + len]).map_err(fail)?
            }
            op => {
                let f = |i: usize| input(i).f32();
                RefValue::F32(compute(graph, id, op, &f, &|i| input(i).i32()).map_err(fail)?)
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// The leaf a store (chain) ultimately writes.
fn store_leaf(graph: &Graph, mut id: NodeId) -> NodeId {
    while graph.node(id).op.is_store() {
        id = graph.node(id).inputs[1];
    }
    id
}

/// `StoreRows` slots as destination rows: each in `0..rows`, no two equal.
fn slots(slots: &[i32], rows: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; rows];
    slots
        .iter()
        .map(|&s| {
            if s < 0 || s as usize >= rows {
                return Err(format!("slot {s} is outside 0..{rows}"));
            }
            if std::mem::replace(&mut seen[s as usize], true) {
                return Err(format!("slot {s} is written twice"));
            }
            Ok(s as usize)
        })
        .collect()
}

/// Writes row `i` of `src` into row `rows[i]` of the store's destination, in its type.
fn store(graph: &Graph, id: NodeId, rows: &[usize], src: &[f32], mem: &mut HostMemory) -> Result<(), String> {
    let node = graph.node(id);
    let Op::Leaf(t) = graph.node(store_leaf(graph, id)).op else { return Err("destination is not a leaf".into()) };
    let buf = mem.get_mut(t.buffer).ok_or("unknown destination buffer")?;
    let size = if node.dtype == DType::F16 { 2 } else { 4 };
    let cols = node.shape.cols();
    for (&row, values) in rows.iter().zip(src.chunks(cols.max(1))) {
        let start = t.offset + row * cols * size;
        let out = buf.get_mut(start..start + values.len() * size).ok_or("store outside its buffer")?;
        for (o, v) in out.chunks_exact_mut(size).zip(values) {
            match node.dtype {
                DType::F16 => o.copy_from_slice(&f16::from_f32(*v).to_le_bytes()),
                _ => o.copy_from_slice(&v.to_le_bytes()),
            }
        }
    }
    Ok(())
}

type Input<'a> = dyn Fn(usize) -> Result<&'a [f32], String> + 'a;
type IdInput<'a> = dyn Fn(usize) -> Result<&'a [i32], String> + 'a;

fn compute<'a>(graph: &Graph, id: NodeId, op: &Op, f: &Input<'a>, ids: &IdInput<'a>) -> Result<Vec<f32>, String> {
    let node = graph.node(id);
    let cols = node.shape.cols();
    let elementwise = |g: &dyn Fn(f64, f64) -> f64| -> Result<Vec<f32>, String> {
        let (a, b) = (f(0)?, f(1)?);
        Ok(a.iter().enumerate().map(|(i, &x)| g(x as f64, b[i % b.len()] as f64) as f32).collect())
    };
    match *op {
        Op::Add => elementwise(&|a, b| a + b),
        Op::Mul => elementwise(&|a, b| a * b),
        Op::Scale { factor } => Ok(f(0)?.iter().map(|&x| (x as f64 * factor as f64) as f32).collect()),
        Op::SwiGlu => elementwise(&|g, u| g / (1.0 + (-g).exp()) * u),
        Op::GeGlu => elementwise(&|g, u| gelu_tanh(g) * u),
        Op::RmsNorm { eps } => {
            let (x, w) = (f(0)?, f(1)?);
            let mut out = Vec::with_capacity(x.len());
            for row in x.chunks(cols.max(1)) {
                let mean = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cols as f64;
                let inv = 1.0 / (mean + eps as f64).sqrt();
                out.extend(row.iter().zip(w).map(|(&v, &w)| (v as f64 * inv * w as f64) as f32));
            }
            Ok(out)
        }
        Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
            let (x, pos) = (f(0)?, ids(1)?);
            let mut out = x.to_vec();
            for (row, &p) in out.chunks_mut(cols.max(1)).zip(pos) {
                for head in row.chunks_mut(head_dim) {
                    for i in 0..rot_dims / 2 {
                        let angle =
                            p as f64 * freq_scale as f64 * (base as f64).powf(-2.0 * i as f64 / rot_dims as f64);
                        let (a, b) = match style {
                            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                            RopeStyle::Halves => (i, i + rot_dims / 2),
                        };
                        let (x0, x1) = (head[a] as f64, head[b] as f64);
                        head[a] = (x0 * angle.cos() - x1 * angle.sin()) as f32;
                        head[b] = (x0 * angle.sin() + x1 * angle.cos()) as f32;
                    }
                }
            }
            Ok(out)
        }
        Op::MatMul => {
            let (x, w) = (f(0)?, f(1)?);
            let wnode = graph.node(graph.node(id).inputs[1]);
            let k = wnode.shape.cols();
            let m = w.len() / k.max(1);
            let mut out = Vec::with_capacity(x.len() / k.max(1) * m);
            for xr in x.chunks(k.max(1)) {
                if wnode.dtype == DType::I8 {
                    // Per-row int8 activations; products of integers sum exactly in f64.
                    let mut q = vec![0i8; xr.len()];
                    let d = tessera_quant::int8::quantize_activation_row(xr, &mut q);
                    for wr in w.chunks(k.max(1)) {
                        let sum: f64 = q.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                        out.push((d as f64 * sum) as f32);
                    }
                    continue;
                }
                for wr in w.chunks(k.max(1)) {
                    out.push(xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32);
                }
            }
            Ok(out)
        }
        Op::GetRows => {
            let (table, rows) = (f(0)?, ids(1)?);
            let v = graph.node(graph.node(id).inputs[0]).shape.dims()[0];
            let mut out = Vec::with_capacity(rows.len() * cols);
            for &r in rows {
                if r < 0 || r as usize >= v {
                    return Err(format!("row id {r} is outside 0..{v}"));
                }
                out.extend_from_slice(&table[r as usize * cols..(r as usize + 1) * cols]);
            }
            Ok(out)
        }
        Op::Attention { n_heads, n_kv_heads, head_dim, scale, window } => {
            let (q, k, v, pos) = (f(0)?, f(1)?, f(2)?, ids(3)?);
            let c = graph.node(graph.node(id).inputs[1]).shape.dims()[0];
            let row = |_: usize, j: usize| {
                if j < c {
                    Ok(j)
                } else {
                    Err(format!("position {j} is outside the cache of {c} rows"))
                }
            };
            attention(q, k, v, pos, &row, (n_heads, n_kv_heads, head_dim), scale, window)
        }
        Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, block_size: bs } => {
            let (q, k, v, pos, tables) = (f(0)?, f(1)?, f(2)?, ids(3)?, ids(4)?);
            let cache_blocks = graph.node(graph.node(id).inputs[1]).shape.dims()[0] / bs;
            let width = graph.node(graph.node(id).inputs[4]).shape.cols();
            // Only the blocks a row reads are looked up, so only they must be valid.
            let row = |n: usize, j: usize| {
                let Some(&block) = tables[n * width..][..width].get(j / bs) else {
                    return Err(format!("position {j} is beyond the {width} blocks of {bs} in row {n}'s table"));
                };
                if block < 0 || block as usize >= cache_blocks {
                    return Err(format!("block {block} in row {n}'s table is outside the {cache_blocks} of the cache"));
                }
                Ok(block as usize * bs + j % bs)
            };
            attention(q, k, v, pos, &row, (n_heads, n_kv_heads, head_dim), scale, window)
        }
        Op::Leaf(_) | Op::Reshape | Op::SliceRows { .. } | Op::Store { .. } | Op::StoreRows => {
            Err("not computed".into())
        }
    }
}

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// The cache row holding position `j` for query row `n`, or why there is none.
type CacheRow<'a> = dyn Fn(usize, usize) -> Result<usize, String> + 'a;

/// Attention and PagedAttention: they differ only in where position `j` of row `n` is cached.
#[allow(clippy::too_many_arguments)]
fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[i32],
    cache_row: &CacheRow,
    (heads, kv_heads, hd): (usize, usize, usize),
    scale: f32,
    window: Option<usize>,
) -> Result<Vec<f32>, String> {
    let (width, kv_width, group) = (heads * hd, kv_heads * hd, heads / kv_heads);
    let mut out = vec![0f32; pos.len() * width];
    for (n, &p) in pos.iter().enumerate() {
        if p < 0 {
            return Err(format!("position {p} is negative"));
        }
        let p = p as usize;
        // Positions j <= p with p - j < window, as the cache rows holding them.
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        let visible: Vec<usize> = (first..=p).map(|j| cache_row(n, j)).collect::<Result<_, _>>()?;
        for h in 0..heads {
            let qrow = &q[n * width + h * hd..][..hd];
            let off = (h / group) * hd;
            let scores: Vec<f64> = visible
                .iter()
                .map(|&j| {
                    let krow = &k[j * kv_width + off..][..hd];
                    scale as f64 * qrow.iter().zip(krow).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for d in 0..hd {
                let acc: f64 = visible.iter().zip(&weights).map(|(&j, w)| w * v[j * kv_width + off + d] as f64).sum();
                out[n * width + h * hd + d] = (acc / total) as f32;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tessera_backend::{GraphBuilder, TensorRef};

    use super::*;

    /// A graph builder plus host buffers, one per leaf.
    struct Tiny {
        g: GraphBuilder,
        mem: HostMemory,
        next: u64,
    }

    impl Tiny {
        fn new() -> Tiny {
            Tiny { g: GraphBuilder::new(), mem: HostMemory::default(), next: 0 }
        }

        fn leaf(&mut self, dtype: DType, shape: &[usize], bytes: Vec<u8>) -> NodeId {
            self.next += 1;
            self.mem.insert(BufferId(self.next), bytes);
            self.g.leaf(TensorRef { buffer: BufferId(self.next), offset: 0 }, dtype, shape).unwrap()
        }

        fn f32(&mut self, shape: &[usize], v: &[f32]) -> NodeId {
            self.leaf(DType::F32, shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }

        fn ids(&mut self, v: &[i32]) -> NodeId {
            self.leaf(DType::I32, &[v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }

        fn eval(&mut self, node: NodeId) -> Vec<f32> {
            let values = evaluate(self.g.graph(), &mut self.mem).unwrap();
            match &values[node] {
                RefValue::F32(v) => v.clone(),
                RefValue::I32(_) => panic!("i32 result"),
            }
        }

        fn eval_err(&mut self) -> ReferenceError {
            evaluate(self.g.graph(), &mut self.mem).unwrap_err()
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn mat_mul_and_broadcasting() {
        let mut t = Tiny::new();
        let x = t.f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w = t.f32(&[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]);
        let y = t.g.mat_mul(x, w).unwrap();
        let b = t.f32(&[2], &[10.0, 20.0]);
        let z = t.g.add(y, b).unwrap();
        let m = t.g.mul(z, b).unwrap();
        let s = t.g.scale(m, 0.5).unwrap();
        close(&t.eval(y), &[-2.0, 3.0, -2.0, 7.5]);
        close(&t.eval(z), &[8.0, 23.0, 8.0, 27.5]);
        close(&t.eval(s), &[40.0, 230.0, 40.0, 275.0]);
    }

    #[test]
    fn quantized_weights_are_dequantized() {
        // One Q8_0 block: d = 0.5, values 0..31 as i8 -> 0, 0.5, 1, ...
        let mut block = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..32).map(|i| i as u8));
        let mut t = Tiny::new();
        let x = t.f32(&[1, 32], &[1.0; 32]);
        let w = t.leaf(DType::Q8_0, &[1, 32], block);
        let y = t.g.mat_mul(x, w).unwrap();
        close(&t.eval(y), &[0.5 * (0..32).sum::<i32>() as f32]);
    }

    #[test]
    fn i8_weights_meet_per_row_int8_activations() {
        // Row 0: d = 4/127, q = [0, 64, -127, 32, -64] (halves away from zero): d * (-95), not the
        // exact -3. Row 1 is all zeros. The weights carry no scale; the F8 row decodes exactly.
        let mut t = Tiny::new();
        let x = t.f32(&[2, 5], &[0.0, 2.0, -4.0, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let w = t.leaf(DType::I8, &[2, 5], vec![1, 1, 1, 1, 1, 0xFF, 0, 0, 0, 0x80]);
        let y = t.g.mat_mul(x, w).unwrap();
        close(&t.eval(y), &[-95.0 * 4.0 / 127.0, 8192.0 * 4.0 / 127.0, 0.0, 0.0]);
        let f8 = t.leaf(DType::F8_E4M3, &[1, 5], vec![0x38, 0x7E, 0x01, 0xB8, 0]);
        let y = t.g.mat_mul(x, f8).unwrap();
        close(&t.eval(y), &[2.0 * 448.0 - 4.0 / 512.0 - 1.0, 0.0]);
        let ids = t.ids(&[1]);
        let rows = t.g.get_rows(w, ids).unwrap();
        close(&t.eval(rows), &[-1.0, 0.0, 0.0, 0.0, -128.0]);
    }

    #[test]
    fn get_rows_gathers_and_rejects_bad_ids() {
        let mut t = Tiny::new();
        let table = t.f32(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let ids = t.ids(&[2, 0, 2]);
        let y = t.g.get_rows(table, ids).unwrap();
        close(&t.eval(y), &[5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);

        let mut t = Tiny::new();
        let table = t.f32(&[3, 2], &[0.0; 6]);
        let ids = t.ids(&[3]);
        t.g.get_rows(table, ids).unwrap();
        assert_eq!(t.eval_err().op, "get_rows");
    }

    #[test]
    fn rms_norm_and_activations() {
        let mut t = Tiny::new();
        let x = t.f32(&[2, 2], &[3.0, 4.0, -1.0, 1.0]);
        let w = t.f32(&[2], &[1.0, 2.0]);
        let y = t.g.rms_norm(x, w, 0.0).unwrap();
        let r = 12.5f32.sqrt();
        close(&t.eval(y), &[3.0 / r, 8.0 / r, -1.0, 2.0]);

        let mut t = Tiny::new();
        let g = t.f32(&[1, 2], &[0.0, 1.0]);
        let u = t.f32(&[1, 2], &[5.0, 2.0]);
        let s = t.g.swiglu(g, u).unwrap();
        let e = t.g.geglu(g, u).unwrap();
        // silu(1) = 1 / (1 + e^-1); gelu_tanh(1) = 0.8411919906.
        close(&t.eval(s), &[0.0, 2.0 / (1.0 + (-1f32).exp())]);
        close(&t.eval(e), &[0.0, 2.0 * 0.841_192]);
    }

    #[test]
    fn rope_rotates_the_documented_pairs() {
        for (style, pair) in [(RopeStyle::Interleaved, 1usize), (RopeStyle::Halves, 2)] {
            let mut t = Tiny::new();
            // Two heads of 4, rot_dims 4: pair 0 turns by pos * 1, pair 1 by pos * base^(-1/2).
            let x = t.f32(&[1, 8], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
            let pos = t.ids(&[2]);
            let y = t.g.rope(x, pos, 4, 4, 100.0, 0.5, style).unwrap();
            let out = t.eval(y);
            let angle = 2.0f32 * 0.5;
            for head in out.chunks(4) {
                assert!((head[0] - angle.cos()).abs() < 1e-6, "{style:?} {out:?}");
                assert!((head[pair] - angle.sin()).abs() < 1e-6, "{style:?} {out:?}");
            }
        }
        // Dimensions past rot_dims pass through; pair 1 of the second case turns by base^-1/2.
        let mut t = Tiny::new();
        let x = t.f32(&[1, 6], &[0.0, 0.0, 1.0, 0.0, 7.0, 8.0]);
        let pos = t.ids(&[3]);
        let y = t.g.rope(x, pos, 6, 4, 100.0, 1.0, RopeStyle::Interleaved).unwrap();
        let out = t.eval(y);
        let angle = 3.0f32 * 0.1;
        close(&out, &[0.0, 0.0, angle.cos(), angle.sin(), 7.0, 8.0]);
    }

    #[test]
    fn attention_softmax_gqa_and_window() {
        // Two query heads share one KV head of dim 1; cache rows have keys 0, ln 2 / 1 and
        // values 10, 20: with q = 1 at position 1 the weights are 1/3 and 2/3.
        let mut t = Tiny::new();
        let q = t.f32(&[1, 2], &[1.0, 0.0]);
        let k = t.f32(&[3, 1], &[0.0, 2f32.ln(), 100.0]);
        let v = t.f32(&[3, 1], &[10.0, 20.0, 1000.0]);
        let pos = t.ids(&[1]);
        let y = t.g.attention(q, k, v, pos, 2, 1, 1, 1.0, None).unwrap();
        let w = t.g.attention(q, k, v, pos, 2, 1, 1, 1.0, Some(1)).unwrap();
        close(&t.eval(y), &[10.0 / 3.0 + 40.0 / 3.0, 15.0]);
        close(&t.eval(w), &[20.0, 20.0]);

        let mut t = Tiny::new();
        let q = t.f32(&[1, 1], &[1.0]);
        let k = t.f32(&[2, 1], &[0.0, 0.0]);
        let pos = t.ids(&[2]);
        t.g.attention(q, k, k, pos, 1, 1, 1, 1.0, None).unwrap();
        assert_eq!(t.eval_err().op, "attention");
    }

    #[test]
    fn paged_attention_reads_positions_through_the_block_table() {
        // Blocks of 2 rows, keys all zero: the result averages the visible values.
        let run = |table: &[i32], pos: i32, window: Option<usize>| {
            let mut t = Tiny::new();
            let q = t.f32(&[1, 1], &[1.0]);
            let k = t.f32(&[6, 1], &[0.0; 6]);
            let v = t.f32(&[6, 1], &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]);
            let pos = t.ids(&[pos]);
            let tables = t.leaf(DType::I32, &[1, table.len()], table.iter().flat_map(|x| x.to_le_bytes()).collect());
            let y = t.g.paged_attention(q, k, v, pos, tables, 1, 1, 1, 1.0, window, 2).unwrap();
            evaluate(t.g.graph(), &mut t.mem).map(|values| values[y].clone())
        };
        // Positions 0, 1 in block 2 (rows 4, 5) and position 2 in block 0 (row 0).
        assert_eq!(run(&[2, 0, -1], 2, None), Ok(RefValue::F32(vec![49.0 / 3.0])));
        // The window hides block 0 entirely, so its bad entry is never needed.
        assert_eq!(run(&[-1, 1], 3, Some(2)), Ok(RefValue::F32(vec![6.0])));
        for (table, pos) in [(&[2, 3][..], 2), (&[2, -1], 2), (&[2, 0], 4), (&[2, 0], -1)] {
            assert_eq!(run(table, pos, None).unwrap_err().op, "paged_attention", "{table:?} at {pos}");
        }
    }

    #[test]
    fn store_rows_writes_slots_and_rejects_bad_ones() {
        let mut t = Tiny::new();
        let src = t.f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let cache = t.leaf(DType::F32, &[3, 2], vec![0; 24]);
        let slots = t.ids(&[2, 0]);
        let s = t.g.store_rows(src, cache, slots).unwrap();
        close(&t.eval(s), &[3.0, 4.0, 0.0, 0.0, 1.0, 2.0]);
        for bad in [[3, 0], [-1, 0], [1, 1]] {
            let mut t = Tiny::new();
            let src = t.f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
            let cache = t.leaf(DType::F16, &[3, 2], vec![0; 12]);
            let slots = t.ids(&bad);
            t.g.store_rows(src, cache, slots).unwrap();
            assert_eq!(t.eval_err().op, "store_rows", "{bad:?}");
        }
    }

    #[test]
    fn store_writes_rows_in_the_destination_type() {
        let mut t = Tiny::new();
        let src = t.f32(&[2, 2], &[1.0, 2.0, 3.0, 1.0 / 3.0]);
        let cache = t.leaf(DType::F16, &[4, 2], vec![0; 16]);
        let s = t.g.store(src, cache, 1).unwrap();
        let rows = t.g.slice_rows(s, 1, 2).unwrap();
        let flat = t.g.reshape(rows, [4]).unwrap();
        let third = half::f16::from_f32(1.0 / 3.0).to_f32();
        close(&t.eval(flat), &[1.0, 2.0, 3.0, third]);
        let stored = t.mem.get(BufferId(2)).unwrap();
        assert_eq!(&stored[..4], &[0, 0, 0, 0]);
        assert_eq!(half::f16::from_le_bytes([stored[4], stored[5]]).to_f32(), 1.0);
    }
}
