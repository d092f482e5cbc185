//! GGUF: llama.cpp's model file format (versions 2 and 3), read memory-mapped and zero-copy, and
//! written by [`GgufWriter`].
//!
//! Layout: magic `GGUF`, version, tensor count, metadata count, the metadata key/value pairs,
//! the tensor infos (name, dims innermost first, ggml type id, offset), then, from the next
//! multiple of `general.alignment` (default 32), the tensor data, each tensor at an aligned
//! offset. Everything is little-endian.

mod reader;
mod writer;

pub(crate) use reader::{open_file, parse};
pub use writer::{GgufStream, GgufWriter, WriteError};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version [`GgufWriter`] writes.
pub const VERSION: u32 = 3;
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;

/// GGUF metadata value type ids (`enum gguf_type`).
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// Fewest bytes a value of type `ty` can occupy, or `None` for an unknown type. Used to
    /// bound element counts by the bytes left before anything is allocated.
    pub fn min_size(ty: u32) -> Option<u64> {
        Some(match ty {
            U8 | I8 | BOOL => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            STRING => 8,
            ARRAY => 12,
            _ => return None,
        })
    }
}
