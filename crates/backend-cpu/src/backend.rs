//! [`CpuBackend`]: the buffer table and the `Backend` contract.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tessera_backend::{Backend, BackendError, BufferId, DeviceInfo, DeviceKind, Graph, HostBytes, NodeId, Op};
use tessera_core::DType;

use crate::exec;
use crate::kernels::{Isa, Kernels};
use crate::memory::{cpu_name, meminfo, Storage};
use crate::packs::PackCache;

pub(crate) type Shared = Arc<RwLock<Storage>>;

#[derive(Default)]
struct Table {
    next: u64,
    buffers: HashMap<BufferId, Shared>,
}

/// Runs graphs on the host CPU with its own thread pool and the best SIMD kernels the CPU has.
pub struct CpuBackend {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    kernels: Kernels,
    table: Mutex<Table>,
    /// Weights repacked for the kernels that want another layout.
    packs: PackCache,
}

impl CpuBackend {
    /// A backend computing on `threads` threads (0: one per available core) with the best
    /// instruction set this CPU supports.
    pub fn new(threads: usize) -> CpuBackend {
        CpuBackend::build(threads, Kernels::new(Isa::detect()).unwrap_or(Kernels::SCALAR))
    }

    /// A backend restricted to `isa` (for tests and comparisons); an error when this CPU lacks it.
    pub fn with_isa(threads: usize, isa: Isa) -> Result<CpuBackend, BackendError> {
        let kernels = Kernels::new(isa).ok_or_else(|| BackendError::Device {
            backend: "cpu".into(),
            message: format!("this CPU does not support {}", isa.name()),
        })?;
        Ok(CpuBackend::build(threads, kernels))
    }

    fn build(threads: usize, kernels: Kernels) -> CpuBackend {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        // Without a pool of its own (thread creation failed) the backend still works, on
        // rayon's global pool.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tessera-cpu-{i}"))
            .build()
            .ok();
        CpuBackend { pool, threads, kernels, table: Mutex::new(Table::default()), packs: PackCache::default() }
    }

    /// Threads the backend computes on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The instruction set its kernels use.
    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement, so a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, storage: Storage) -> BufferId {
        let mut t = self.table();
        t.next += 1;
        let id = BufferId(t.next);
        t.buffers.insert(id, Arc::new(RwLock::new(storage)));
        id
    }

    pub(crate) fn buffer(&self, id: BufferId) -> Result<Shared, BackendError> {
        self.table().buffers.get(&id).cloned().ok_or(BackendError::UnknownBuffer(id))
    }

    /// Runs `f` on the backend's thread pool.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    pub(crate) fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub(crate) fn packs(&self) -> &PackCache {
        &self.packs
    }
}

fn check_range(
    buffer: BufferId,
    offset: usize,
    len: usize,
    size: usize,
) -> Result<std::ops::Range<usize>, BackendError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(BackendError::OutOfBounds { buffer, offset, len, size }),
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        let (memory_total, memory_free) = meminfo();
        let cpu = cpu_name().unwrap_or_else(|| std::env::consts::ARCH.to_string());
        DeviceInfo {
            backend: "cpu".into(),
            name: format!("{cpu} ({}, {} threads)", self.isa().name(), self.threads),
            kind: DeviceKind::Cpu,
            memory_total,
            memory_free,
        }
    }

    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        let storage = Storage::zeroed(bytes)
            .ok_or_else(|| BackendError::OutOfMemory { requested: bytes, detail: "host allocation failed".into() })?;
        Ok(self.insert(storage))
    }

    fn free(&self, buffer: BufferId) {
        // A graph still executing keeps its own reference; the memory goes when it finishes.
        self.table().buffers.remove(&buffer);
        self.packs.forget(buffer);
    }

    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        let shared = self.buffer(buffer)?;
        let mut storage = shared.write().unwrap_or_else(|e| e.into_inner());
        let size = storage.len();
        let range = check_range(buffer, offset, data.len(), size)?;
        let bytes = storage.bytes_mut().ok_or_else(|| BackendError::Device {
            backend: "cpu".into(),
            message: format!("buffer {buffer:?} maps read-only host memory"),
        })?;
        bytes[range].copy_from_slice(data);
        self.packs.forget(buffer);
        Ok(())
    }

    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        let shared = self.buffer(buffer)?;
        let storage = shared.read().unwrap_or_else(|e| e.into_inner());
        let range = check_range(buffer, offset, out.len(), storage.len())?;
        out.copy_from_slice(&storage.bytes()[range]);
        Ok(())
    }

    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
        let Some(n) = graph.nodes().get(node) else { return false };
        let input = |i: usize| n.inputs.get(i).map(|&id| graph.node(id).dtype);
        match n.op {
            Op::MatMul => input(1).is_some_and(|w| self.kernels.dot(w).is_some()),
            Op::GetRows => input(0).is_some_and(|t| t != DType::I32),
            _ => true,
        }
    }

    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        exec::execute(self, graph)
    }

    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        Some(Ok(self.insert(Storage::Host(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_round_trip_and_check_bounds() {
        let b = CpuBackend::new(1);
        let id = b.alloc(16).unwrap();
        b.upload(id, 4, &[1, 2, 3]).unwrap();
        let mut out = [9u8; 8];
        b.download(id, 2, &mut out).unwrap();
        assert_eq!(out, [0, 0, 1, 2, 3, 0, 0, 0]);
        assert!(matches!(b.upload(id, 15, &[1, 2]), Err(BackendError::OutOfBounds { .. })));
        assert!(matches!(b.download(id, usize::MAX, &mut out), Err(BackendError::OutOfBounds { .. })));
        b.free(id);
        b.free(id);
        assert!(matches!(b.download(id, 0, &mut out), Err(BackendError::UnknownBuffer(_))));
    }

    #[test]
    fn map_host_is_read_in_place_and_read_only() {
        let b = CpuBackend::new(1);
        let bytes: HostBytes = Arc::new(vec![5u8, 6, 7]);
        let id = b.map_host(bytes).unwrap().unwrap();
        let mut out = [0u8; 2];
        b.download(id, 1, &mut out).unwrap();
        assert_eq!(out, [6, 7]);
        assert!(b.upload(id, 0, &[1]).is_err());
    }

    #[test]
    fn info_names_the_isa_and_memory() {
        let b = CpuBackend::with_isa(2, Isa::Scalar).unwrap();
        let info = b.info();
        assert_eq!(info.backend, "cpu");
        assert!(info.name.contains("scalar") && info.name.contains("2 threads"), "{}", info.name);
        assert_eq!(b.threads(), 2);
    }
}
