//! Graph execution: walks the nodes in order, keeps intermediate results in reference-counted
//! f32 vectors freed after their last consumer, and resolves views without copying.
//!
//! Every buffer the graph names is locked once, before any work starts and in id order (so two
//! graphs sharing buffers cannot deadlock), and stays locked until the graph is done: stores
//! land in place, and nothing else can observe a half-written KV cache. Locks are taken on the
//! calling thread, outside the thread pool, so a pool thread never blocks on one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use tessera_backend::{BackendError, BufferId, Graph, Node, NodeId, Op, TensorRef};
use tessera_core::DType;

use crate::backend::CpuBackend;
use crate::kernels::packed::PackedWeight;
use crate::kernels::Kernels;
use crate::memory::Storage;
use crate::ops::attention::{self, AttentionShape, Kv, Layout};
use crate::ops::elementwise::Elementwise;
use crate::ops::{matmul, norm, rope, rows};
use crate::packs::{PackCache, PackKey};

/// The result of a node.
#[derive(Clone)]
enum Value {
    /// Computed f32 values; views share the vector.
    Data { data: Arc<Vec<f32>>, start: usize, len: usize },
    /// Bytes inside a buffer: leaves, stores, and views of them.
    Stored { buffer: BufferId, offset: usize, len: usize },
}

/// A locked buffer: its storage when read, its bytes when written.
enum Mem<'a> {
    Read(&'a Storage),
    Write(&'a mut [u8]),
}

enum Guard<'a> {
    Read(RwLockReadGuard<'a, Storage>),
    Write(RwLockWriteGuard<'a, Storage>),
}

fn internal(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "cpu".into(), message: format!("internal error: {}", message.into()) }
}

fn invalid(graph: &Graph, node: NodeId, message: impl Into<String>) -> BackendError {
    BackendError::InvalidInput { node, op: graph.node(node).op.name().to_string(), message: message.into() }
}

/// The leaf a chain of stores (`Store`, `StoreRows`) writes into.
fn store_target(graph: &Graph, mut id: NodeId) -> Result<TensorRef, BackendError> {
    loop {
        let node = graph.node(id);
        match node.op {
            Op::Leaf(t) => return Ok(t),
            ref op if op.is_store() => id = *node.inputs.get(1).ok_or_else(|| internal("store without destination"))?,
            _ => return Err(invalid(graph, id, "a store destination must be a leaf or a store")),
        }
    }
}

fn stored_bytes(graph: &Graph, id: NodeId, node: &Node) -> Result<usize, BackendError> {
    node.dtype.bytes_for(node.shape.count()).map_err(|e| invalid(graph, id, e.to_string()))
}

pub(crate) fn execute(backend: &CpuBackend, graph: &Graph) -> Result<(), BackendError> {
    // Which buffers the graph touches, and which of them it writes.
    let mut used: BTreeMap<BufferId, Option<NodeId>> = BTreeMap::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        match node.op {
            Op::Leaf(t) => {
                used.entry(t.buffer).or_insert(None);
            }
            ref op if op.is_store() => {
                used.insert(store_target(graph, id)?.buffer, Some(id));
            }
            _ => {}
        }
    }
    let shared =
        used.iter().map(|(&b, &w)| Ok((b, w, backend.buffer(b)?))).collect::<Result<Vec<_>, BackendError>>()?;
    let mut guards = Vec::with_capacity(shared.len());
    for (_, writer, s) in &shared {
        guards.push(match writer {
            Some(_) => Guard::Write(s.write().unwrap_or_else(|e| e.into_inner())),
            None => Guard::Read(s.read().unwrap_or_else(|e| e.into_inner())),
        });
    }
    let mut mem = HashMap::with_capacity(guards.len());
    for ((buffer, writer, _), guard) in shared.iter().zip(guards.iter_mut()) {
        let m = match guard {
            Guard::Read(g) => Mem::Read(g),
            Guard::Write(g) => Mem::Write(g.bytes_mut().ok_or_else(|| {
                invalid(graph, writer.unwrap_or(0), format!("buffer {buffer:?} maps read-only host memory"))
            })?),
        };
        mem.insert(*buffer, m);
    }
    // Packed copies of a buffer this graph writes would go stale.
    for (buffer, writer, _) in &shared {
        if writer.is_some() {
            backend.packs().forget(*buffer);
        }
    }
    let mut walker = Walker::new(graph, backend.kernels(), backend.threads(), backend.packs(), mem);
    walker.check_leaves()?;
    backend.install(move || walker.run())
}

