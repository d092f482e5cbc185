//! Llama family: Llama 2/3, Mistral, SmolLM2. Pre-norm blocks, SwiGLU, RoPE.

use tessera_backend::RopeStyle;
use tessera_formats::{ModelSource, Origin};

use crate::decoder::Decoder;
use crate::weights::WeightUploader;
use crate::ModelError;

pub(crate) fn load(source: &ModelSource, uploader: &mut dyn WeightUploader) -> Result<Decoder, ModelError> {
    // GGUF conversion permutes Q/K rows so that RoPE pairs adjacent dims; Hugging Face
    // checkpoints keep the original layout, where RoPE pairs the two halves of each head.
    let rope_style = match source.origin {
        Origin::Gguf { .. } => RopeStyle::Interleaved,
        Origin::HuggingFace => RopeStyle::Halves,
    };
    Decoder::load(source, uploader, rope_style)
}
