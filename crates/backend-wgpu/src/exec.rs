//! Running a graph: every node's result gets a place (a runtime buffer for leaves, stores and
//! views of them; a pooled scratch buffer for computed values, returned to the pool after its
//! last use), every computing node becomes one or two dispatches, and the whole graph goes to
//! the device as one command buffer. Bad input the kernels find (ids, positions, slots, table
//! entries out of range) comes back through a small error buffer read after the graph ran.

use std::collections::HashMap;

use tessera_backend::{Backend, BackendError, BufferId, Graph, NodeId, Op, RopeStyle};
use tessera_core::DType;

use crate::backend::{align4, staging_buffer, Numerics, WgpuBackend};
use crate::kernels::{self, Kernel, PointwiseOp, ERROR_BINDING};

/// Bytes between two parameter blocks (wgpu's largest uniform offset alignment).
const PARAM_STRIDE: usize = 256;
const PARAM_WORDS: usize = 16;
/// Workgroups per dimension that every adapter accepts.
const MAX_GROUPS: u32 = 65535;

/// What survives between graphs: the scratch pool, the parameter buffer and the error buffers.
pub(crate) struct Executor {
    /// Where the error words are copied at the end of each graph, in the same submission.
    error_readback: wgpu::Buffer,
    free: Vec<wgpu::Buffer>,
    /// Buffers for data written from the host (`queue.write_buffer` lands before the whole
    /// command buffer runs, so these never hold a value computed in the same graph).
    host_free: Vec<wgpu::Buffer>,
    params: Option<wgpu::Buffer>,
    errors: wgpu::Buffer,
}

impl Executor {
    pub(crate) fn new(device: &wgpu::Device) -> Executor {
        let errors = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("errors"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let error_readback = staging_buffer(device, 16);
        Executor { error_readback, free: Vec::new(), host_free: Vec::new(), params: None, errors }
    }

    /// The smallest pooled buffer of at least `bytes`, or a new one.
    fn take(&mut self, device: &wgpu::Device, bytes: usize) -> wgpu::Buffer {
        take_from(&mut self.free, device, bytes)
    }

    /// Like [`Executor::take`], for data written from the host.
    fn take_host(&mut self, device: &wgpu::Device, bytes: usize) -> wgpu::Buffer {
        take_from(&mut self.host_free, device, bytes)
    }
}

/// The smallest buffer of `free` holding at least `bytes`, or a new one.
fn take_from(free: &mut Vec<wgpu::Buffer>, device: &wgpu::Device, bytes: usize) -> wgpu::Buffer {
    let need = align4(bytes.max(4)) as u64;
    let best = (0..free.len()).filter(|&i| free[i].size() >= need).min_by_key(|&i| free[i].size());
    if let Some(i) = best {
        return free.swap_remove(i);
    }
    // Powers of two, so buffers freed by one step fit the next one's values.
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("scratch"),
        size: need.next_power_of_two().max(256),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Where a node's value lives.
#[derive(Clone)]
struct Place {
    buffer: wgpu::Buffer,
    offset: usize,
}

/// One storage binding: a window of a buffer around a tensor, and the tensor's byte offset
/// inside the window.
struct Operand {
    binding: u32,
    buffer: wgpu::Buffer,
    start: u64,
    size: u64,
}

enum Step {
    Dispatch { kernel: Kernel, params: [u32; PARAM_WORDS], operands: Vec<Operand>, groups: [u32; 3] },
    Copy { from: wgpu::Buffer, from_offset: u64, to: wgpu::Buffer, size: u64 },
}

fn device_error(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "wgpu".into(), message: message.into() }
}

/// Bytes of `count` values of `dtype` (a graph holds only whole blocks).
fn bytes_for(dtype: DType, count: usize) -> Result<usize, BackendError> {
    dtype.bytes_for(count).map_err(|e| device_error(e.to_string()))
}

/// The runtime buffer and byte offset a leaf, store or view reads, following views and stores.
pub(crate) fn storage_location(graph: &Graph, mut node: NodeId) -> Option<(BufferId, usize)> {
    let mut offset = 0;
    loop {
        let (base, delta) = graph.storage_of(node)?;
        offset += delta;
        match graph.node(base).op {
            Op::Leaf(t) => return Some((t.buffer, t.offset + offset)),
            _ => node = graph.node(base).inputs[1],
        }
    }
}

struct Recorder<'a> {
    backend: &'a WgpuBackend,
    graph: &'a Graph,
    places: Vec<Option<Place>>,
    steps: Vec<Step>,
    alignment: u64,
    max_binding: u64,
    errors: wgpu::Buffer,
    /// Scratch buffers by owning node, while in use.
    scratch: Vec<Option<wgpu::Buffer>>,
    /// Scratch buffers taken for one dispatch's temporaries (quantized activations).
    temporaries: Vec<wgpu::Buffer>,
    /// Scratch buffers filled from the host, held until the graph ran.
    held: Vec<wgpu::Buffer>,
    /// Rotary tables by positions and parameters, shared by the layers.
    rope_tables: HashMap<(BufferId, usize, usize, usize, u32, u32), wgpu::Buffer>,
}