fn elementwise_op(op: &Op) -> Option<Elementwise> {
    Some(match *op {
        Op::Add => Elementwise::Add,
        Op::Mul => Elementwise::Mul,
        Op::Scale { factor } => Elementwise::Scale(factor),
        Op::SwiGlu => Elementwise::SwiGlu,
        Op::GeGlu => Elementwise::GeGlu,
        _ => return None,
    })
}

struct Walker<'a> {
    graph: &'a Graph,
    kernels: Kernels,
    threads: usize,
    packs: &'a PackCache,
    mem: HashMap<BufferId, Mem<'a>>,
    values: Vec<Option<Value>>,
    /// The last node reading each node's value (the node itself when nothing does).
    last_use: Vec<NodeId>,
}

impl<'a> Walker<'a> {
    fn new(
        graph: &'a Graph,
        kernels: Kernels,
        threads: usize,
        packs: &'a PackCache,
        mem: HashMap<BufferId, Mem<'a>>,
    ) -> Walker<'a> {
        let mut last_use: Vec<NodeId> = (0..graph.len()).collect();
        for (id, node) in graph.nodes().iter().enumerate() {
            for &i in &node.inputs {
                last_use[i] = id;
            }
        }
        Walker { graph, kernels, threads, packs, mem, values: vec![None; graph.len()], last_use }
    }

    fn buffer_len(&self, b: BufferId) -> usize {
        match self.mem.get(&b) {
            Some(Mem::Read(s)) => s.bytes().len(),
            Some(Mem::Write(s)) => s.len(),
            None => 0,
        }
    }

    /// Every leaf lies inside its buffer.
    fn check_leaves(&self) -> Result<(), BackendError> {
        for (id, node) in self.graph.nodes().iter().enumerate() {
            if let Op::Leaf(t) = node.op {
                let len = stored_bytes(self.graph, id, node)?;
                let size = self.buffer_len(t.buffer);
                if t.offset.checked_add(len).is_none_or(|end| end > size) {
                    return Err(BackendError::OutOfBounds { buffer: t.buffer, offset: t.offset, len, size });
                }
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), BackendError> {
        for id in 0..self.graph.len() {
            let value = self.eval(id)?;
            self.values[id] = Some(value);
            let node = self.graph.node(id);
            for &i in &node.inputs {
                if self.last_use[i] == id {
                    self.values[i] = None;
                }
            }
            if self.last_use[id] == id {
                self.values[id] = None;
            }
        }
        Ok(())
    }

    fn value(&self, id: NodeId) -> Result<&Value, BackendError> {
        self.values.get(id).and_then(|v| v.as_ref()).ok_or_else(|| internal(format!("value of node {id} is gone")))
    }

    fn stored(&self, buffer: BufferId, offset: usize, len: usize) -> Result<&[u8], BackendError> {
        let all: &[u8] = match self.mem.get(&buffer) {
            Some(Mem::Read(s)) => s.bytes(),
            Some(Mem::Write(s)) => s,
            None => return Err(internal(format!("buffer {buffer:?} is not locked"))),
        };
        all.get(offset..offset + len).ok_or_else(|| internal("view outside its buffer"))
    }

    /// An input as f32 values (stored F32 bytes are borrowed when aligned).
    fn f32s(&self, id: NodeId) -> Result<Cow<'_, [f32]>, BackendError> {
        match self.value(id)? {
            Value::Data { data, start, len } => Ok(Cow::Borrowed(&data[*start..*start + *len])),
            Value::Stored { buffer, offset, len } => {
                let bytes = self.stored(*buffer, *offset, *len)?;
                if self.graph.node(id).dtype != DType::F32 {
                    return Err(internal(format!("node {id} is not F32")));
                }
                Ok(match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    Ok(v) => Cow::Borrowed(v),
                    Err(_) => Cow::Owned(
                        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                    ),
                })
            }
        }
    }

    /// An input as the bytes of its stored type (computed values are F32).
    fn bytes(&self, id: NodeId) -> Result<&[u8], BackendError> {
        match self.value(id)? {
            Value::Data { data, start, len } => Ok(bytemuck::cast_slice(&data[*start..*start + *len])),
            Value::Stored { buffer, offset, len } => self.stored(*buffer, *offset, *len),
        }
    }

    /// The packed copy of a weight stored in a buffer this graph only reads (made on first use);
    /// `None` for computed or written weights, and weights that cannot be packed.
    fn packed_weight(&self, id: NodeId, dtype: DType, m: usize, k: usize) -> Option<Arc<PackedWeight>> {
        let Value::Stored { buffer, offset, len } = *self.value(id).ok()? else { return None };
        let Some(Mem::Read(storage)) = self.mem.get(&buffer) else { return None };
        let bytes = self.stored(buffer, offset, len).ok()?;
        let release = |r: std::ops::Range<usize>| storage.release_pages(offset + r.start..offset + r.end);
        self.packs.get(PackKey { buffer, offset, dtype, m, k }, bytes, &release)
    }

    /// The packed copy of a stored table, if a matmul has made one or one of this graph's
    /// matmuls reads the same leaf as its weight.
    fn packed_table(&self, id: NodeId, dtype: DType, m: usize, k: usize) -> Option<Arc<PackedWeight>> {
        self.kernels.packed(dtype)?;
        let Value::Stored { buffer, offset, .. } = *self.value(id).ok()? else { return None };
        matches!(self.mem.get(&buffer), Some(Mem::Read(_))).then_some(())?;
        self.packs.lookup(PackKey { buffer, offset, dtype, m, k }).or_else(|| {
            let Op::Leaf(table) = self.graph.node(id).op else { return None };
            let weight_of_a_matmul =
                self.graph.nodes().iter().any(|n| {
                    n.op == Op::MatMul && matches!(self.graph.node(n.inputs[1]).op, Op::Leaf(w) if w == table)
                });
            weight_of_a_matmul.then(|| self.packed_weight(id, dtype, m, k)).flatten()
        })
    }

    fn i32s(&self, id: NodeId) -> Result<Vec<i32>, BackendError> {
        Ok(self.bytes(id)?.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn kv(&self, id: NodeId) -> Result<Kv<'_>, BackendError> {
        Ok(match self.graph.node(id).dtype {
            DType::F16 => Kv::F16(self.bytes(id)?),
            _ => Kv::F32(self.f32s(id)?),
        })
    }

    fn eval(&mut self, id: NodeId) -> Result<Value, BackendError> {
        let graph = self.graph;
        let node = graph.node(id);
        match node.op {
            Op::Leaf(t) => {
                Ok(Value::Stored { buffer: t.buffer, offset: t.offset, len: stored_bytes(graph, id, node)? })
            }
            Op::Reshape => Ok(self.value(node.inputs[0])?.clone()),
            Op::SliceRows { start, len } => {
                let src = graph.node(node.inputs[0]);
                let row_elems = src.shape.count() / src.shape.dims().first().copied().unwrap_or(1).max(1);
                let bytes =
                    |n: usize| src.dtype.bytes_for(n * row_elems).map_err(|e| invalid(graph, id, e.to_string()));
                Ok(match self.value(node.inputs[0])?.clone() {
                    Value::Data { data, start: s, .. } => {
                        Value::Data { data, start: s + start * row_elems, len: len * row_elems }
                    }
                    Value::Stored { buffer, offset, .. } => {
                        Value::Stored { buffer, offset: offset + bytes(start)?, len: bytes(len)? }
                    }
                })
            }
            Op::Store { .. } | Op::StoreRows => self.store(id),
            _ => {
                let data = match elementwise_op(&node.op) {
                    Some(op) => self.elementwise(id, op),
                    None => self.compute(node),
                }
                .map_err(|m| invalid(graph, id, m))?;
                let len = data.len();
                Ok(Value::Data { data: Arc::new(data), start: 0, len })
            }
        }
    }

    /// `Store` and `StoreRows`: writes the source rows into the destination buffer in place.
    fn store(&mut self, id: NodeId) -> Result<Value, BackendError> {
        let graph = self.graph;
        let node = graph.node(id);
        let (src_id, dst_id) = (node.inputs[0], node.inputs[1]);
        let slots = match node.op {
            Op::StoreRows => Some(self.i32s(node.inputs[2])?),
            _ => None,
        };
        let target = self.value(dst_id)?.clone();
        let Value::Stored { buffer, offset, len } = target else {
            return Err(invalid(graph, id, "destination is not stored in a buffer"));
        };
        // Hold the source independently of `self`, whose destination is borrowed mutably next: a
        // computed source through its own reference count, a stored one (possibly in the same
        // buffer) as a copy.
        let src_value = self.value(src_id)?.clone();
        let copy;
        let src: &[f32] = match &src_value {
            Value::Data { data, start, len } => &data[*start..*start + *len],
            Value::Stored { .. } => {
                copy = self.f32s(src_id)?.into_owned();
                &copy
            }
        };
        let dst = match self.mem.get_mut(&buffer) {
            Some(Mem::Write(s)) => s.get_mut(offset..offset + len).ok_or_else(|| internal("store outside buffer"))?,
            _ => return Err(internal(format!("buffer {buffer:?} is not writable"))),
        };
        let cols = node.shape.cols();
        match (&node.op, slots) {
            (Op::Store { row }, _) => rows::store(src, dst, node.dtype, *row, cols),
            (_, Some(slots)) => rows::store_rows(src, dst, node.dtype, &slots, cols),
            _ => Err(format!("{} is not a store", node.op.name())),
        }
        .map_err(|m| invalid(graph, id, m))?;
        Ok(target)
    }

    /// An element-wise op, in place in its first operand's vector when this node is that
    /// vector's only and last reader (no view shares it), in a copy otherwise: an activation
    /// the size of the batch less at the peak of every feed-forward block.
    fn elementwise(&mut self, id: NodeId, op: Elementwise) -> Result<Vec<f32>, String> {
        let node = self.graph.node(id);
        let (a_id, b_id) = (node.inputs[0], node.inputs.get(1).copied());
        let whole = |v: &Option<Value>| match v {
            Some(Value::Data { data, start, len }) => *start == 0 && *len == data.len() && Arc::strong_count(data) == 1,
            _ => false,
        };
        let owned = (self.last_use[a_id] == id && b_id != Some(a_id) && whole(&self.values[a_id]))
            .then(|| match self.values[a_id].take() {
                Some(Value::Data { data, .. }) => Arc::try_unwrap(data).ok(),
                _ => None,
            })
            .flatten();
        let mut a = match owned {
            Some(a) => a,
            None => self.f32s(a_id).map_err(|e| e.to_string())?.into_owned(),
        };
        let b = match b_id {
            Some(b) => self.f32s(b).map_err(|e| e.to_string())?,
            None => Cow::Borrowed(&[][..]),
        };
        op.apply(&mut a, &b);
        Ok(a)
    }

    fn compute(&self, node: &Node) -> Result<Vec<f32>, String> {
        let graph = self.graph;
        let err = |e: BackendError| e.to_string();
        let input = |i: usize| graph.node(node.inputs[i]);
        let f32_in = |i: usize| self.f32s(node.inputs[i]).map_err(err);
        let cols = node.shape.cols();
        match node.op {
            Op::RmsNorm { eps } => Ok(norm::rms_norm(&f32_in(0)?, &f32_in(1)?, cols, eps)),
            Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
                let pos = self.i32s(node.inputs[1]).map_err(err)?;
                let params = rope::RopeParams { head_dim, rot_dims, base, freq_scale, style };
                Ok(rope::rope(&f32_in(0)?, &pos, cols, &params))
            }
            Op::MatMul => {
                let w = input(1);
                let (m, k) = (w.shape.dims()[0], w.shape.cols());
                if let Some(tile) = self.kernels.packed(w.dtype) {
                    if let Some(packed) = self.packed_weight(node.inputs[1], w.dtype, m, k) {
                        return matmul::mat_mul_packed(&self.kernels, self.threads, &f32_in(0)?, &packed, tile);
                    }
                }
                let wb = self.bytes(node.inputs[1]).map_err(err)?;
                matmul::mat_mul(&self.kernels, self.threads, &f32_in(0)?, k, wb, w.dtype, m)
            }
            Op::GetRows => {
                let t = input(0);
                let ids = self.i32s(node.inputs[1]).map_err(err)?;
                let (n, cols) = (t.shape.dims()[0], t.shape.cols());
                // A table a matmul also reads (a tied embedding) is read from its packed copy,
                // made here if need be: the mapped source gives its pages back, instead of
                // faulting in around every row looked up.
                if let Some(packed) = self.packed_table(node.inputs[0], t.dtype, n, cols) {
                    rows::check_ids(&ids, n)?;
                    let picked: Vec<u8> = ids.iter().filter_map(|&id| packed.row(id as usize)).flatten().collect();
                    let local: Vec<i32> = (0..ids.len() as i32).collect();
                    return rows::get_rows(&picked, t.dtype, ids.len(), cols, &local);
                }
                let table = self.bytes(node.inputs[0]).map_err(err)?;
                rows::get_rows(table, t.dtype, n, cols, &ids)
            }
            Op::Attention { n_heads, n_kv_heads, head_dim, scale, window } => {
                let q = f32_in(0)?;
                let k = self.kv(node.inputs[1]).map_err(err)?;
                let v = self.kv(node.inputs[2]).map_err(err)?;
                let pos = self.i32s(node.inputs[3]).map_err(err)?;
                let shape = AttentionShape {
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    scale,
                    window,
                    cache_rows: input(1).shape.dims()[0],
                };
                attention::attention(self.kernels.vec_fns(), &q, &k, &v, &pos, &shape, Layout::Contiguous)
            }
            Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, block_size } => {
                let q = f32_in(0)?;
                let k = self.kv(node.inputs[1]).map_err(err)?;
                let v = self.kv(node.inputs[2]).map_err(err)?;
                let pos = self.i32s(node.inputs[3]).map_err(err)?;
                let tables = self.i32s(node.inputs[4]).map_err(err)?;
                let shape = AttentionShape {
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    scale,
                    window,
                    cache_rows: input(1).shape.dims()[0],
                };
                let layout = Layout::Paged { tables: &tables, width: input(4).shape.cols(), block_size };
                attention::attention(self.kernels.vec_fns(), &q, &k, &v, &pos, &shape, layout)
            }
            Op::Leaf(_) | Op::Reshape | Op::SliceRows { .. } | Op::Store { .. } | Op::StoreRows => {
                Err(format!("{} is not computed", node.op.name()))
            }
            Op::Add | Op::Mul | Op::Scale { .. } | Op::SwiGlu | Op::GeGlu => {
                Err(format!("{} is computed by `elementwise`", node.op.name()))
            }
        }
    }
}
