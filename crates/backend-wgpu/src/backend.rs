//! Device memory and the contract's buffer methods.

use std::collections::HashMap;
use std::sync::Mutex;

use tessera_backend::{Backend, BackendError, BufferId, DeviceInfo, DeviceKind, Graph, NodeId, Op};
use tessera_core::DType;

use crate::device::{self, AdapterSummary};
use crate::exec::Executor;
use crate::kernels::{self, Pipelines, ShaderFeatures};

/// A buffer the runtime owns, by id.
pub(crate) struct Stored {
    pub buffer: wgpu::Buffer,
    /// The size the runtime asked for (the wgpu buffer is rounded up to 4 bytes).
    pub len: usize,
}

/// Buffers up to this size keep a host copy of what was uploaded, so that per-step inputs
/// (positions) can be read without a round trip to the device.
const SHADOW_MAX: usize = 1 << 20;

pub(crate) struct State {
    pub buffers: HashMap<u64, Stored>,
    /// Host copies of small buffers, valid until a graph stores into them.
    pub shadows: HashMap<u64, Vec<u8>>,
    next_id: u64,
    pub pipelines: Pipelines,
    pub exec: Executor,
}

/// How the kernels round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Numerics {
    /// As the CPU backend rounds, where the adapter has f64 in shaders (greedy tokens equal the
    /// CPU's); plain f32 elsewhere.
    #[default]
    Exact,
    /// Within the conformance tolerances, without f64 (which most consumer GPUs run at 1/32 or
    /// less of their f32 rate): matmuls take f32 activations (no quantization pass), f16
    /// products where the adapter has f16, subgroup reductions where it has subgroups.
    Relaxed,
}

/// The wgpu backend on one adapter.
pub struct WgpuBackend {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    summary: AdapterSummary,
    kind: DeviceKind,
    pub(crate) numerics: Numerics,
    /// The largest subgroup size, when the kernels use subgroups.
    pub(crate) subgroup_max: Option<u32>,
    pub(crate) state: Mutex<State>,
    /// One graph at a time: graphs share the parameter and error buffers.
    running: Mutex<()>,
}

fn device_error(message: impl Into<String>) -> BackendError {
    BackendError::Device { backend: "wgpu".into(), message: message.into() }
}

/// A host-readable buffer of `len` bytes that copies land in.
pub(crate) fn staging_buffer(device: &wgpu::Device, len: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size: len,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Rounds up to wgpu's copy granularity.
pub(crate) fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl WgpuBackend {
    /// Opens adapter `index` of [`crate::list_adapters`], or the best one: a discrete GPU
    /// before an integrated one, before a virtual one, before a software driver.
    pub fn new(index: Option<usize>, numerics: Numerics) -> Result<WgpuBackend, BackendError> {
        let instance = device::instance();
        let adapters = device::adapters(&instance);
        if adapters.is_empty() {
            return Err(device_error(
                "no GPU adapter found: no Vulkan, Metal or DX12 driver answered (without a GPU, \
                 Mesa's software Vulkan driver lavapipe serves: apt install mesa-vulkan-drivers)",
            ));
        }
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        let index = match index {
            Some(i) if i < adapters.len() => i,
            Some(i) => {
                return Err(device_error(format!("no adapter {i}: {} found (see `tessera devices`)", adapters.len())))
            }
            None => (0..adapters.len()).min_by_key(|&i| rank(&adapters[i])).unwrap_or(0),
        };
        let adapter = &adapters[index];
        let summary = device::describe(index, adapter);
        let limits = adapter.limits();
        let offered = adapter.features();
        let features = match numerics {
            Numerics::Exact => {
                ShaderFeatures { f64: offered.contains(wgpu::Features::SHADER_F64), ..Default::default() }
            }
            Numerics::Relaxed => ShaderFeatures {
                f64: false,
                f16: offered.contains(wgpu::Features::SHADER_F16),
                subgroups: offered.contains(wgpu::Features::SUBGROUP),
            },
        };
        let mut required = wgpu::Features::empty();
        required.set(wgpu::Features::SHADER_F64, features.f64);
        required.set(wgpu::Features::SHADER_F16, features.f16);
        required.set(wgpu::Features::SUBGROUP, features.subgroups);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: required,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| device_error(format!("{}: cannot open the device: {e}", summary.name)))?;
        let kind = match adapter.get_info().device_type {
            wgpu::DeviceType::Cpu => DeviceKind::Cpu,
            _ => DeviceKind::Gpu,
        };
        let exec = Executor::new(&device);
        let state = State {
            buffers: HashMap::new(),
            shadows: HashMap::new(),
            next_id: 1,
            pipelines: Pipelines::new(features),
            exec,
        };
        let subgroup_max = features.subgroups.then(|| adapter.get_info().subgroup_max_size);
        Ok(WgpuBackend {
            device,
            queue,
            limits,
            summary,
            kind,
            numerics,
            subgroup_max,
            state: Mutex::new(state),
            running: Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the device to finish everything submitted so far.
    pub(crate) fn wait(&self) -> Result<(), BackendError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| device_error(format!("waiting for the device: {e}")))
    }

    /// Reads `range` (4-aligned) of a buffer back to the host.
    pub(crate) fn read_back(&self, buffer: &wgpu::Buffer, start: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let staging = staging_buffer(&self.device, len);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, start, &staging, 0, len);
        self.queue.submit([encoder.finish()]);
        self.read_staging(&staging)
    }

    /// Waits for everything submitted, then reads a staging buffer whose copy was among it.
    pub(crate) fn read_staging(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, BackendError> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| device_error("the read-back never completed"))?
            .map_err(|e| device_error(format!("mapping a read-back buffer: {e}")))?;
        let bytes = staging.get_mapped_range(..).map_err(|e| device_error(format!("{e:?}")))?.to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// The buffer behind `buffer` when bytes `offset..offset + len` lie inside it.
    pub(crate) fn checked_range(
        &self,
        buffer: BufferId,
        offset: usize,
        len: usize,
    ) -> Result<wgpu::Buffer, BackendError> {
        let st = self.lock();
        let stored = st.buffers.get(&buffer.0).ok_or(BackendError::UnknownBuffer(buffer))?;
        if offset.checked_add(len).is_none_or(|end| end > stored.len) {
            return Err(BackendError::OutOfBounds { buffer, offset, len, size: stored.len });
        }
        Ok(stored.buffer.clone())
    }
}

