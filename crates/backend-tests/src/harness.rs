//! One conformance case: a small graph over fresh buffers, run on the backend and on the
//! reference, with every stored buffer compared afterwards.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tessera_backend::{
    Backend, BackendError, BufferId, Graph, GraphBuilder, HostBytes, NodeId, Op, OwnedBuffer, TensorRef,
};
use tessera_core::DType;

use crate::reference::{decode, evaluate, HostMemory, RefValue};
use crate::report::{ConformanceReport, Failure};

/// Leaves sit at this byte offset of their buffer, so offsets are exercised everywhere (GGUF
/// aligns tensors to 32 bytes).
const LEAF_OFFSET: usize = 32;

/// What an output buffer is filled with before the graph runs, so unwritten rows show up.
const SENTINEL: f32 = 7.0;

pub(crate) type CaseResult<T> = Result<T, String>;

pub(crate) fn graph_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(crate) struct Case<'a> {
    backend: &'a Arc<dyn Backend>,
    group: String,
    name: String,
    tol: f32,
    pub g: GraphBuilder,
    host: HostMemory,
    buffers: Vec<OwnedBuffer>,
    subject: Option<NodeId>,
}

impl<'a> Case<'a> {
    pub(crate) fn new(backend: &'a Arc<dyn Backend>, group: &str, name: String, tol: f32) -> Case<'a> {
        Case {
            backend,
            group: group.to_string(),
            name,
            tol,
            g: GraphBuilder::new(),
            host: HostMemory::default(),
            buffers: Vec::new(),
            subject: None,
        }
    }

    fn buffer(&mut self, bytes: Vec<u8>) -> CaseResult<BufferId> {
        let b = OwnedBuffer::with_data(self.backend, &bytes).map_err(|e| format!("alloc failed: {e}"))?;
        let id = b.id();
        self.host.insert(id, bytes);
        self.buffers.push(b);
        Ok(id)
    }

    /// A leaf of `dtype` and `shape` holding `data`, in a buffer of its own.
    pub(crate) fn leaf(&mut self, dtype: DType, shape: &[usize], data: &[u8]) -> CaseResult<NodeId> {
        let mut bytes = vec![0xA5u8; LEAF_OFFSET];
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&[0x5Au8; 16]);
        let id = self.buffer(bytes)?;
        self.g.leaf(TensorRef { buffer: id, offset: LEAF_OFFSET }, dtype, shape).map_err(graph_err)
    }

