//! GGUF output: every tensor of a GGUF source converted to the type `gguf_policy` chooses,
//! written as `llama-quantize` writes it (tensors in llama.cpp's order, metadata copied, with
//! `general.file_type` and `general.quantization_version` set).
//!
//! Memory stays bounded by one tensor: the header is written first, then each tensor is
//! dequantized and quantized in slabs of rows on the rayon pool and streamed out before the next
//! one starts. The file is written under a temporary name beside the output and renamed at the
//! end, so a failed run never leaves a truncated model under the requested name.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;
use tessera_core::DType;
use tessera_formats::{GgufWriter, ModelSource, Origin, TensorEntry, Value};

use crate::gguf_policy::{self, ModelInfo, TensorInfo};
use crate::output::{finish, partial_path};
use crate::{Progress, QuantizeError, QuantizeOptions, Summary, TensorReport};

/// ggml's `GGML_QNT_VERSION`, written as `general.quantization_version`.
const QUANTIZATION_VERSION: u32 = 2;

/// Metadata that describes the source file rather than the model, so it is not copied
/// (`llama-quantize` drops the split keys and rewrites the other two).
const NOT_COPIED: [&str; 5] =
    ["general.file_type", "general.quantization_version", "split.no", "split.count", "split.tensors.count"];

/// Values per parallel work item: enough to amortize the scheduling, small enough that every
/// thread gets work on a small tensor.
const VALUES_PER_TASK: usize = 1 << 16;

