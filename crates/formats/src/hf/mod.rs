//! Hugging Face model directories: `config.json`, safetensors weights (one `model.safetensors`
//! or shards listed in `model.safetensors.index.json`), and the tokenizer files.
//!
//! The reader presents them as GGUF would: metadata under GGUF keys (`config.json` translated)
//! and tensors under GGUF names (as llama.cpp's converter names them), memory-mapped and
//! zero-copy. It translates names and nothing else, so two differences from converted GGUF files
//! remain, and models handle them, told by [`Origin::HuggingFace`]:
//! - Llama Q/K projection rows are *not* permuted for interleaved RoPE, as
//!   `convert_hf_to_gguf.py` does; a model reading them uses half-split RoPE instead.
//! - Gemma norm weights are stored as `w` (the model computes `1 + w`); the converter adds 1
//!   when writing GGUF, this reader does not.
//!
//! Quantized checkpoints in the compressed-tensors layout are read too (see [`compressed`]):
//! their weights become Tessera's quantized types, repacked into ggml blocks where the stored
//! layout differs, with a `<tensor>.scale` companion where the checkpoint keeps a scale outside
//! the weight.
//!
//! The tokenizer is `tokenizer.json` (with `tokenizer_config.json`); a directory without one may
//! carry its tokenizer as GGUF metadata in a tensor-less [`TOKENIZER_GGUF`], whose `tokenizer.*`
//! keys then join the metadata, so the tokenizer is built as for a GGUF model.

pub mod compressed;
mod config;
mod names;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};
use tessera_core::{DType, Shape};

pub use config::Arch;

use crate::source::map_file;
use crate::{FormatError, Metadata, ModelSource, Origin, TensorBytes, TensorEntry};

const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

fn corrupt(path: &Path, what: impl Into<String>) -> FormatError {
    FormatError::Corrupt { path: path.to_path_buf(), what: what.into() }
}

/// The weight files of a directory, and for a sharded model which file holds which tensor.
struct Shards {
    files: Vec<PathBuf>,
    /// Tensor name to file name, from the index.
    weight_map: Option<BTreeMap<String, String>>,
}

fn shard_files(dir: &Path) -> Result<Shards, FormatError> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.is_file() {
        let index = config::read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| corrupt(&index_path, "no \"weight_map\" object"))?;
        let mut weight_map = BTreeMap::new();
        for (name, file) in map {
            let file =
                file.as_str().ok_or_else(|| corrupt(&index_path, format!("{name:?} maps to {file}, not a file")))?;
            // The index names files beside it; anything else would read outside the model.
            if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
                return Err(corrupt(&index_path, format!("{name:?} maps to {file:?}, not a file in this directory")));
            }
            weight_map.insert(name.clone(), file.to_string());
        }
        let files: BTreeSet<&String> = weight_map.values().collect();
        let files = files.into_iter().map(|f| dir.join(f)).collect();
        return Ok(Shards { files, weight_map: Some(weight_map) });
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(Shards { files: vec![single], weight_map: None });
    }
    Err(corrupt(dir, format!("no weights: neither {SINGLE_FILE} nor {INDEX_FILE} is here")))
}

fn dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// One tensor of a safetensors file, under its Hugging Face name.
pub(crate) struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: TensorBytes,
    /// The file holding it, for messages.
    pub file: PathBuf,
}

/// Maps one safetensors file and lists every tensor it holds.
fn load_shard(path: &Path) -> Result<Vec<RawTensor>, FormatError> {
    let map = map_file(path)?;
    let (header_len, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| corrupt(path, format!("not a valid safetensors file: {e:?}")))?;
    // read_metadata has checked that every tensor's offsets lie inside the data section and
    // that its byte length is its element count times its element size.
    let data_start = 8 + header_len;
    let mut raws = Vec::new();
    for (name, info) in meta.tensors() {
        let (start, end) = info.data_offsets;
        let range = match (data_start.checked_add(start), data_start.checked_add(end)) {
            (Some(s), Some(e)) if s <= e && e <= map.len() => s..e,
            _ => return Err(corrupt(path, format!("tensor {name:?} has offsets {start}..{end} outside the file"))),
        };
        raws.push(RawTensor {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: TensorBytes::new(map.clone(), range),
            file: path.to_path_buf(),
        });
    }
    raws.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(raws)
}