impl Backend for WgpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "wgpu".into(),
            name: format!(
                "{} ({}, {}, {} numerics)",
                self.summary.name,
                self.summary.api,
                self.summary.device_type,
                if self.numerics == Numerics::Relaxed { "relaxed" } else { "exact" }
            ),
            kind: self.kind,
            memory_total: None,
            memory_free: None,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        let size = align4(bytes.max(4)) as u64;
        if size > self.limits.max_buffer_size {
            return Err(BackendError::OutOfMemory {
                requested: bytes,
                detail: format!("the adapter's largest buffer is {} bytes", self.limits.max_buffer_size),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::OutOfMemory { requested: bytes, detail: e.to_string() });
        }
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.buffers.insert(id, Stored { buffer, len: bytes });
        if bytes <= SHADOW_MAX {
            st.shadows.insert(id, vec![0; bytes]);
        }
        Ok(BufferId(id))
    }

    fn free(&self, buffer: BufferId) {
        let mut st = self.lock();
        st.shadows.remove(&buffer.0);
        if let Some(stored) = st.buffers.remove(&buffer.0) {
            stored.buffer.destroy();
        }
    }

    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let target = self.checked_range(buffer, offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        if let Some(shadow) = self.lock().shadows.get_mut(&buffer.0) {
            shadow[offset..offset + data.len()].copy_from_slice(data);
        }
        if offset.is_multiple_of(4) && data.len().is_multiple_of(4) {
            self.queue.write_buffer(&target, offset as u64, data);
            return Ok(());
        }
        // wgpu copies whole 4-byte words: merge the partial words at the ends with what is there.
        let start = offset & !3;
        let end = align4(offset + data.len());
        let mut words = self.read_back(&target, start as u64, (end - start) as u64)?;
        words[offset - start..offset - start + data.len()].copy_from_slice(data);
        self.queue.write_buffer(&target, start as u64, &words);
        Ok(())
    }

    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        let source = self.checked_range(buffer, offset, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        let start = offset & !3;
        let end = align4(offset + out.len());
        let words = self.read_back(&source, start as u64, (end - start) as u64)?;
        out.copy_from_slice(&words[offset - start..offset - start + out.len()]);
        Ok(())
    }

    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
        let n = graph.node(node);
        let input = |i: usize| graph.node(n.inputs[i]);
        match n.op {
            Op::MatMul => kernels::decodes(input(1).dtype),
            Op::GetRows => kernels::decodes(input(0).dtype),
            Op::Attention { head_dim, .. } | Op::PagedAttention { head_dim, .. } => head_dim <= 512,
            Op::Store { .. } | Op::StoreRows => {
                let dst = input(1);
                let offset = crate::exec::storage_location(graph, n.inputs[1]).map_or(0, |(_, o)| o);
                match dst.dtype {
                    DType::F32 => offset.is_multiple_of(4),
                    // StoreRows writes whole words per row; Store handles any even offset.
                    _ if matches!(n.op, Op::StoreRows) => dst.shape.cols() % 2 == 0 && offset.is_multiple_of(4),
                    _ => offset.is_multiple_of(2),
                }
            }
            _ => true,
        }
    }

    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        crate::exec::execute(self, graph)
    }
}
