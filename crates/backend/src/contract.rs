use std::fmt;
use std::sync::Arc;

use crate::graph::{Graph, NodeId};

/// A handle to a block of device memory, issued by one backend and meaningful only to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    Accelerator,
}

/// What a backend tells the runtime about its device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Backend name as used on the command line (`cpu`, `cuda`, ...).
    pub backend: String,
    /// Human-readable device description.
    pub name: String,
    pub kind: DeviceKind,
    /// Total device memory in bytes, when known.
    pub memory_total: Option<u64>,
    /// Free device memory in bytes, when known.
    pub memory_free: Option<u64>,
}

/// Host memory a backend may use in place without copying (a memory-mapped model file).
pub trait HostMemory: AsRef<[u8]> + Send + Sync {
    /// Lets the operating system drop the resident pages of `range` of these bytes: called by a
    /// backend that has made its own copy in another layout and will seldom read them again.
    /// Only memory that reads back unchanged afterwards (a mapped file) acts on it; the default
    /// does nothing.
    fn release_pages(&self, _range: std::ops::Range<usize>) {}
}

impl HostMemory for Vec<u8> {}

/// Host memory handed to [`Backend::map_host`].
pub type HostBytes = Arc<dyn HostMemory>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("out of device memory: asked for {requested} bytes ({detail})")]
    OutOfMemory { requested: usize, detail: String },
    #[error("unknown buffer {0:?}")]
    UnknownBuffer(BufferId),
    #[error("access of {len} bytes at offset {offset} is outside buffer {buffer:?} of {size} bytes")]
    OutOfBounds { buffer: BufferId, offset: usize, len: usize, size: usize },
    #[error("node {node} ({op}) is not supported by the {backend} backend")]
    Unsupported { backend: String, node: NodeId, op: String },
    #[error("node {node} ({op}): {message}")]
    InvalidInput { node: NodeId, op: String, message: String },
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error("{backend} device error: {message}")]
    Device { backend: String, message: String },
}

/// The contract every device implements. Small on purpose: six required methods.
///
/// Invariants a backend keeps:
/// - A [`BufferId`] is valid from `alloc` (or `map_host`) until `free`; using it afterwards is an
///   error, never undefined behaviour.
/// - `execute` reads and writes only the buffers that the graph's `Leaf` and `Store` nodes name.
///   Intermediate results live in memory the backend manages itself.
/// - Every op for which `supports_op` returns true is computed within the tolerances the
///   conformance suite sets for it.
/// - Bad input (token ids out of range, positions past the cache) is an error, not a crash.
pub trait Backend: Send + Sync {
    /// Describes the device, including its memory.
    fn info(&self) -> DeviceInfo;

    /// Allocates `bytes` of device memory, zero-filled.
    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError>;

    /// Releases a buffer. Freeing an unknown id is a no-op.
    fn free(&self, buffer: BufferId);

    /// Copies `data` into `buffer` at byte `offset`.
    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError>;

    /// Copies `out.len()` bytes from `buffer` at byte `offset` into `out`.
    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError>;

    /// Whether this backend can compute `node` of `graph` (given its op, input types and shapes).
    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool;

    /// Computes every node of `graph`, in an order that respects its edges. When it returns Ok,
    /// every `Store` has landed in its destination buffer.
    fn execute(&self, graph: &Graph) -> Result<(), BackendError>;

    /// Wraps host memory as a buffer without copying, for devices that can read host memory
    /// directly (the CPU, integrated GPUs). `None` means "not possible here: alloc and upload".
    fn map_host(&self, _bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        None
    }

    /// Allocates a buffer and fills it with `data`.
    fn alloc_with(&self, data: &[u8]) -> Result<BufferId, BackendError> {
        let id = self.alloc(data.len())?;
        if let Err(e) = self.upload(id, 0, data) {
            self.free(id);
            return Err(e);
        }
        Ok(id)
    }
}

/// A buffer that frees itself when dropped, so an error path cannot leak device memory.
pub struct OwnedBuffer {
    backend: Arc<dyn Backend>,
    id: BufferId,
    len: usize,
}

impl OwnedBuffer {
    pub fn alloc(backend: &Arc<dyn Backend>, bytes: usize) -> Result<OwnedBuffer, BackendError> {
        let id = backend.alloc(bytes)?;
        Ok(OwnedBuffer { backend: backend.clone(), id, len: bytes })
    }

    pub fn with_data(backend: &Arc<dyn Backend>, data: &[u8]) -> Result<OwnedBuffer, BackendError> {
        let id = backend.alloc_with(data)?;
        Ok(OwnedBuffer { backend: backend.clone(), id, len: data.len() })
    }

    /// Takes ownership of an id the backend already issued.
    pub fn from_raw(backend: &Arc<dyn Backend>, id: BufferId, len: usize) -> OwnedBuffer {
        OwnedBuffer { backend: backend.clone(), id, len }
    }

    pub fn id(&self) -> BufferId {
        self.id
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn upload(&self, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.backend.upload(self.id, offset, data)
    }

    pub fn download(&self, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        self.backend.download(self.id, offset, out)
    }

    /// Downloads `count` f32 values starting at byte `offset`.
    pub fn download_f32(&self, offset: usize, count: usize) -> Result<Vec<f32>, BackendError> {
        let mut bytes = vec![0u8; count * 4];
        self.download(offset, &mut bytes)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

impl Drop for OwnedBuffer {
    fn drop(&mut self) {
        self.backend.free(self.id);
    }
}

impl fmt::Debug for OwnedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnedBuffer({:?} on {}, {} bytes)", self.id, self.backend.info().backend, self.len)
    }
}
