//! The backend contract on ONNX Runtime. A graph handed to `execute` is translated to ONNX
//! (`tessera-onnx`) once per structure, compiled into a session by the chosen execution provider
//! (CPU, Qualcomm QNN, Huawei CANN, Intel OpenVINO: the vendors' own graph compilers) and run;
//! later graphs of the same structure (every decode step: positions, rows and masks are inputs)
//! reuse the session. Buffers live in host memory; the rows a graph stores come back as outputs
//! and are written on the host.
//!
//! ONNX Runtime is loaded at run time (see [`runtime::runtime_library`]): the binary builds and
//! runs without it, and says what is missing when asked for this backend.

mod backend;
pub mod exported;
pub mod runtime;

pub use backend::{OrtBackend, OrtOptions, Provider};
pub use exported::ExportedModel;