impl Recorder<'_> {
    fn place(&self, node: NodeId) -> &Place {
        self.places[node].as_ref().expect("inputs are placed before their users")
    }

    /// A binding of `node`'s value, and its byte offset inside the binding.
    fn operand(&self, binding: u32, node: NodeId) -> Result<(Operand, u32), BackendError> {
        let n = self.graph.node(node);
        self.operand_bytes(binding, node, 0, bytes_for(n.dtype, n.shape.count())?)
    }

    /// A binding of bytes `from..from + bytes` of `node`'s value.
    fn operand_bytes(
        &self,
        binding: u32,
        node: NodeId,
        from: usize,
        bytes: usize,
    ) -> Result<(Operand, u32), BackendError> {
        let n = self.graph.node(node);
        let place = self.place(node);
        let bytes = bytes.max(4) as u64;
        let offset = (place.offset + from) as u64;
        let start = offset / self.alignment * self.alignment;
        let end = (align4((offset + bytes) as usize) as u64).min(place.buffer.size());
        let size = end - start;
        if size > self.max_binding {
            return Err(device_error(format!(
                "{} ({} bytes) is larger than the adapter's largest storage binding ({} bytes)",
                n.label, bytes, self.max_binding
            )));
        }
        let rel = u32::try_from(offset - start).map_err(|_| device_error("offset overflow"))?;
        Ok((Operand { binding, buffer: place.buffer.clone(), start, size }, rel))
    }

    /// Binds an F32 value; returns its offset in elements.
    fn f32_operand(&self, ops: &mut Vec<Operand>, binding: u32, node: NodeId) -> Result<u32, BackendError> {
        let (op, rel) = self.operand(binding, node)?;
        if rel % 4 != 0 {
            return Err(BackendError::InvalidInput {
                node,
                op: self.graph.node(node).op.name().into(),
                message: "32-bit values must start at a multiple of 4 bytes".into(),
            });
        }
        ops.push(op);
        Ok(rel / 4)
    }

    fn byte_operand(&self, ops: &mut Vec<Operand>, binding: u32, node: NodeId) -> Result<u32, BackendError> {
        let (op, rel) = self.operand(binding, node)?;
        ops.push(op);
        Ok(rel)
    }

    /// Row ranges `(first, count)` of a 2-D tensor whose windows each fit one binding.
    fn row_ranges(&self, rows: usize, row_bytes: usize) -> Vec<(usize, usize)> {
        let room = (self.max_binding - self.alignment - 4) as usize;
        let per = (room / row_bytes.max(1)).max(1);
        (0..rows.max(1)).step_by(per).map(|r0| (r0, per.min(rows - r0))).collect()
    }

    fn scratch_operand(&self, binding: u32, buffer: &wgpu::Buffer) -> Operand {
        Operand { binding, buffer: buffer.clone(), start: 0, size: buffer.size().min(self.max_binding) }
    }

    fn dispatch(&mut self, kernel: Kernel, params: [u32; PARAM_WORDS], mut operands: Vec<Operand>, groups: [u32; 3]) {
        if kernel.bindings().iter().any(|&(b, _)| b == ERROR_BINDING) {
            operands.push(Operand { binding: ERROR_BINDING, buffer: self.errors.clone(), start: 0, size: 16 });
        }
        self.steps.push(Step::Dispatch { kernel, params, operands, groups });
    }
}

