//! A backend that wraps another and misbehaves on purpose: it declines some ops, or computes
//! some ops differently. Tests use it to prove that the suite fails where it should and that
//! the CPU fallback takes over declined ops.

use std::sync::Arc;

use tessera_backend::{Backend, BackendError, BufferId, DeviceInfo, Graph, GraphBuilder, HostBytes, NodeId, Op};

pub struct AlteredBackend {
    name: &'static str,
    inner: Arc<dyn Backend>,
    declines: fn(&Op) -> bool,
    change: fn(&Op) -> Op,
}

impl AlteredBackend {
    /// `inner`, reporting itself as `name`, that declines (and refuses to execute) every op for
    /// which `declines` is true.
    pub fn declining(name: &'static str, inner: Arc<dyn Backend>, declines: fn(&Op) -> bool) -> AlteredBackend {
        AlteredBackend { name, inner, declines, change: Op::clone }
    }

    /// `inner` computing every op as `change` rewrites it (a wrong constant, say).
    pub fn changing(name: &'static str, inner: Arc<dyn Backend>, change: fn(&Op) -> Op) -> AlteredBackend {
        AlteredBackend { name, inner, declines: |_| false, change }
    }
}

impl Backend for AlteredBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo { backend: self.name.to_string(), ..self.inner.info() }
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
        !(self.declines)(&graph.node(node).op) && self.inner.supports_op(graph, node)
    }
    fn execute(&self, graph: &Graph) -> Result<(), BackendError> {
        let mut g = GraphBuilder::new();
        for (id, node) in graph.nodes().iter().enumerate() {
            if (self.declines)(&node.op) {
                return Err(BackendError::Unsupported {
                    backend: self.name.into(),
                    node: id,
                    op: node.op.name().into(),
                });
            }
            // Inputs precede their users, so ids stay the same in the rebuilt graph.
            g.label(node.label.clone()).add_op(&(self.change)(&node.op), &node.inputs, node.dtype, &node.shape)?;
        }
        self.inner.execute(&g.finish())
    }
    fn map_host(&self, bytes: HostBytes) -> Option<Result<BufferId, BackendError>> {
        self.inner.map_host(bytes)
    }
}