    /// Like [`Case::leaf`], but the buffer is host memory handed over with `map_host`; `None`
    /// when the backend does not offer it.
    pub(crate) fn mapped_leaf(&mut self, dtype: DType, shape: &[usize], data: &[u8]) -> CaseResult<Option<NodeId>> {
        let mut bytes = vec![0xA5u8; LEAF_OFFSET];
        bytes.extend_from_slice(data);
        let host: HostBytes = Arc::new(bytes.clone());
        let id = match self.backend.map_host(host) {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("map_host failed: {e}")),
            Some(Ok(id)) => id,
        };
        self.buffers.push(OwnedBuffer::from_raw(self.backend, id, bytes.len()));
        self.host.insert(id, bytes);
        let leaf = self.g.leaf(TensorRef { buffer: id, offset: LEAF_OFFSET }, dtype, shape).map_err(graph_err)?;
        Ok(Some(leaf))
    }

    pub(crate) fn f32(&mut self, shape: &[usize], v: &[f32]) -> CaseResult<NodeId> {
        self.leaf(DType::F32, shape, &crate::data::f32_bytes(v))
    }

    pub(crate) fn ids(&mut self, v: &[i32]) -> CaseResult<NodeId> {
        self.leaf(DType::I32, &[v.len()], &crate::data::i32_bytes(v))
    }

    /// An F32 or F16 destination of `shape`, filled with a sentinel.
    pub(crate) fn destination(&mut self, dtype: DType, shape: &[usize]) -> CaseResult<NodeId> {
        let n: usize = shape.iter().product();
        let bytes = tessera_quant::quantize_to_vec(dtype, &vec![SENTINEL; n]).map_err(graph_err)?;
        self.leaf(dtype, shape, &bytes)
    }

    /// Stores `node` (viewed as 2-D) into a new F32 output buffer.
    pub(crate) fn output(&mut self, node: NodeId) -> CaseResult<NodeId> {
        let shape = self.g.shape(node).clone();
        let (rows, cols) = (shape.rows(), shape.cols());
        let src = if shape.rank() == 2 { node } else { self.g.reshape(node, [rows, cols]).map_err(graph_err)? };
        let dst = self.destination(DType::F32, &[rows, cols])?;
        self.g.store(src, dst, 0).map_err(graph_err)
    }

    /// Marks the node under test, named in failures.
    pub(crate) fn subject(&mut self, node: NodeId) -> NodeId {
        self.subject = Some(node);
        node
    }

    fn failure(&self, graph: &Graph, error: f32, message: impl Into<String>) -> Failure {
        let node = self.subject;
        let (op, shape) = node.map_or((String::new(), String::new()), |n| {
            let dtypes: Vec<String> = graph.input_dtypes(n).iter().map(|d| d.to_string()).collect();
            (format!("{}({})", graph.node(n).op.name(), dtypes.join(", ")), graph.node(n).shape.to_string())
        });
        Failure {
            case: self.name.clone(),
            node,
            op,
            shape,
            max_error: error,
            tolerance: self.tol,
            message: message.into(),
        }
    }

    /// Whether the backend declines any node; if so the case is listed as unsupported.
    fn unsupported(&self, graph: &Graph, report: &mut ConformanceReport) -> bool {
        let declined: Vec<String> = (0..graph.len())
            .filter(|&id| !matches!(graph.node(id).op, Op::Leaf(_)))
            .filter(|&id| !self.backend.supports_op(graph, id))
            .map(|id| {
                let dtypes: Vec<String> = graph.input_dtypes(id).iter().map(|d| d.to_string()).collect();
                format!("{}({})", graph.node(id).op.name(), dtypes.join(", "))
            })
            .collect();
        if declined.is_empty() {
            return false;
        }
        report.unsupported.push(format!("{}: {}", self.name, declined.join(", ")));
        true
    }

    fn execute(&self, graph: &Graph) -> Result<Result<(), BackendError>, String> {
        catch_unwind(AssertUnwindSafe(|| self.backend.execute(graph))).map_err(|p| {
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            format!("backend panicked: {}", msg.unwrap_or_default())
        })
    }

    /// Builds the case with `build`, then [`Case::run`]s it.
    pub(crate) fn check(mut self, report: &mut ConformanceReport, build: impl FnOnce(&mut Case) -> CaseResult<()>) {
        match build(&mut self) {
            Ok(()) => self.run(report),
            Err(e) => report.fail_contract(&self.name, format!("could not set the case up: {e}")),
        }
    }

    /// Builds the case with `build`, then runs it expecting an error ([`Case::run_expect_error`]).
    pub(crate) fn check_error(
        mut self,
        report: &mut ConformanceReport,
        build: impl FnOnce(&mut Case) -> CaseResult<()>,
    ) {
        match build(&mut self) {
            Ok(()) => self.run_expect_error(report),
            Err(e) => report.fail_contract(&self.name, format!("could not set the case up: {e}")),
        }
    }

    /// Runs the graph on both sides and compares every buffer it stores into.
    fn run(self, report: &mut ConformanceReport) {
        let graph = self.g.graph().clone();
        if self.unsupported(&graph, report) {
            return;
        }
        let mut expected = self.host.clone();
        if let Err(e) = evaluate(&graph, &mut expected) {
            let f = self.failure(&graph, f32::INFINITY, format!("the reference rejected the case (suite bug): {e}"));
            return report.fail(f);
        }
        match self.execute(&graph) {
            Err(panic) => return report.fail(self.failure(&graph, f32::INFINITY, panic)),
            Ok(Err(e)) => return report.fail(self.failure(&graph, f32::INFINITY, format!("execute failed: {e}"))),
            Ok(Ok(())) => {}
        }
        let mut worst = 0f32;
        for (leaf, tensor) in stored_leaves(&graph) {
            let node = graph.node(leaf);
            let range = tensor.offset..tensor.offset + node.dtype.bytes_for(node.shape.count()).unwrap_or(0);
            let mut got = vec![0u8; range.len()];
            if let Err(e) = self.backend.download(tensor.buffer, range.start, &mut got) {
                return report.fail(self.failure(&graph, f32::INFINITY, format!("download failed: {e}")));
            }
            let want = expected.get(tensor.buffer).map(|b| &b[range]).unwrap_or_default();
            let (Ok(RefValue::F32(got)), Ok(RefValue::F32(want))) =
                (decode(node.dtype, &got), decode(node.dtype, want))
            else {
                return report.fail(self.failure(&graph, f32::INFINITY, "cannot decode a stored buffer"));
            };
            let (err, at) = max_error(&got, &want);
            worst = worst.max(err);
            if err > self.tol || err.is_nan() {
                let message = match at {
                    Some(i) => format!("stored into leaf {leaf}: element {i} is {} but should be {}", got[i], want[i]),
                    None => format!("stored into leaf {leaf}: wrong values"),
                };
                return report.fail(self.failure(&graph, err, message));
            }
        }
        report.record(&self.group, worst, self.tol);
        report.passed += 1;
    }

    /// Runs a graph with bad input: the backend must return an error, not panic and not succeed.
    fn run_expect_error(self, report: &mut ConformanceReport) {
        let graph = self.g.graph().clone();
        if self.unsupported(&graph, report) {
            return;
        }
        match self.execute(&graph) {
            Err(panic) => report.fail(self.failure(&graph, f32::INFINITY, format!("bad input: {panic}"))),
            Ok(Ok(())) => {
                report.fail(self.failure(&graph, f32::INFINITY, "bad input was accepted instead of an error"))
            }
            Ok(Err(_)) => {
                report.record(&self.group, 0.0, 0.0);
                report.passed += 1;
            }
        }
    }
}

/// The leaves written by `Store` and `StoreRows` nodes, each once.
fn stored_leaves(graph: &Graph) -> Vec<(NodeId, TensorRef)> {
    let mut out: Vec<(NodeId, TensorRef)> = Vec::new();
    for node in graph.nodes() {
        if node.op.is_store() {
            let mut id = node.inputs[1];
            while graph.node(id).op.is_store() {
                id = graph.node(id).inputs[1];
            }
            if let Op::Leaf(t) = graph.node(id).op {
                if !out.iter().any(|(l, _)| *l == id) {
                    out.push((id, t));
                }
            }
        }
    }
    out
}

/// The largest absolute difference relative to the largest reference magnitude, and where.
pub(crate) fn max_error(got: &[f32], want: &[f32]) -> (f32, Option<usize>) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = (0f32, None);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = if g.is_finite() != w.is_finite() { f32::INFINITY } else { (g - w).abs() / scale };
        if d > worst.0 || (d.is_nan() && !worst.0.is_nan()) {
            worst = (d, Some(i));
        }
    }
    if got.len() != want.len() {
        worst = (f32::INFINITY, None);
    }
    worst
}