/// Workgroup counts for `n` workgroups: x up to 65535, the rest in y.
fn grid(n: usize, z: usize) -> Result<[u32; 3], BackendError> {
    let n = n.max(1);
    let x = n.min(MAX_GROUPS as usize);
    let y = n.div_ceil(x);
    if y > MAX_GROUPS as usize || z > MAX_GROUPS as usize {
        return Err(device_error(format!("{n} x {z} workgroups are more than one dispatch takes")));
    }
    Ok([x as u32, y as u32, z.max(1) as u32])
}

fn u(v: usize) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| device_error(format!("{v} does not fit the kernels' 32-bit indices")))
}

pub(crate) fn execute(backend: &WgpuBackend, graph: &Graph) -> Result<(), BackendError> {
    if graph.is_empty() {
        return Ok(());
    }
    let errors = backend.lock().exec.errors.clone();
    let mut rec = Recorder {
        backend,
        graph,
        places: vec![None; graph.len()],
        steps: Vec::new(),
        alignment: backend.limits.min_storage_buffer_offset_alignment as u64,
        max_binding: backend.limits.max_storage_buffer_binding_size,
        errors,
        scratch: vec![None; graph.len()],
        temporaries: Vec::new(),
        held: Vec::new(),
        rope_tables: HashMap::new(),
    };
    let result = walk(&mut rec).and_then(|()| submit(backend, std::mem::take(&mut rec.steps)));
    // Every scratch buffer goes back to the pool, whatever happened.
    let mut st = backend.lock();
    st.exec.free.extend(rec.scratch.into_iter().flatten());
    st.exec.free.extend(rec.temporaries);
    st.exec.host_free.extend(rec.held);
    result
}

/// Gives every node a place and records its dispatches, returning scratch buffers to the pool
/// after their last reader.
fn walk(rec: &mut Recorder) -> Result<(), BackendError> {
    let graph = rec.graph;
    let backend = rec.backend;
    // The computed node whose scratch buffer holds each value (views share their source's).
    let mut owners: Vec<Option<NodeId>> = vec![None; graph.len()];
    let mut last_use: Vec<usize> = (0..graph.len()).collect();
    for (i, n) in graph.nodes().iter().enumerate() {
        owners[i] = match n.op {
            Op::Leaf(_) | Op::Store { .. } | Op::StoreRows => None,
            Op::Reshape | Op::SliceRows { .. } => owners[n.inputs[0]],
            _ => Some(i),
        };
        for &input in &n.inputs {
            if let Some(o) = owners[input] {
                last_use[o] = last_use[o].max(i);
            }
        }
    }
    for (i, n) in graph.nodes().iter().enumerate() {
        let place = match n.op {
            Op::Leaf(t) => {
                let len = bytes_for(n.dtype, n.shape.count())?;
                Place { buffer: backend.checked_range(t.buffer, t.offset, len)?, offset: t.offset }
            }
            Op::Reshape => rec.place(n.inputs[0]).clone(),
            Op::SliceRows { start, .. } => {
                let src = graph.node(n.inputs[0]);
                let row_values = src.shape.count() / src.shape.dims()[0].max(1);
                let mut p = rec.place(n.inputs[0]).clone();
                p.offset += bytes_for(src.dtype, start * row_values)?;
                p
            }
            Op::Store { .. } | Op::StoreRows => {
                // The device now writes this buffer: its host copy no longer holds.
                if let Some((buffer, _)) = storage_location(graph, i) {
                    backend.lock().shadows.remove(&buffer.0);
                }
                rec.place(n.inputs[1]).clone()
            }
            _ => {
                let buffer = backend.lock().exec.take(&backend.device, n.shape.count() * 4);
                rec.scratch[i] = Some(buffer.clone());
                Place { buffer, offset: 0 }
            }
        };
        rec.places[i] = Some(place);
        record(rec, i)?;
        let mut st = backend.lock();
        st.exec.free.append(&mut rec.temporaries);
        for o in n.inputs.iter().chain(std::iter::once(&i)).filter_map(|&x| owners[x]) {
            if last_use[o] == i {
                if let Some(b) = rec.scratch[o].take() {
                    st.exec.free.push(b);
                }
            }
        }
    }
    Ok(())
}

