//! Runs a graph on two backends: ops the primary backend does not support run on a fallback
//! (normally the CPU), with tensors copied across where the graph crosses between them.
//!
//! The graph is cut into segments of consecutive ops that run on the same backend. A value that
//! a later segment reads is stored into a scratch buffer at the end of the segment that made it,
//! and copied to the other backend when the reader runs there. `Leaf`, `Store` and the views
//! (`Reshape`, `SliceRows`) are part of the contract every backend implements; the stores
//! (`Store`, `StoreRows`) always run on the primary, which owns the buffers the graph names.

use std::collections::HashMap;
use std::sync::Arc;

use tessera_core::{DType, Shape};

use crate::contract::{Backend, BackendError, BufferId, OwnedBuffer};
use crate::graph::{Graph, GraphBuilder, NodeId, Op, TensorRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Primary,
    Fallback,
}

/// Where a value computed by an earlier segment can be read: a buffer on one side.
struct Saved {
    side: Side,
    tensor: TensorRef,
    dtype: DType,
    shape: Shape,
}

/// Executes `graph`, whose buffers belong to `primary`, using `fallback` for unsupported ops.
pub fn execute(primary: &Arc<dyn Backend>, fallback: &Arc<dyn Backend>, graph: &Graph) -> Result<(), BackendError> {
    let nodes = graph.nodes();
    let is_free = |op: &Op| matches!(op, Op::Leaf(_) | Op::Reshape | Op::SliceRows { .. });
    let mut side = vec![Side::Primary; nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        if is_free(&node.op) || node.op.is_store() || primary.supports_op(graph, id) {
            continue;
        }
        if !fallback.supports_op(graph, id) {
            return Err(BackendError::Unsupported {
                backend: format!("{} or {}", primary.info().backend, fallback.info().backend),
                node: id,
                op: node.op.name().to_string(),
            });
        }
        side[id] = Side::Fallback;
    }
    // Segments: maximal runs of computing nodes on one side.
    let computing: Vec<NodeId> = (0..nodes.len()).filter(|&i| !is_free(&nodes[i].op)).collect();
    let mut segments: Vec<Vec<NodeId>> = Vec::new();
    for &id in &computing {
        match segments.last_mut() {
            Some(seg) if side[seg[0]] == side[id] => seg.push(id),
            _ => segments.push(vec![id]),
        }
    }
    let mut segment_of = vec![usize::MAX; nodes.len()];
    for (s, seg) in segments.iter().enumerate() {
        for &id in seg {
            segment_of[id] = s;
        }
    }
    // A computed value is saved when a node of another segment reads it (through views too).
    let mut needed_later = vec![false; nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        if is_free(&node.op) {
            continue;
        }
        for &input in &node.inputs {
            let source = producer(graph, input);
            if let Some(p) = source {
                if segment_of[p] != segment_of[id] && !nodes[p].op.is_store() {
                    needed_later[p] = true;
                }
            }
        }
    }

    let mut runner = Runner { primary, fallback, graph, saved: HashMap::new(), scratch: Vec::new() };
    for seg in &segments {
        runner.run_segment(seg, side[seg[0]], &needed_later)?;
    }
    Ok(())
}

/// The computing node a value comes from, looking through views; `None` for leaves.
fn producer(graph: &Graph, mut id: NodeId) -> Option<NodeId> {
    loop {
        let n = graph.node(id);
        match n.op {
            Op::Leaf(_) => return None,
            Op::Reshape | Op::SliceRows { .. } => id = n.inputs[0],
            _ => return Some(id),
        }
    }
}

struct Runner<'a> {
    primary: &'a Arc<dyn Backend>,
    fallback: &'a Arc<dyn Backend>,
    graph: &'a Graph,
    saved: HashMap<NodeId, Saved>,
    scratch: Vec<OwnedBuffer>,
}

