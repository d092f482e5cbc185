//! Tessera graphs as ONNX models, for runtimes built around a graph compiler (ONNX Runtime and
//! the execution providers behind it: Qualcomm QNN, Huawei CANN, Intel OpenVINO).
//!
//! [`translate`] turns one [`tessera_backend::Graph`] into an ONNX model whose only effects are
//! the graph's stores: every `Store`/`StoreRows` becomes a model output holding the rows it
//! writes, and the host writes them into the destination buffer ([`host::apply_store`]). What a
//! graph compiler handles badly or cannot reproduce is computed on the host and fed as inputs
//! ([`HostInput`]): the rotary cos/sin tables (the C library's `cosf`/`sinf`, exactly as the CPU
//! backend takes them), additive attention masks (causal, sliding window, paged block tables)
//! and the rows a store writes, so one model serves every position and the model's shapes are
//! static. Weights become initializers kept in one shared blob ([`WeightBlob`]), which a session
//! reads from memory and an export writes next to the models as `weights.bin`.

mod builder;
pub mod export;
pub mod host;
pub mod proto;
pub mod qdq;
mod translate;

pub use translate::{
    classify_leaves, translate, BufferReader, HostInput, LeafRole, OnnxInput, Precision, StoreOutput, TranslateOptions,
    Translation, WeightBlob, MASKED, MASKED_QUANTIZED, OPSET, WEIGHTS_FILE,
};

use tessera_backend::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("node {node} ({op}) cannot be translated to ONNX: {message}")]
    Untranslatable { node: NodeId, op: &'static str, message: String },
    #[error("node {node} ({op}): {message}")]
    InvalidInput { node: NodeId, op: &'static str, message: String },
    #[error("reading leaf {node}: {message}")]
    Leaf { node: NodeId, message: String },
    #[error("{0}")]
    Manifest(String),
}
