//! The whole suite through `fallback::execute`: a primary that declines ops, the CPU running
//! them, and the graph cut into segments with values copied across. Stores always run on the
//! primary, so a PagedAttention on the fallback must read the caches its StoreRows just wrote.

use std::sync::Arc;

use tessera_backend::{fallback, Backend, BackendError, BufferId, DeviceInfo, Graph, HostBytes, NodeId, Op};
use tessera_backend_cpu::CpuBackend;
use tessera_backend_tests::{run_conformance, AlteredBackend};

/// A primary backend with a fallback behind it, seen as one backend.
struct Split {
    primary: Arc<dyn Backend>,
    fallback: Arc<dyn Backend>,
}

impl Backend for Split {
    fn info(&self) -> DeviceInfo {
        self.primary.info()
    }
    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        self.primary.alloc(bytes)
    }
    fn free(&self, buffer: BufferId) {
        self.primary.free(buffer)
    }
    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.primary.upload(buffer, offset, data)
    }
    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        self.primary.download(buffer, offset, out)
    }
    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
        self.primary.supports_op(graph, node) || self.fallback.supports_op(graph, node)
    }
    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        fallback::execute(&self.primary, &self.fallback, graph)
    }
    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        self.primary.map_host(bytes)
    }
}

fn split(declines: fn(&Op) -> bool) -> Arc<dyn Backend> {
    let primary: Arc<dyn Backend> =
        Arc::new(AlteredBackend::declining("partial", Arc::new(CpuBackend::new(1)), declines));
    Arc::new(Split { primary, fallback: Arc::new(CpuBackend::new(1)) })
}

#[test]
fn paged_attention_on_the_fallback_passes() {
    // Scale feeds a StoreRows in the suite: computed on one side, stored on the other.
    let report =
        run_conformance(split(|op| matches!(op, Op::PagedAttention { .. } | Op::Attention { .. } | Op::Scale { .. })));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
}

#[test]
fn everything_but_the_stores_on_the_fallback_passes() {
    // Leaves and views are free: every backend has them.
    let computes = |op: &Op| !op.is_store_target() && !matches!(op, Op::Reshape | Op::SliceRows { .. });
    let report = run_conformance(split(computes));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
}
