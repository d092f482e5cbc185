//! The format-independent view of a model: metadata + named tensors backed by mapped files.

use std::io::Read;
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
    /// A Hugging Face directory (config.json + safetensors). Unlike converted GGUF files, Llama
    /// Q/K rows are not permuted for interleaved RoPE (use half-split RoPE) and Gemma norm
    /// weights are stored as `w`, not `1 + w` (see [`crate::hf`]).
    HuggingFace,
}

/// Bytes of one tensor: a range of a memory-mapped file (zero copy), or bytes a reader produced
/// while loading (a weight repacked into a ggml block type, a scale converted to F32). Cheap to
/// clone; keeps the mapping or the buffer alive.
#[derive(Clone)]
pub struct TensorBytes {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Mapped {
        map: Arc<Mapping>,
        range: Range<usize>,
    },
    /// Stored as 8-byte words so that owned bytes are as aligned as any element type needs.
    Owned {
        words: Arc<[u64]>,
        len: usize,
    },
}

impl TensorBytes {
    /// `range` must lie inside `map` (readers check this before constructing).
    pub(crate) fn new(map: Arc<Mapping>, range: Range<usize>) -> TensorBytes {
        debug_assert!(range.end <= map.len());
        TensorBytes { inner: Inner::Mapped { map, range } }
    }

    /// Owned bytes of `len`, filled in place by `fill` (no second copy).
    pub(crate) fn build<E>(len: usize, fill: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<TensorBytes, E> {
        let mut words = vec![0u64; len.div_ceil(8)];
        fill(&mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len])?;
        Ok(TensorBytes { inner: Inner::Owned { words: words.into(), len } })
    }

    /// Owned bytes, copied from `bytes` (for tensors made in memory).
    pub fn copy_from(bytes: &[u8]) -> TensorBytes {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        TensorBytes { inner: Inner::Owned { words: words.into(), len: bytes.len() } }
    }

    /// Drops the resident pages of `part` of mapped bytes from this process (they are read from
    /// the file again if touched); for a reader that keeps its own copy. Owned bytes, and parts
    /// outside these bytes, are left alone.
    pub fn release_pages(&self, part: Range<usize>) {
        if let Inner::Mapped { map, range } = &self.inner {
            if part.start <= part.end && part.end <= range.len() {
                map.release_pages(range.start + part.start..range.start + part.end);
            }
        }
    }

    /// Whether these bytes are read straight from a mapped file rather than produced in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped { .. })
    }
}

impl AsRef<[u8]> for TensorBytes {
    fn as_ref(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped { map, range } => &map[range.clone()],
            Inner::Owned { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
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

impl std::fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSource")
            .field("path", &self.path)
            .field("origin", &self.origin)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl ModelSource {
    /// Opens a `.gguf` file or a Hugging Face model directory (one with `config.json`).
    pub fn open(path: &Path) -> Result<ModelSource, FormatError> {
        let io = |source| FormatError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            if path.join("config.json").is_file() {
                return crate::hf::open_dir(path);
            }
            return Err(FormatError::NotAModel { path: path.to_path_buf() });
        }
        let mut head = Vec::with_capacity(4);
        std::fs::File::open(path).and_then(|f| f.take(4).read_to_end(&mut head)).map_err(io)?;
        if head != crate::gguf::MAGIC {
            return Err(FormatError::NotAModel { path: path.to_path_buf() });
        }
        crate::gguf::open_file(path)
    }

    /// Parses a GGUF image held in memory, copied into an anonymous mapping so that tensors
    /// are backed exactly as for a file. Meant for tests, fuzzing and small generated models.
    pub fn open_gguf_bytes(bytes: &[u8]) -> Result<ModelSource, FormatError> {
        let path = PathBuf::from("<memory>");
        let io = |source| FormatError::Io { path: path.clone(), source };
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        map.copy_from_slice(bytes);
        let map = map.make_read_only().map_err(io)?;
        crate::gguf::parse(Arc::new(Mapping { map, from_file: false }), &path)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A read-only mapping: of a file, or of anonymous memory holding a model made in memory.
pub(crate) struct Mapping {
    map: memmap2::Mmap,
    from_file: bool,
}

impl Mapping {
    /// Drops the resident pages of `range` from this process; they are read from the file again
    /// if touched. Does nothing to an anonymous mapping, whose dropped pages would read back as
    /// zeros, or to a range outside the mapping.
    pub(crate) fn release_pages(&self, range: Range<usize>) {
        if !self.from_file || range.start > range.end || range.end > self.map.len() {
            return;
        }
        // SAFETY: the map is a read-only shared mapping of a file, so dropped pages read back
        // unchanged from the file; nothing can observe the advice except as page faults. An
        // error (advice refused) changes nothing, so it is ignored.
        let _ =
            unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// Maps a whole file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Arc<Mapping>, FormatError> {
    let io = |source| FormatError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the mapping is read-only. As with every memory-mapped model loader, the file must
    // not be truncated or rewritten while it is open; Tessera never writes to model files it
    // has open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Arc::new(Mapping { map, from_file: true }))
}