fn params(values: &[u32]) -> [u32; PARAM_WORDS] {
    let mut p = [0u32; PARAM_WORDS];
    p[..values.len()].copy_from_slice(values);
    p
}

/// Records the dispatches computing node `i` (none for leaves and views).
fn record(rec: &mut Recorder, i: NodeId) -> Result<(), BackendError> {
    let graph = rec.graph;
    let n = graph.node(i);
    let input = |k: usize| graph.node(n.inputs[k]);
    let mut ops = Vec::new();
    match n.op {
        Op::Leaf(_) | Op::Reshape | Op::SliceRows { .. } => {}
        Op::MatMul => {
            let w = input(1);
            let (m, k) = (w.shape.rows(), w.shape.cols());
            let rows = input(0).shape.count() / k.max(1);
            let row_bytes = bytes_for(w.dtype, k)?;
            let kind = kernels::vec_dot_kind(w.dtype);
            let kernel = match (w.dtype, rec.backend.numerics) {
                (DType::I8, _) => Kernel::MatMulI8,
                (dtype, Numerics::Relaxed) => Kernel::MatMulRelaxed(dtype),
                (dtype, Numerics::Exact) => match kind {
                    Some(2) => Kernel::MatMulKLanes(dtype),
                    Some(_) => Kernel::MatMulLanes(dtype),
                    None => Kernel::MatMul(dtype),
                },
            };
            // Activations quantized once for every weight row range.
            let quantized = match kernel {
                Kernel::MatMulI8 => Some(quantize_activations(rec, n.inputs[0], rows, k, None)?),
                Kernel::MatMulLanes(_) | Kernel::MatMulKLanes(_) => {
                    Some(quantize_activations(rec, n.inputs[0], rows, k, kind)?)
                }
                _ => None,
            };
            for (r0, count) in rec.row_ranges(m, row_bytes) {
                let mut ops = Vec::new();
                let (wop, w_off) = rec.operand_bytes(2, n.inputs[1], r0 * row_bytes, count * row_bytes)?;
                ops.push(wop);
                let y_off = rec.f32_operand(&mut ops, 3, i)?;
                let x_off = match &quantized {
                    Some((q, d)) => {
                        ops.push(rec.scratch_operand(1, q));
                        ops.push(rec.scratch_operand(4, d));
                        0
                    }
                    None => rec.f32_operand(&mut ops, 1, n.inputs[0])?,
                };
                let p = params(&[u(k)?, u(count)?, u(rows)?, w_off, u(row_bytes)?, x_off, y_off, u(m)?, u(r0)?]);
                let groups = match kernel {
                    Kernel::MatMulLanes(_) => grid(count.div_ceil(4), rows.div_ceil(4))?,
                    Kernel::MatMulKLanes(_) => grid(count.div_ceil(8), rows.div_ceil(4))?,
                    Kernel::MatMulRelaxed(_) => {
                        // One weight row per subgroup where there are subgroups: a workgroup takes
                        // at least 64 / (the largest subgroup size) rows.
                        let per_group = match rec.backend.subgroup_max {
                            Some(size) => (64 / size.max(1) as usize).max(1),
                            None => 1,
                        };
                        grid(count.div_ceil(per_group), rows.div_ceil(8))?
                    }
                    _ => grid(count, rows.div_ceil(8))?,
                };
                rec.dispatch(kernel, p, ops, groups);
            }
            if let Some((q, d)) = quantized {
                rec.temporaries.extend([q, d]);
            }
        }
        Op::GetRows => {
            let t = input(0);
            let (v, d) = (t.shape.rows(), t.shape.cols());
            let rows = input(1).shape.count();
            let row_bytes = bytes_for(t.dtype, d)?;
            for (r0, count) in rec.row_ranges(v, row_bytes) {
                let mut ops = Vec::new();
                let ids_off = rec.f32_operand(&mut ops, 1, n.inputs[1])?;
                let (top, t_off) = rec.operand_bytes(2, n.inputs[0], r0 * row_bytes, count * row_bytes)?;
                ops.push(top);
                let y_off = rec.f32_operand(&mut ops, 3, i)?;
                let p = params(&[u(d)?, u(count)?, u(rows)?, t_off, u(row_bytes)?, ids_off, y_off, u(r0)?, u(v)?]);
                let threads = rows * d.div_ceil(32);
                rec.dispatch(Kernel::GetRows(t.dtype), with_node(p, i)?, ops, grid(threads.div_ceil(64), 1)?);
            }
        }
        Op::Add | Op::Mul | Op::Scale { .. } | Op::SwiGlu | Op::GeGlu => {
            let (op, factor) = match n.op {
                Op::Add => (PointwiseOp::Add, 0.0),
                Op::Mul => (PointwiseOp::Mul, 0.0),
                Op::Scale { factor } => (PointwiseOp::Scale, factor),
                Op::SwiGlu => (PointwiseOp::SwiGlu, 0.0),
                _ => (PointwiseOp::GeGlu, 0.0),
            };
            let count = n.shape.count();
            let b = if n.inputs.len() > 1 { n.inputs[1] } else { n.inputs[0] };
            let a_off = rec.f32_operand(&mut ops, 1, n.inputs[0])?;
            let b_off = rec.f32_operand(&mut ops, 2, b)?;
            let y_off = rec.f32_operand(&mut ops, 3, i)?;
            let b_len = graph.node(b).shape.count().max(1);
            let p = params(&[u(count)?, u(b_len)?, a_off, b_off, y_off, factor.to_bits()]);
            rec.dispatch(Kernel::Pointwise(op), p, ops, grid(count.div_ceil(256), 1)?);
        }
        Op::RmsNorm { eps } => {
            let (rows, d) = (n.shape.count() / n.shape.cols().max(1), n.shape.cols());
            let x_off = rec.f32_operand(&mut ops, 1, n.inputs[0])?;
            let w_off = rec.f32_operand(&mut ops, 2, n.inputs[1])?;
            let y_off = rec.f32_operand(&mut ops, 3, i)?;
            let p = params(&[u(d)?, u(rows)?, x_off, w_off, y_off, eps.to_bits()]);
            rec.dispatch(Kernel::RmsNorm, p, ops, grid(rows, 1)?);
        }
        Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
            let (rows, cols) = (n.shape.rows(), n.shape.cols());
            let angles = rope_table(rec, n.inputs[1], rows, rot_dims, base, freq_scale)?;
            let x_off = rec.f32_operand(&mut ops, 1, n.inputs[0])?;
            ops.push(rec.scratch_operand(2, &angles));
            let y_off = rec.f32_operand(&mut ops, 3, i)?;
            let halves = u32::from(style == RopeStyle::Halves);
            let p = params(&[u(rows)?, u(cols)?, u(head_dim)?, u(rot_dims)?, 0, 0, halves, x_off, 0, y_off]);
            rec.dispatch(Kernel::Rope, p, ops, grid((rows * cols).div_ceil(256), 1)?);
        }
        Op::Attention { n_heads, n_kv_heads, head_dim, scale, window }
        | Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window, .. } => {
            let paged = matches!(n.op, Op::PagedAttention { .. });
            let k = input(1);
            let rows = input(0).shape.rows();
            let q_off = rec.f32_operand(&mut ops, 1, n.inputs[0])?;
            let k_off = rec.byte_operand(&mut ops, 2, n.inputs[1])?;
            let out_off = rec.f32_operand(&mut ops, 3, i)?;
            let v_off = rec.byte_operand(&mut ops, 4, n.inputs[2])?;
            let pos_off = rec.f32_operand(&mut ops, 5, n.inputs[3])?;
            let (block_size, blocks, tables_off) = match n.op {
                Op::PagedAttention { block_size, .. } => {
                    let t = input(4).shape.cols();
                    (u(block_size)?, u(t)?, rec.f32_operand(&mut ops, 6, n.inputs[4])?)
                }
                // Contiguous attention reads no table; the positions stand in for the binding.
                _ => (0, 0, rec.f32_operand(&mut ops, 6, n.inputs[3])?),
            };
            let window = window.map_or(0, |w| u32::try_from(w).unwrap_or(u32::MAX));
            let p = params(&[
                u(rows)?,
                u(n_heads)?,
                u(n_kv_heads)?,
                u(head_dim)?,
                scale.to_bits(),
                window,
                u(k.shape.rows())?,
                q_off,
                k_off,
                v_off,
                pos_off,
                out_off,
                block_size,
                blocks,
                tables_off,
            ]);
            let kernel = Kernel::Attention { paged, kv_f16: k.dtype == DType::F16 };
            rec.dispatch(kernel, with_node(p, i)?, ops, grid(rows * n_heads, 1)?);
        }
        Op::Store { .. } | Op::StoreRows => {
            let src = input(0);
            let dst = input(1);
            let d = dst.shape.cols();
            let rows = src.shape.count() / d.max(1);
            let (first, slotted) = match n.op {
                Op::Store { row } => (row, false),
                _ => (0, true),
            };
            let src_off = rec.f32_operand(&mut ops, 1, n.inputs[0])?;
            let slots_off = if slotted { rec.f32_operand(&mut ops, 2, n.inputs[2])? } else { 0 };
            if !slotted {
                // Store reads no slots; the source stands in for the binding.
                rec.f32_operand(&mut ops, 2, n.inputs[0])?;
            }
            let dst_off = rec.byte_operand(&mut ops, 3, n.inputs[1])?;
            let f16 = dst.dtype == DType::F16;
            let threads = match (f16, slotted) {
                (false, _) => rows * d,
                (true, false) => (dst_off as usize % 4 + 2 * rows * d).div_ceil(4),
                (true, true) => rows * d / 2,
            };
            let p = params(&[
                u(rows)?,
                u(d)?,
                dst_off,
                u(first)?,
                src_off,
                slots_off,
                u(dst.shape.rows())?,
                u32::from(slotted),
            ]);
            separate_aliases(rec, &mut ops);
            rec.dispatch(Kernel::Store { f16 }, with_node(p, i)?, ops, grid(threads.div_ceil(256), 1)?);
        }
    }
    Ok(())
}

