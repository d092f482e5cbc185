//! Qwen2 (biases on Q/K/V) and Qwen3 (per-head RMS norm of Q and K before RoPE). Llama-like
//! otherwise, with RoPE over the two halves of each head in every file format.

use tessera_backend::RopeStyle;
use tessera_formats::ModelSource;

use crate::decoder::Decoder;
use crate::weights::WeightUploader;
use crate::ModelError;

pub(crate) fn load(source: &ModelSource, uploader: &mut dyn WeightUploader) -> Result<Decoder, ModelError> {
    let model = Decoder::load(source, uploader, RopeStyle::Halves)?;
    let expects_qk_norm = model.cfg.architecture == "qwen3";
    if let Some(i) = model.layers.iter().position(|l| l.attn.qk_norm.is_some() != expects_qk_norm) {
        let what = if expects_qk_norm { "lacks" } else { "has unexpected" };
        return Err(ModelError::BadConfig(format!("layer {i} {what} Q/K norms for {}", model.cfg.architecture)));
    }
    Ok(model)
}
