//! The format-independent view of a model: metadata + named tensors backed by mapped files.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_core::{DType, Shape};

use crate::metadata::Metadata;

/// Where a model came from; models that need to know (Llama's RoPE layout) ask this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A GGUF file of the given version.
    Gguf { version: u32 },
    /// A Hugging Face directory (config.json + safetensors).
    HuggingFace,
}

/// Bytes of one tensor inside a memory-mapped file; cheap to clone, keeps the mapping alive.
#[derive(Clone)]
pub struct TensorBytes {
    map: Arc<memmap2::Mmap>,
    range: Range<usize>,
}

impl TensorBytes {
    /// `range` must lie inside `map` (readers check this before constructing).
    pub(crate) fn new(map: Arc<memmap2::Mmap>, range: Range<usize>) -> TensorBytes {
        debug_assert!(range.end <= map.len());
        TensorBytes { map, range }
    }
}

impl AsRef<[u8]> for TensorBytes {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// One tensor: GGUF-style name, stored type, row-major shape, and its bytes.
#[derive(Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
    pub bytes: TensorBytes,
}

impl std::fmt::Debug for TensorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.name, self.dtype, self.shape)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a model: expected a .gguf file or a directory with config.json")]
    NotAModel { path: PathBuf },
    /// The file is malformed; `what` names the problem and where.
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
}

/// A model opened from disk, in any supported format.
pub struct ModelSource {
    pub path: PathBuf,
    pub origin: Origin,
    pub metadata: Metadata,
    pub tensors: Vec<TensorEntry>,
    /// For Hugging Face directories: `tokenizer.json`, when present.
    pub tokenizer_json: Option<PathBuf>,
    /// For Hugging Face directories: `tokenizer_config.json`, when present.
    pub tokenizer_config_json: Option<PathBuf>,
}

impl ModelSource {
    /// Opens a `.gguf` file or a Hugging Face model directory.
    pub fn open(path: &Path) -> Result<ModelSource, FormatError> {
        let _ = path;
        Err(FormatError::NotAModel { path: path.to_path_buf() })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
