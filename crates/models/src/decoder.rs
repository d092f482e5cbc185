//! The standard pre-norm decoder (Llama, Mistral, Qwen2/3): `x += attn(norm(x)); x += ffn(norm(x))`.
//! Architecture files choose its RoPE layout and check their own tensors.

use tessera_backend::{GraphBuilder, NodeId, RopeStyle};
use tessera_formats::ModelSource;

use crate::config::{vocab_from, ModelConfig};
use crate::layers::{self, Activation, AttentionParams, AttentionWeights, FfnWeights, OutputHead};
use crate::weights::{WeightLoader, WeightRef, WeightUploader};
use crate::{Model, ModelError, StepInputs};

pub(crate) struct Layer {
    pub attn_norm: WeightRef,
    pub attn: AttentionWeights,
    pub ffn_norm: WeightRef,
    pub ffn: FfnWeights,
}

pub(crate) struct Decoder {
    pub cfg: ModelConfig,
    pub embd: WeightRef,
    pub layers: Vec<Layer>,
    pub head: OutputHead,
    pub attn: AttentionParams,
}

impl Decoder {
    pub fn load(
        source: &ModelSource,
        uploader: &mut dyn WeightUploader,
        rope_style: RopeStyle,
    ) -> Result<Decoder, ModelError> {
        let cfg = ModelConfig::from_metadata(&source.metadata, vocab_from(source)?)?;
        let mut w = WeightLoader { source, uploader };
        let embd = w.matrix("token_embd.weight", cfg.vocab_size, cfg.n_embd)?;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                Ok(Layer {
                    attn_norm: w.vector(&format!("blk.{i}.attn_norm.weight"), cfg.n_embd, 0.0)?,
                    attn: AttentionWeights::load(&mut w, &cfg, i, 0.0)?,
                    ffn_norm: w.vector(&format!("blk.{i}.ffn_norm.weight"), cfg.n_embd, 0.0)?,
                    ffn: FfnWeights::load(&mut w, &cfg, i)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let head = OutputHead::load(&mut w, &cfg, &embd, 0.0)?;
        let attn = AttentionParams {
            rope_base: cfg.rope_base,
            rope_freq_scale: cfg.rope_freq_scale,
            rope_style,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            window: None,
        };
        Ok(Decoder { cfg, embd, layers, head, attn })
    }
}

impl Model for Decoder {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward(&self, g: &mut GraphBuilder, step: &StepInputs<'_>) -> Result<NodeId, ModelError> {
        let eps = self.cfg.norm_eps;
        let mut x = layers::embed(g, &self.embd, step.tokens)?;
        for (i, l) in self.layers.iter().enumerate() {
            g.label(format!("blk.{i}"));
            let h = layers::rms_norm(g, x, &l.attn_norm, eps)?;
            let a = layers::attention(g, &self.cfg, h, &l.attn, &self.attn, step, i)?;
            let (a, residual) = layers::keep_output_rows(g, a, x, step, i + 1 == self.layers.len())?;
            x = g.add(residual, a)?;
            let h = layers::rms_norm(g, x, &l.ffn_norm, eps)?;
            let f = layers::ffn(g, h, &l.ffn, Activation::Silu)?;
            x = g.add(x, f)?;
        }
        g.label("output");
        self.head.forward(g, x, eps)
    }
}