/// The cosines and sines of every row's rotary angles, `[rows][rot_dims / 2][cos, sin]`,
/// computed as the CPU backend computes them: `theta` starts at the position and is multiplied
/// by `base^(-2 / rot_dims)` in f32 for each pair, the angle is `freq_scale · theta`, and cos
/// and sin are the C library's. Positions are read from the host copy of their buffer (or from
/// the device when there is none); layers sharing positions share the table.
fn rope_table(
    rec: &mut Recorder,
    pos: NodeId,
    rows: usize,
    rot_dims: usize,
    base: f32,
    freq_scale: f32,
) -> Result<wgpu::Buffer, BackendError> {
    let (buffer, offset) = storage_location(rec.graph, pos)
        .ok_or_else(|| device_error("rotary positions must be an input buffer, not a computed value"))?;
    let key = (buffer, offset, rows, rot_dims, base.to_bits(), freq_scale.to_bits());
    if let Some(table) = rec.rope_tables.get(&key) {
        return Ok(table.clone());
    }
    let mut bytes = vec![0u8; rows * 4];
    let shadow = rec.backend.lock().shadows.get(&buffer.0).map(|s| s[offset..offset + rows * 4].to_vec());
    match shadow {
        Some(b) => bytes = b,
        None => rec.backend.download(buffer, offset, &mut bytes)?,
    }
    let half = rot_dims / 2;
    let theta_scale = base.powf(-2.0 / rot_dims as f32);
    let mut table = Vec::with_capacity(rows * half * 8);
    for p in bytes.chunks_exact(4) {
        let mut theta = i32::from_le_bytes([p[0], p[1], p[2], p[3]]) as f32;
        for _ in 0..half {
            let angle = freq_scale * theta;
            table.extend_from_slice(&angle.cos().to_le_bytes());
            table.extend_from_slice(&angle.sin().to_le_bytes());
            theta *= theta_scale;
        }
    }
    let device = &rec.backend.device;
    let buffer = rec.backend.lock().exec.take_host(device, table.len());
    rec.backend.queue.write_buffer(&buffer, 0, &table);
    rec.held.push(buffer.clone());
    rec.rope_tables.insert(key, buffer.clone());
    Ok(buffer)
}

