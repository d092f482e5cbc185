//! Runs models: loads one onto a backend, keeps its KV cache, evaluates forward steps, samples,
//! generates text, scores perplexity and compares models with a reference (KL divergence).
//! Knows the backend only through its contract.

mod batch;
pub mod bench;
mod capture;
mod context;
mod device_weights;
mod eval;
mod generate;
mod kl_base;
mod kv_cache;
mod perplexity;
mod sampling;

pub use batch::{BatchItem, PagedKvCache};
pub use context::{Context, ContextOptions, LoadedModel};
pub use eval::{
    compare_models, percentile, ChunkScorer, Comparison, ContextScorer, EvalReport, KlStats, LogProbRows, ModelScores,
    Reference, RowHead, TokenComparison, WeightStats,
};
pub use generate::{generate, GenerateOptions, GenerationStats, StopReason};
pub use kl_base::{KlBaseHeader, KlBaseReader, KlBaseWriter};
pub use kv_cache::KvCache;
pub use perplexity::{perplexity, NllSum, PerplexityOptions, PerplexityReport, ScoredChunks};
pub use sampling::{argmax, Sampler, SamplerOptions};
pub use tessera_models::Logits;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Format(#[from] tessera_formats::FormatError),
    #[error(transparent)]
    Model(#[from] tessera_models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] tessera_tokenizer::TokenizerError),
    #[error(transparent)]
    Backend(#[from] tessera_backend::BackendError),
    #[error(transparent)]
    Graph(#[from] tessera_backend::GraphError),
    #[error("context is full: {needed} tokens do not fit in a context of {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("{0}")]
    Invalid(String),
}
