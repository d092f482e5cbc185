use std::path::PathBuf;

use tessera_formats::{FormatError, MetadataError};

/// Why a tokenizer or chat template could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("tokenizer model {0:?} is not supported (expected \"gpt2\", \"llama\" or \"gemma4\")")]
    UnsupportedModel(String),
    #[error("pre-tokenizer {0:?} is not supported")]
    UnsupportedPreTokenizer(String),
    /// The tokenizer data is present but inconsistent.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{0}: the model has no tokenizer (no tokenizer.json, tokenizer.gguf or GGUF vocabulary)")]
    NoTokenizer(PathBuf),
    #[error("chat template: {0}")]
    Template(String),
}

impl From<minijinja::Error> for TokenizerError {
    fn from(e: minijinja::Error) -> TokenizerError {
        // `{:#}` includes the template line and the cause chain.
        TokenizerError::Template(format!("{e:#}"))
    }
}
