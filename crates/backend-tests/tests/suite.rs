//! The suite checked against itself: the reference backend passes it, a backend with a subtly
//! wrong op fails it exactly where it should, and declined ops are listed, not failed.

use std::sync::Arc;

use tessera_backend::{
    Backend, BackendError, BufferId, DeviceInfo, Graph, GraphBuilder, GraphError, HostBytes, NodeId, Op,
};
use tessera_backend_cpu::CpuBackend;
use tessera_backend_tests::{run_conformance, ReferenceBackend};

#[test]
fn reference_backend_passes() {
    let report = run_conformance(Arc::new(ReferenceBackend::new()));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
    assert!(report.passed > 500, "{report}");
}

/// Rebuilds `graph` node by node with `change` applied to each op (ids stay the same).
fn rebuild(graph: &Graph, change: impl Fn(&Op) -> Op) -> Result<Graph, GraphError> {
    let mut g = GraphBuilder::new();
    for node in graph.nodes() {
        let i = &node.inputs;
        g.label(node.label.clone());
        match change(&node.op) {
            Op::Leaf(t) => g.leaf(t, node.dtype, node.shape.clone()),
            Op::GetRows => g.get_rows(i[0], i[1]),
            Op::MatMul => g.mat_mul(i[0], i[1]),
            Op::Add => g.add(i[0], i[1]),
            Op::Mul => g.mul(i[0], i[1]),
            Op::Scale { factor } => g.scale(i[0], factor),
            Op::RmsNorm { eps } => g.rms_norm(i[0], i[1], eps),
            Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
                g.rope(i[0], i[1], head_dim, rot_dims, base, freq_scale, style)
            }
            Op::SwiGlu => g.swiglu(i[0], i[1]),
            Op::GeGlu => g.geglu(i[0], i[1]),
            Op::Attention { n_heads, n_kv_heads, head_dim, scale, window } => {
                g.attention(i[0], i[1], i[2], i[3], n_heads, n_kv_heads, head_dim, scale, window)
            }
            Op::Store { row } => g.store(i[0], i[1], row),
            Op::SliceRows { start, len } => g.slice_rows(i[0], start, len),
            Op::Reshape => g.reshape(i[0], node.shape.clone()),
        }?;
    }
    Ok(g.finish())
}

/// The CPU backend with a twist: `execute` rebuilds the graph through `change`, and
/// `supports_op` declines the ops `declined` names.
struct Twisted {
    inner: CpuBackend,
    change: fn(&Op) -> Op,
    declined: &'static str,
}

impl Backend for Twisted {
    fn info(&self) -> DeviceInfo {
        self.inner.info()
    }
    fn alloc(&self, bytes: usize) -> Result<BufferId, BackendError> {
        self.inner.alloc(bytes)
    }
    fn free(&self, buffer: BufferId) {
        self.inner.free(buffer)
    }
    fn upload(&self, buffer: BufferId, offset: usize, data: &[u8]) -> Result<(), BackendError> {
        self.inner.upload(buffer, offset, data)
    }
    fn download(&self, buffer: BufferId, offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
        self.inner.download(buffer, offset, out)
    }
    fn supports_op(&self, graph: &Graph, node: NodeId) -> bool {
        graph.node(node).op.name() != self.declined && self.inner.supports_op(graph, node)
    }
    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        self.inner.execute(&rebuild(graph, self.change)?)
    }
    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        self.inner.map_host(bytes)
    }
}

#[test]
fn a_slightly_wrong_rope_fails() {
    // A 1% error in the frequency base: invisible at position 0, clear at position 1000.
    let change = |op: &Op| match *op {
        Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
            Op::Rope { head_dim, rot_dims, base: base * 1.01, freq_scale, style }
        }
        ref other => other.clone(),
    };
    let report = run_conformance(Arc::new(Twisted { inner: CpuBackend::new(2), change, declined: "" }));
    assert!(!report.is_ok(), "{report}");
    let rope_failures = report.failures.iter().filter(|f| f.case.starts_with("rope")).count();
    assert!(rope_failures >= 20, "{report}");
    for f in &report.failures {
        assert!(f.case.starts_with("rope") || f.case.starts_with("block"), "unexpected failure: {f}");
        assert!(f.max_error > 2e-3, "{f}");
        if f.case.starts_with("rope") {
            assert!(f.op.starts_with("rope") && f.node.is_some(), "{f}");
        }
    }
}

#[test]
fn declined_ops_are_listed_not_failed() {
    let report =
        run_conformance(Arc::new(Twisted { inner: CpuBackend::new(2), change: Op::clone, declined: "attention" }));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.iter().any(|u| u.starts_with("attention f16")), "{report}");
    assert!(report.unsupported.iter().all(|u| u.contains("attention")), "{report}");
}
