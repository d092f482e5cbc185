//! Model file readers: GGUF files and Hugging Face safetensors directories, memory-mapped and
//! zero-copy, presented as one [`ModelSource`]: metadata under GGUF key names and tensors under
//! GGUF tensor names, whatever the file format was.

pub mod gguf;
pub mod hf;
mod metadata;
mod source;

pub use gguf::{GgufStream, GgufWriter, WriteError};
pub use metadata::{Metadata, MetadataError, Value};
pub use source::{FormatError, ModelSource, Origin, TensorBytes, TensorEntry};