/// The entry of a tensor stored as it is used, or `None` for tensors the text model does not
/// use (vision towers, rotary caches, activation scales).
pub(crate) fn plain_entry(raw: &RawTensor, arch: Arch) -> Result<Option<TensorEntry>, FormatError> {
    let Some(name) = names::gguf_name(arch, &raw.name) else { return Ok(None) };
    let dtype = dtype(raw.dtype).ok_or_else(|| FormatError::Unsupported {
        path: raw.file.clone(),
        what: format!("tensor {:?} is {:?}; only F32, F16 and BF16 are supported", raw.name, raw.dtype),
    })?;
    Ok(Some(TensorEntry { name, dtype, shape: Shape::new(raw.shape.clone()), bytes: raw.bytes.clone() }))
}

/// Opens a Hugging Face model directory.
pub(crate) fn open_dir(dir: &Path) -> Result<ModelSource, FormatError> {
    let config_path = dir.join("config.json");
    let config = config::read_json(&config_path)?;
    let (arch, mut metadata) = config::to_metadata(&config, &config_path)?;
    let quantization = compressed::parse(&config, &config_path)?;
    let Shards { files, weight_map } = shard_files(dir)?;
    let mut raws = Vec::new();
    let mut held_by: HashMap<String, PathBuf> = HashMap::new();
    for file in &files {
        for raw in load_shard(file)? {
            if let Some(other) = held_by.insert(raw.name.clone(), file.clone()) {
                return Err(corrupt(
                    dir,
                    format!("tensor {:?} is in both {} and {}", raw.name, other.display(), file.display()),
                ));
            }
            raws.push(raw);
        }
    }
    if let Some(weight_map) = weight_map {
        for (name, file) in &weight_map {
            if held_by.get(name).and_then(|p| p.file_name()) != Some(std::ffi::OsStr::new(file)) {
                return Err(corrupt(&dir.join(INDEX_FILE), format!("{name:?} is listed in {file} but is not there")));
            }
        }
    }
    let mut tensors = Vec::new();
    match &quantization {
        Some(q) => compressed::convert(&raws, arch, q, &mut tensors)?,
        None => {
            for raw in &raws {
                tensors.extend(plain_entry(raw, arch)?);
            }
        }
    }
    // Two Hugging Face names for one GGUF name (say, both multimodal prefixes) is ambiguous.
    let mut seen = HashSet::new();
    if let Some(dup) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(corrupt(dir, format!("two tensors map to {:?}", dup.name)));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    let tokenizer_json = existing("tokenizer.json");
    if tokenizer_json.is_none() {
        if let Some(gguf) = existing(TOKENIZER_GGUF) {
            tokenizer_metadata(&gguf, &mut metadata)?;
        }
    }
    Ok(ModelSource {
        path: dir.to_path_buf(),
        origin: Origin::HuggingFace,
        metadata,
        tensors,
        tokenizer_json,
        tokenizer_config_json: existing("tokenizer_config.json"),
    })
}

/// A tensor-less GGUF file carrying a tokenizer as GGUF metadata, for directories written from
/// a GGUF model (whose tokenizer has no `tokenizer.json`).
pub const TOKENIZER_GGUF: &str = "tokenizer.gguf";

/// Copies the `tokenizer.*` keys of a tokenizer GGUF into `metadata`, replacing what
/// `config.json` gave (the GGUF's special-token ids are its vocabulary's own).
fn tokenizer_metadata(path: &Path, metadata: &mut Metadata) -> Result<(), FormatError> {
    let source = crate::gguf::open_file(path)?;
    let mut found = false;
    for (key, value) in source.metadata.iter() {
        if key.starts_with("tokenizer.") {
            metadata.insert(key.clone(), value.clone());
            found = true;
        }
    }
    if !found {
        return Err(corrupt(path, "holds no tokenizer.* metadata"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