/// Quantizes the `rows` x `k` activations of `x` once for a matmul: per row to int8 for INT8
/// weights (`kind` None), else to the vec-dot blocks `kind` names (see `vec_dot_kind`). Gives
/// the codes (one i32 each) and the scales, in scratch buffers the caller returns.
fn quantize_activations(
    rec: &mut Recorder,
    x: NodeId,
    rows: usize,
    k: usize,
    kind: Option<u32>,
) -> Result<(wgpu::Buffer, wgpu::Buffer), BackendError> {
    let mut ops = Vec::new();
    let x_off = rec.f32_operand(&mut ops, 1, x)?;
    let (kernel, scale_bytes, groups, kind) = match kind {
        None => (Kernel::QuantizeI8, rows * 4, grid(rows, 1)?, 0),
        Some(kind) => {
            let blocks = rows * k / if kind == 2 { 256 } else { 32 };
            // Two f32 per 32 values (d, and s for Q8_1).
            (Kernel::QuantizeQ8, rows * k / 32 * 8, grid(blocks.div_ceil(64), 1)?, kind)
        }
    };
    let device = &rec.backend.device;
    let q = rec.backend.lock().exec.take(device, rows * k * 4);
    let d = rec.backend.lock().exec.take(device, scale_bytes);
    ops.push(rec.scratch_operand(3, &q));
    ops.push(rec.scratch_operand(4, &d));
    rec.dispatch(kernel, params(&[u(k)?, u(rows)?, kind, 0, 0, x_off]), ops, groups);
    Ok((q, d))
}

