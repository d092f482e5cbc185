//! [`ReferenceBackend`]: the scalar reference behind the `Backend` contract. Slow and exact; it
//! proves the suite's cases and tolerances are self-consistent, and gives other crates a
//! backend to test against without SIMD in the way.

use std::sync::Mutex;

use tessera_backend::{Backend, BackendError, BufferId, DeviceInfo, DeviceKind, Graph, HostBytes, NodeId};

use crate::reference::{evaluate, HostMemory};

/// Host buffers plus [`evaluate`]: a complete, slow, exact backend.
#[derive(Default)]
pub struct ReferenceBackend {
    state: Mutex<(u64, HostMemory)>,
}

impl ReferenceBackend {
    pub fn new() -> ReferenceBackend {
        ReferenceBackend::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut u64, &mut HostMemory) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, mem) = &mut *guard;
        f(next, mem)
    }
}

fn range(buffer: BufferId, offset: usize, len: usize, size: usize) -> Result<std::ops::Range<usize>, BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(BackendError::OutOfBounds { buffer, offset, len, size }),
    }
}

impl Backend for ReferenceBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "reference".into(),
            name: "scalar reference".into(),
            kind: DeviceKind::Cpu,
            memory_total: None,
            memory_free: None,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        self.with(|next, mem| {
            *next += 1;
            mem.insert(BufferId(*next), vec![0; bytes]);
            Ok(BufferId(*next))
        })
    }

    fn free(&self, buffer: BufferId) {
        self.with(|_, mem| mem.remove(buffer));
    }

    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.with(|_, mem| {
            let b = mem.get_mut(buffer).ok_or(BackendError::UnknownBuffer(buffer))?;
            let r = range(buffer, offset, data.len(), b.len())?;
            b[r].copy_from_slice(data);
            Ok(())
        })
    }

    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        self.with(|_, mem| {
            let b = mem.get(buffer).ok_or(BackendError::UnknownBuffer(buffer))?;
            let r = range(buffer, offset, out.len(), b.len())?;
            out.copy_from_slice(&b[r]);
            Ok(())
        })
    }

    fn supports_op(&self, _graph: &Graph, _node: NodeId) -> bool {
        true
    }

    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        self.with(|_, mem| {
            // Work on a copy so a failing graph leaves the buffers untouched.
            let mut scratch = mem.clone();
            evaluate(graph, &mut scratch).map_err(|e| BackendError::InvalidInput {
                node: e.node,
                op: e.op.to_string(),
                message: e.message,
            })?;
            *mem = scratch;
            Ok(())
        })
    }

    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        Some(self.with(|next, mem| {
            *next += 1;
            mem.insert(BufferId(*next), (*bytes).as_ref().to_vec());
            Ok(BufferId(*next))
        }))
    }
}