pub(crate) fn write(
    source_path: &Path,
    output: &Path,
    options: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, QuantizeError> {
    let invalid = |what: String| QuantizeError::Invalid(what);
    let (file_type, _) = gguf_policy::file_type(options.format)
        .ok_or_else(|| invalid(format!("{} is not a GGUF format", options.format)))?;
    check_output(source_path, output)?;
    let source = ModelSource::open(source_path)?;
    if source.origin == Origin::HuggingFace {
        return Err(invalid(format!(
            "{}: GGUF output needs a GGUF source: a Hugging Face directory lacks the GGUF tokenizer \
             keys and llama.cpp's Q/K row order, which llama.cpp's convert_hf_to_gguf.py adds; convert \
             it to an f16 or bf16 GGUF first and quantize that file",
            source_path.display()
        )));
    }

    let mut tensors: Vec<&TensorEntry> = source.tensors.iter().collect();
    tensors.sort_by(|a, b| gguf_policy::llama_cpp_order(&a.name, &b.name));
    let model =
        ModelInfo::from_metadata(&source.metadata).map_err(|e| invalid(format!("{}: {e}", source_path.display())))?;
    let infos: Vec<TensorInfo> =
        tensors.iter().map(|t| TensorInfo { name: &t.name, shape: &t.shape, dtype: t.dtype }).collect();
    let types = gguf_policy::plan(options.format, options.pure, &model, &infos).map_err(invalid)?;

    let mut writer = GgufWriter::new();
    for (key, value) in source.metadata.iter().filter(|(k, _)| !NOT_COPIED.contains(&k.as_str())) {
        writer.add_metadata(key.clone(), value.clone()).map_err(write_err(output))?;
    }
    writer.add_metadata("general.quantization_version", Value::U32(QUANTIZATION_VERSION)).map_err(write_err(output))?;
    writer.add_metadata("general.file_type", Value::U32(file_type)).map_err(write_err(output))?;
    for (t, &dtype) in tensors.iter().zip(&types) {
        writer.declare_tensor(t.name.clone(), dtype, t.shape.clone()).map_err(write_err(output))?;
    }

    let partial = partial_path(output);
    let written = write_tensors(&writer, &tensors, &types, &partial, progress);
    finish(&partial, output, written)
}

/// Streams every tensor into `path`, converting those whose type changes.
fn write_tensors(
    writer: &GgufWriter<'_>,
    tensors: &[&TensorEntry],
    types: &[DType],
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<Summary, QuantizeError> {
    let io = |source| QuantizeError::Io { path: path.to_path_buf(), source };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    let mut stream = writer.stream(&mut out).map_err(write_err(path))?;
    progress.start(tensors.len());
    let mut reports = Vec::with_capacity(tensors.len());
    let mut dequantized_from = BTreeSet::new();
    for (t, &dtype) in tensors.iter().zip(types) {
        let bytes = if dtype == t.dtype {
            std::borrow::Cow::Borrowed(t.bytes.as_ref())
        } else {
            if t.dtype.is_quantized() {
                dequantized_from.insert(t.dtype.name());
            }
            std::borrow::Cow::Owned(convert(t, dtype)?)
        };
        stream.write_tensor(&t.name, &bytes).map_err(write_err(path))?;
        reports.push(TensorReport {
            name: t.name.clone(),
            source_type: t.dtype.name().to_string(),
            output_type: dtype.name().to_string(),
            values: t.shape.count() as u64,
            bytes: bytes.len() as u64,
        });
        progress.tensor_done(&t.name);
    }
    stream.finish().map_err(write_err(path))?;
    out.flush().map_err(io)?;
    out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(Summary {
        tensors: reports,
        dequantized_from: dequantized_from.into_iter().map(str::to_string).collect(),
        output: path.to_path_buf(),
    })
}

/// Converts one tensor to `dtype` through f32, a slab of rows per task. Rows are quantized
/// independently, so the bytes do not depend on how the rows are split.
fn convert(t: &TensorEntry, dtype: DType) -> Result<Vec<u8>, QuantizeError> {
    let bad = |what: String| QuantizeError::Invalid(format!("tensor {}: {what}", t.name));
    let cols = t.shape.cols();
    let rows = t.shape.rows();
    let src_row = t.dtype.bytes_for(cols).map_err(|e| bad(e.to_string()))?;
    let dst_row = dtype.bytes_for(cols).map_err(|e| bad(e.to_string()))?;
    let src = t.bytes.as_ref();
    if Some(src.len()) != src_row.checked_mul(rows) {
        return Err(bad(format!("{} bytes for {} of {}", src.len(), t.shape, t.dtype)));
    }
    let mut out = vec![0u8; dst_row * rows];
    if rows == 0 || cols == 0 {
        return Ok(out);
    }
    let rows_per_task = (VALUES_PER_TASK / cols).max(1);
    out.par_chunks_mut(rows_per_task * dst_row).zip(src.par_chunks(rows_per_task * src_row)).enumerate().try_for_each(
        |(task, (dst, src))| {
            let mut values = vec![0f32; dst.len() / dst_row * cols];
            tessera_quant::dequantize(t.dtype, src, &mut values).map_err(|e| bad(e.to_string()))?;
            // ggml's quantizers turn a NaN or infinity into garbage scales (llama-quantize then
            // fails its row validation); name the place instead.
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                let row = task * rows_per_task + i / cols;
                return Err(bad(format!("row {row} holds a non-finite value ({})", values[i])));
            }
            tessera_quant::quantize(dtype, &values, dst).map_err(|e| bad(e.to_string()))
        },
    )?;
    Ok(out)
}

/// Refuses an output that is the source itself (or a directory), before anything is read.
fn check_output(source: &Path, output: &Path) -> Result<(), QuantizeError> {
    let invalid = |what: String| QuantizeError::Invalid(what);
    if output.is_dir() {
        return Err(invalid(format!("{}: is a directory; a GGUF format writes one file", output.display())));
    }
    let source_real = source.canonicalize().map_err(|e| QuantizeError::Io { path: source.to_path_buf(), source: e })?;
    if output.exists() {
        let output_real =
            output.canonicalize().map_err(|e| QuantizeError::Io { path: output.to_path_buf(), source: e })?;
        if output_real == source_real {
            return Err(invalid(format!("{}: refusing to overwrite the source model", output.display())));
        }
    }
    if output.file_name().is_none() {
        return Err(invalid(format!("{}: not a file name", output.display())));
    }
    Ok(())
}

fn write_err(path: &Path) -> impl Fn(tessera_formats::WriteError) -> QuantizeError + '_ {
    move |e| match e {
        tessera_formats::WriteError::Io(source) => QuantizeError::Io { path: path.to_path_buf(), source },
        other => QuantizeError::Invalid(format!("{}: {other}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_never_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.gguf");
        std::fs::write(&src, b"GGUF").unwrap();
        let again = dir.path().join(".").join("m.gguf");
        assert!(check_output(&src, &again).unwrap_err().to_string().contains("refusing to overwrite the source"));
        assert!(check_output(&src, dir.path()).unwrap_err().to_string().contains("is a directory"));
        assert!(check_output(&src, &dir.path().join("out.gguf")).is_ok());
        let missing = check_output(&dir.path().join("none.gguf"), &dir.path().join("out.gguf"));
        assert!(matches!(missing, Err(QuantizeError::Io { .. })));
    }
}
