//! The backend contract: what a device must provide for Tessera to run models on it.
//!
//! A backend owns device memory ([`BufferId`]s it hands out), moves bytes in and out of it, and
//! executes whole computation [`Graph`]s, so that an accelerator sees every op of a forward pass
//! at once and can fuse and schedule them. [`Backend::supports_op`] lets the runtime send ops a
//! backend lacks to the CPU instead (see [`fallback`]).
//!
//! The semantics of every op are defined on [`Op`]; the conformance suite
//! (`tessera-backend-tests`) checks a backend against a scalar reference of those semantics.
//! Weights keep their stored type (quantized blocks included) in device memory: `MatMul` and
//! `GetRows` accept any [`DType`] as their weight operand.

mod contract;
pub mod fallback;
mod graph;

pub use contract::{Backend, BackendError, BufferId, DeviceInfo, DeviceKind, HostBytes, HostMemory, OwnedBuffer};
pub use graph::{Graph, GraphBuilder, GraphError, Node, NodeId, Op, RopeStyle, TensorRef};
pub use tessera_core::{DType, Shape};
