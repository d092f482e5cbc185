//! Model architectures. Each file turns hyperparameters and weights into the computation graph of
//! one forward step; quantized and full-precision weights go through the same code, since the
//! weight's type travels with it and the backend's `MatMul` reads any type.
//!
//! Adding an architecture: write `src/<arch>.rs` with a `load` function, add one line to
//! [`load`]'s table.

mod config;
mod decoder;
mod gemma;
mod layers;
mod llama;
mod qwen;
mod weights;

use tessera_backend::{GraphBuilder, NodeId};
use tessera_formats::ModelSource;

pub use config::ModelConfig;
pub use weights::{Linear, OutputScale, WeightData, WeightRef, WeightUploader};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unsupported architecture {0:?} (supported: llama, mistral, qwen2, qwen3, gemma3)")]
    UnknownArchitecture(String),
    #[error(transparent)]
    Metadata(#[from] tessera_formats::MetadataError),
    #[error("tensor {0:?} is missing from the model file")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found}, expected {expected}")]
    BadShape { name: String, found: String, expected: String },
    #[error("invalid hyperparameters: {0}")]
    BadConfig(String),
    #[error("graph: {0}")]
    Graph(#[from] tessera_backend::GraphError),
    #[error("loading weights: {0}")]
    Upload(String),
}

/// Which rows of logits a forward step produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (prompt scoring).
    All,
    /// The tokens from this index of the step on (perplexity scores the second half of a chunk).
    From(usize),
    /// The rows listed in an I32 `[count]` node, in its order (a batch of sequences wants the
    /// last row of each).
    Rows { ids: NodeId, count: usize },
}

impl Logits {
    /// Index of the first row with logits, for a step of `n_tokens` (clamped to the last row).
    /// For `Rows`, 0: every row is computed up to the last layer, which gathers the listed ones.
    pub fn first_row(self, n_tokens: usize) -> usize {
        let last = n_tokens.saturating_sub(1);
        match self {
            Logits::Last => last,
            Logits::All => 0,
            Logits::From(k) => k.min(last),
            Logits::Rows { .. } => 0,
        }
    }
}

/// Graph inputs of one forward step, prepared by the runtime.
pub struct StepInputs<'a> {
    /// I32 `[n]` token ids.
    pub tokens: NodeId,
    /// I32 `[n]` position of each token in its sequence.
    pub positions: NodeId,
    /// Number of new tokens.
    pub n_tokens: usize,
    pub kv: KvInputs<'a>,
    pub logits: Logits,
}

/// Where the step's keys and values go and are read from.
pub enum KvInputs<'a> {
    /// One sequence whose new tokens take rows `start..start + n` of per-layer caches
    /// `[context, kv_dim]` (F16 or F32); positions are `start..start + n`.
    Contiguous { start: usize, layers: &'a [(NodeId, NodeId)] },
    /// Tokens of several sequences over per-layer block pools `[blocks * block_size, kv_dim]`:
    /// token `i` is written to pool row `slots[i]` (I32 `[n]`) and attends through its
    /// sequence's block table, row `i` of `tables` (I32 `[n, max_blocks]`).
    Paged { layers: &'a [(NodeId, NodeId)], slots: NodeId, tables: NodeId, block_size: usize },
}

impl KvInputs<'_> {
    /// The K and V cache nodes of layer `i`.
    pub fn layer(&self, i: usize) -> (NodeId, NodeId) {
        match self {
            KvInputs::Contiguous { layers, .. } | KvInputs::Paged { layers, .. } => layers[i],
        }
    }
}

/// A model loaded onto a backend: builds the graph of a forward step.
pub trait Model: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Adds one forward step to `g`; returns the F32 logits node, `[rows, vocab]`.
    fn forward(&self, g: &mut GraphBuilder, step: &StepInputs<'_>) -> Result<NodeId, ModelError>;
}

/// Builds the model that `source` describes, uploading its weights through `uploader`.
pub fn load(source: &ModelSource, uploader: &mut dyn WeightUploader) -> Result<Box<dyn Model>, ModelError> {
    let arch = source.metadata.architecture()?;
    match arch {
        "llama" | "mistral" => Ok(Box::new(llama::load(source, uploader)?)),
        "qwen2" | "qwen3" => Ok(Box::new(qwen::load(source, uploader)?)),
        "gemma3" => Ok(Box::new(gemma::load(source, uploader)?)),
        other => Err(ModelError::UnknownArchitecture(other.to_string())),
    }
}
