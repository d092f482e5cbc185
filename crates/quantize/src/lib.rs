//! Quantizing a model: reads any source Tessera can open (GGUF or Hugging Face directory),
//! dequantizes it to f32 tensor by tensor, and writes it in a low-precision format, either a
//! GGUF file of ggml block types or a Hugging Face directory in the `compressed-tensors` layout.
//!
//! The block formats themselves (byte layouts, reference quantizers) live in `tessera-quant`;
//! this crate decides which tensor gets which type and runs the calibrated algorithms.
//!
//! GGUF output takes a GGUF source and gives each tensor the type llama.cpp's `llama-quantize`
//! gives it for the format's file type, with the same bytes (`gguf_policy` has the rules).

mod awq;
mod calib;
mod ct;
mod float8;
mod floats;
mod format;
mod fp4;
mod gguf_out;
mod gguf_policy;
mod gptq;
mod hf_layout;
mod integer;
mod linalg;
mod mapping;
mod output;
mod rows;
mod smooth;

pub use ct::DEFAULT_CALIBRATION;
pub use format::{Format, Output};
pub use rows::{gptq_int8_rows, RowCodes};

use std::path::{Path, PathBuf};

/// Quantizes the model at `source` (a GGUF file or Hugging Face directory) into `output`: a
/// GGUF file for the ggml formats, a directory for the compressed-tensors ones.
pub fn quantize(
    source: &Path,
    output: &Path,
    options: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, QuantizeError> {
    match options.format.output() {
        Output::GgufFile => gguf_out::write(source, output, options, progress),
        Output::CompressedTensorsDir => ct::write(source, output, options, progress),
    }
}

/// What `quantize` is asked to do.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub format: Format,
    /// Values per quantization group for the grouped integer formats (default 128).
    pub group_size: Option<usize>,
    /// Calibration text for the formats that calibrate (AWQ, GPTQ); a built-in text otherwise.
    pub calib_text: Option<String>,
    /// GGUF formats: every quantizable weight in the format's own type (falling back only where
    /// a row is not whole blocks), as `llama-quantize --pure`; otherwise llama.cpp's mix, which
    /// gives the output and some layers more bits (see the `gguf_policy` module).
    pub pure: bool,
}

impl QuantizeOptions {
    /// Options for `format` with every other setting at its default.
    pub fn new(format: Format) -> QuantizeOptions {
        QuantizeOptions { format, group_size: None, calib_text: None, pure: false }
    }
}

/// One tensor's fate, reported as it is written.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub source_type: String,
    pub output_type: String,
    pub values: u64,
    pub bytes: u64,
}

/// What was written: one report per tensor, and whether the source was dequantized first.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub tensors: Vec<TensorReport>,
    /// Types of source tensors that were dequantized to f32 before quantizing (empty when the
    /// source was in float types only).
    pub dequantized_from: Vec<String>,
    pub output: PathBuf,
}

impl Summary {
    /// Totals per output type, in the order types first appear: (type, tensors, values, bytes).
    pub fn by_output_type(&self) -> Vec<(String, usize, u64, u64)> {
        let mut rows: Vec<(String, usize, u64, u64)> = Vec::new();
        for t in &self.tensors {
            match rows.iter_mut().find(|r| r.0 == t.output_type) {
                Some(r) => {
                    r.1 += 1;
                    r.2 += t.values;
                    r.3 += t.bytes;
                }
                None => rows.push((t.output_type.clone(), 1, t.values, t.bytes)),
            }
        }
        rows
    }
}

/// Progress events for a progress bar: `total` tensors, then one `done` per tensor.
pub trait Progress {
    fn start(&mut self, total: usize);
    fn tensor_done(&mut self, name: &str);
    fn message(&mut self, text: &str);
}

/// Ignores progress events (tests, library callers without a terminal).
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _total: usize) {}
    fn tensor_done(&mut self, _name: &str) {}
    fn message(&mut self, _text: &str) {}
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Format(#[from] tessera_formats::FormatError),
    #[error(transparent)]
    Quant(#[from] tessera_quant::QuantError),
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::RuntimeError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}