fn with_node(mut p: [u32; PARAM_WORDS], node: NodeId) -> Result<[u32; PARAM_WORDS], BackendError> {
    p[15] = u(node)?;
    Ok(p)
}

/// A dispatch may not read a buffer it also writes (wgpu forbids the aliasing): a read operand
/// in the written buffer is copied to scratch first.
fn separate_aliases(rec: &mut Recorder, ops: &mut [Operand]) {
    let Some(written) = ops.iter().find(|o| o.binding == 3).map(|o| o.buffer.clone()) else { return };
    for op in ops.iter_mut().filter(|o| o.binding != 3 && o.buffer == written) {
        let copy = rec.backend.lock().exec.take(&rec.backend.device, op.size as usize);
        rec.steps.push(Step::Copy { from: op.buffer.clone(), from_offset: op.start, to: copy.clone(), size: op.size });
        op.buffer = copy.clone();
        op.start = 0;
        rec.temporaries.push(copy);
    }
}

/// Encodes every step into one command buffer, submits it, waits, and turns what the kernels
/// reported into an error.
fn submit(backend: &WgpuBackend, steps: Vec<Step>) -> Result<(), BackendError> {
    let device = &backend.device;
    let dispatches = steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count();
    let mut st = backend.lock();
    let bytes = (dispatches.max(1) * PARAM_STRIDE) as u64;
    if st.exec.params.as_ref().is_none_or(|b| b.size() < bytes) {
        st.exec.params = Some(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: bytes.next_power_of_two(),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }));
    }
    let params_buffer = st.exec.params.clone().expect("created above");
    let errors = st.exec.errors.clone();
    let error_readback = st.exec.error_readback.clone();
    let mut block = vec![0u8; dispatches * PARAM_STRIDE];
    let mut slot = 0;
    for s in &steps {
        if let Step::Dispatch { params, .. } = s {
            for (j, w) in params.iter().enumerate() {
                block[slot * PARAM_STRIDE + 4 * j..][..4].copy_from_slice(&w.to_le_bytes());
            }
            slot += 1;
        }
    }
    backend.queue.write_buffer(&params_buffer, 0, &block);
    let mut reset = [0u8; 16];
    reset[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    backend.queue.write_buffer(&errors, 0, &reset);

    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = device.create_command_encoder(&Default::default());
    let mut slot = 0u64;
    let mut pass: Option<wgpu::ComputePass<'static>> = None;
    for s in &steps {
        match s {
            Step::Copy { from, from_offset, to, size } => {
                drop(pass.take());
                encoder.copy_buffer_to_buffer(from, *from_offset, to, 0, *size);
            }
            Step::Dispatch { kernel, operands, groups, .. } => {
                let pipeline = st.pipelines.get(device, *kernel);
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params_buffer,
                        offset: slot * PARAM_STRIDE as u64,
                        size: std::num::NonZeroU64::new((PARAM_WORDS * 4) as u64),
                    }),
                }];
                for o in operands {
                    entries.push(wgpu::BindGroupEntry {
                        binding: o.binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &o.buffer,
                            offset: o.start,
                            size: std::num::NonZeroU64::new(o.size),
                        }),
                    });
                }
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.layout,
                    entries: &entries,
                });
                let p = pass.get_or_insert_with(|| encoder.begin_compute_pass(&Default::default()).forget_lifetime());
                p.set_pipeline(&pipeline.pipeline);
                p.set_bind_group(0, &bind_group, &[]);
                p.dispatch_workgroups(groups[0], groups[1], groups[2]);
                slot += 1;
            }
        }
    }
    drop(pass);
    drop(st);
    // The error words travel back with the graph: one submission, one wait.
    encoder.copy_buffer_to_buffer(&errors, 0, &error_readback, 0, 16);
    backend.queue.submit([encoder.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(device_error(e.to_string()));
    }
    let words = backend.read_staging(&error_readback)?;
    let word = |k: usize| u32::from_le_bytes(words[4 * k..4 * k + 4].try_into().expect("4 bytes"));
    match word(0) {
        0 => Ok(()),
        kind => {
            let node = word(1) as usize;
            let op = backend_op_name(kind);
            Err(BackendError::InvalidInput { node, op: op.0.into(), message: op.1.into() })
        }
    }
}

/// The op and message behind an error kind the kernels report.
fn backend_op_name(kind: u32) -> (&'static str, &'static str) {
    match kind {
        1 => ("get_rows", "a row id is outside the table"),
        2 => ("attention", "a position is negative or past the KV cache"),
        3 => ("paged_attention", "a block table entry points outside the cache"),
        4 => ("store_rows", "a slot is outside the destination or repeated"),
        _ => ("unknown", "the device reported an unknown error"),
    }
}