impl Runner<'_> {
    fn backend(&self, side: Side) -> &Arc<dyn Backend> {
        match side {
            Side::Primary => self.primary,
            Side::Fallback => self.fallback,
        }
    }

    fn run_segment(&mut self, seg: &[NodeId], side: Side, needed_later: &[bool]) -> Result<(), BackendError> {
        let mut g = GraphBuilder::new();
        let mut map: HashMap<NodeId, NodeId> = HashMap::new();
        for &id in seg {
            let node = self.graph.node(id);
            let inputs =
                node.inputs.iter().map(|&i| self.import(&mut g, &mut map, i, side)).collect::<Result<Vec<_>, _>>()?;
            let new = g.label(node.label.clone()).add_op(&node.op, &inputs, node.dtype, &node.shape)?;
            map.insert(id, new);
        }
        // Scratch outputs for values later segments read.
        let mut outputs = Vec::new();
        for &id in seg {
            let node = self.graph.node(id);
            if !needed_later[id] {
                continue;
            }
            let rows = node.shape.rows();
            let cols = node.shape.cols();
            let buf = OwnedBuffer::alloc(self.backend(side), rows * cols * 4)?;
            let tensor = TensorRef { buffer: buf.id(), offset: 0 };
            let dst = g.leaf(tensor, DType::F32, [rows, cols])?;
            let flat = g.reshape(map[&id], [rows, cols])?;
            g.store(flat, dst, 0)?;
            outputs.push((id, Saved { side, tensor, dtype: DType::F32, shape: node.shape.clone() }));
            self.scratch.push(buf);
        }
        self.backend(side).execute(&g.finish())?;
        self.saved.extend(outputs);
        Ok(())
    }

    /// Makes node `id` of the original graph available in the segment being built on `side`.
    fn import(
        &mut self,
        g: &mut GraphBuilder,
        map: &mut HashMap<NodeId, NodeId>,
        id: NodeId,
        side: Side,
    ) -> Result<NodeId, BackendError> {
        if let Some(&n) = map.get(&id) {
            return Ok(n);
        }
        let node = self.graph.node(id);
        let new = match node.op {
            Op::Leaf(tensor) => {
                let tensor = self.on_side(tensor, Side::Primary, node.dtype, &node.shape, side)?;
                g.leaf(tensor, node.dtype, node.shape.clone())?
            }
            Op::Reshape | Op::SliceRows { .. } => {
                let input = self.import(g, map, node.inputs[0], side)?;
                g.add_op(&node.op, &[input], node.dtype, &node.shape)?
            }
            ref op if op.is_store() => {
                // After its segment ran, a store's value is its destination buffer on the primary.
                let (dst_leaf, offset) =
                    self.graph.storage_of(id).and_then(|(n, o)| self.leaf_of(n).map(|t| (t, o))).ok_or(
                        BackendError::InvalidInput {
                            node: id,
                            op: node.op.name().into(),
                            message: "destination is not a leaf".into(),
                        },
                    )?;
                let tensor = TensorRef { buffer: dst_leaf.buffer, offset: dst_leaf.offset + offset };
                let tensor = self.on_side(tensor, Side::Primary, node.dtype, &node.shape, side)?;
                g.leaf(tensor, node.dtype, node.shape.clone())?
            }
            _ => {
                let saved = self.saved.get(&id).ok_or(BackendError::InvalidInput {
                    node: id,
                    op: node.op.name().into(),
                    message: "value needed across backends was not saved".into(),
                })?;
                let (t, from, dtype, shape) = (saved.tensor, saved.side, saved.dtype, saved.shape.clone());
                let tensor = self.on_side(t, from, dtype, &shape, side)?;
                g.leaf(tensor, dtype, shape)?
            }
        };
        map.insert(id, new);
        Ok(new)
    }

    /// The leaf at the bottom of a chain of stores.
    fn leaf_of(&self, mut id: NodeId) -> Option<TensorRef> {
        loop {
            let n = self.graph.node(id);
            match n.op {
                Op::Leaf(t) => return Some(t),
                ref op if op.is_store() => id = n.inputs[1],
                _ => return None,
            }
        }
    }

    /// `tensor` (on side `from`) as a tensor readable on side `to`, copying when they differ.
    fn on_side(
        &mut self,
        tensor: TensorRef,
        from: Side,
        dtype: DType,
        shape: &Shape,
        to: Side,
    ) -> Result<TensorRef, BackendError> {
        if from == to {
            return Ok(tensor);
        }
        let bytes = dtype
            .bytes_for(shape.count())
            .map_err(|e| BackendError::Device { backend: self.backend(from).info().backend, message: e.to_string() })?;
        let mut host = vec![0u8; bytes];
        self.backend(from).download(tensor.buffer, tensor.offset, &mut host)?;
        let copy = OwnedBuffer::with_data(self.backend(to), &host)?;
        let id: BufferId = copy.id();
        self.scratch.push(copy);
        Ok(TensorRef { buffer: id, offset: 0 })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::contract::{DeviceInfo, DeviceKind};

    type Log = Arc<Mutex<Vec<(&'static str, Vec<&'static str>)>>>;

    /// Host buffers and no arithmetic: records the computing ops of every graph it executes,
    /// and fails on a leaf in a buffer it does not own (a value that was not copied across).
    struct Recorder {
        name: &'static str,
        declines: fn(&Op) -> bool,
        state: Mutex<(u64, HashMap<BufferId, Vec<u8>>)>,
        log: Log,
    }

    impl Recorder {
        fn backend(name: &'static str, first_id: u64, declines: fn(&Op) -> bool, log: &Log) -> Arc<dyn Backend> {
            Arc::new(Recorder { name, declines, state: Mutex::new((first_id, HashMap::new())), log: log.clone() })
        }
    }

    impl Backend for Recorder {
        fn info(&self) -> DeviceInfo {
            DeviceInfo {
                backend: self.name.into(),
                name: self.name.into(),
                kind: DeviceKind::Cpu,
                memory_total: None,
                memory_free: None,
            }
        }
        fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            let id = BufferId(s.0);
            s.1.insert(id, vec![0; bytes]);
            Ok(id)
        }
        fn free(&self, buffer: BufferId) {
            self.state.lock().unwrap().1.remove(&buffer);
        }
        fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
            let mut s = self.state.lock().unwrap();
            let b = s.1.get_mut(&buffer).ok_or(BackendError::UnknownBuffer(buffer))?;
            b[offset..offset + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
            let s = self.state.lock().unwrap();
            let b = s.1.get(&buffer).ok_or(BackendError::UnknownBuffer(buffer))?;
            out.copy_from_slice(&b[offset..offset + out.len()]);
            Ok(())
        }
        fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
            !(self.declines)(&graph.node(node).op)
        }
        fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
            let s = self.state.lock().unwrap();
            let mut ops = Vec::new();
            for node in graph.nodes() {
                match node.op {
                    Op::Leaf(t) if !s.1.contains_key(&t.buffer) => return Err(BackendError::UnknownBuffer(t.buffer)),
                    Op::Leaf(_) | Op::Reshape | Op::SliceRows { .. } => {}
                    ref op => ops.push(op.name()),
                }
            }
            self.log.lock().unwrap().push((self.name, ops));
            Ok(())
        }
    }

    /// One paged attention layer as a model builds it: new K (computed) and V rows stored into
    /// F16 caches at their slots, attention over the caches, the result stored for the caller.
    fn paged_layer(primary: &Arc<dyn Backend>) -> (Graph, Vec<OwnedBuffer>) {
        let (n, heads, hd, rows, blocks) = (3usize, 2usize, 8usize, 32usize, 4usize);
        let mut g = GraphBuilder::new();
        let mut buffers = Vec::new();
        let mut leaf = |g: &mut GraphBuilder, dtype: DType, shape: &[usize]| {
            let buf = OwnedBuffer::alloc(primary, dtype.bytes_for(shape.iter().product()).unwrap()).unwrap();
            let id = g.leaf(TensorRef { buffer: buf.id(), offset: 0 }, dtype, shape).unwrap();
            buffers.push(buf);
            id
        };
        let q = leaf(&mut g, DType::F32, &[n, heads * hd]);
        let k_new = leaf(&mut g, DType::F32, &[n, hd]);
        let v_new = leaf(&mut g, DType::F32, &[n, hd]);
        let k_cache = leaf(&mut g, DType::F16, &[rows, hd]);
        let v_cache = leaf(&mut g, DType::F16, &[rows, hd]);
        let slots = leaf(&mut g, DType::I32, &[n]);
        let pos = leaf(&mut g, DType::I32, &[n]);
        let tables = leaf(&mut g, DType::I32, &[n, blocks]);
        let out = leaf(&mut g, DType::F32, &[n, heads * hd]);
        let k = g.scale(k_new, 0.5).unwrap();
        let k_all = g.store_rows(k, k_cache, slots).unwrap();
        let v_all = g.store_rows(v_new, v_cache, slots).unwrap();
        let y = g.paged_attention(q, k_all, v_all, pos, tables, heads, 1, hd, 0.3, None, 8).unwrap();
        g.store(y, out, 0).unwrap();
        (g.finish(), buffers)
    }

    #[test]
    fn store_rows_runs_on_the_primary_and_feeds_paged_attention_on_the_fallback() {
        // Even a primary that declines StoreRows runs it: a store runs where its destination
        // lives. The fallback reads the caches written there, not a stale copy of a computed value.
        for declines_store_rows in [false, true] {
            let log: Log = Arc::default();
            let declines: fn(&Op) -> bool = if declines_store_rows {
                |op| matches!(op, Op::Scale { .. } | Op::PagedAttention { .. } | Op::StoreRows)
            } else {
                |op| matches!(op, Op::Scale { .. } | Op::PagedAttention { .. })
            };
            let primary = Recorder::backend("primary", 1000, declines, &log);
            let fallback = Recorder::backend("fallback", 2000, |_| false, &log);
            let (graph, _buffers) = paged_layer(&primary);
            execute(&primary, &fallback, &graph).unwrap();
            let want = vec![
                ("fallback", vec!["scale", "store"]),
                ("primary", vec!["store_rows", "store_rows"]),
                ("fallback", vec!["paged_attention", "store"]),
                ("primary", vec!["store"]),
            ];
            assert_eq!(*log.lock().unwrap(), want);
        }
    }

    #[test]
    fn an_op_neither_backend_supports_is_an_error() {
        let log: Log = Arc::default();
        let primary = Recorder::backend("primary", 1000, |op| matches!(op, Op::PagedAttention { .. }), &log);
        let fallback = Recorder::backend("fallback", 2000, |op| matches!(op, Op::PagedAttention { .. }), &log);
        let (graph, _buffers) = paged_layer(&primary);
        let err = execute(&primary, &fallback, &graph).unwrap_err();
        assert!(matches!(err, BackendError::Unsupported { ref op, .. } if op == "paged_attention"), "{err}");
        assert!(log.lock().unwrap().is_empty(), "nothing runs when the graph cannot be placed");
    }
}
