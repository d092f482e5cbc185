//! Gemma 3: scaled embeddings, Q/K norms, norms before and after both attention and FFN, GELU,
//! and interleaved sliding-window (local) and global layers with their own RoPE bases.

use tessera_backend::{GraphBuilder, NodeId, RopeStyle};
use tessera_formats::{Metadata, ModelSource, Origin, Value};

use crate::config::{vocab_from, ModelConfig};
use crate::layers::{self, Activation, AttentionParams, AttentionWeights, FfnWeights, OutputHead};
use crate::weights::{WeightLoader, WeightRef, WeightUploader};
use crate::{Model, ModelError, StepInputs};

/// Every `SWA_PATTERN`-th layer is global, the others local, unless the file says otherwise.
const SWA_PATTERN: usize = 6;
/// RoPE base of local layers when the file does not give one.
const LOCAL_ROPE_BASE: f32 = 10_000.0;

struct Layer {
    attn_norm: WeightRef,
    attn: AttentionWeights,
    post_attn_norm: WeightRef,
    ffn_norm: WeightRef,
    ffn: FfnWeights,
    post_ffn_norm: WeightRef,
    params: AttentionParams,
}

pub(crate) struct Gemma3 {
    cfg: ModelConfig,
    embd: WeightRef,
    layers: Vec<Layer>,
    head: OutputHead,
}

/// Which layers use the sliding window: an array of bools, or a period `n` (layer `i` is local
/// unless `i % n == n - 1`), as llama.cpp reads `attention.sliding_window_pattern`.
fn local_layers(m: &Metadata, n_layers: usize) -> Result<Vec<bool>, ModelError> {
    let key = "gemma3.attention.sliding_window_pattern";
    match m.get(key) {
        Some(Value::Array(items)) => {
            let flags: Option<Vec<bool>> = items.iter().map(|v| v.as_bool().or(v.as_u64().map(|x| x != 0))).collect();
            match flags {
                Some(f) if f.len() == n_layers => Ok(f),
                _ => Err(ModelError::BadConfig(format!("{key} must hold {n_layers} booleans"))),
            }
        }
        _ => {
            let n = m.opt(key, Metadata::usize)?.unwrap_or(SWA_PATTERN);
            Ok((0..n_layers).map(|i| n == 0 || i % n < n - 1).collect())
        }
    }
}

pub(crate) fn load(source: &ModelSource, uploader: &mut dyn WeightUploader) -> Result<Gemma3, ModelError> {
    let m = &source.metadata;
    let cfg = ModelConfig::from_metadata(m, vocab_from(source)?)?;
    // GGUF conversion stores Gemma's RMS norm weights as `1 + w`; Hugging Face stores `w`.
    let norm_add = if source.origin == Origin::HuggingFace { 1.0 } else { 0.0 };
    let window = m.opt("gemma3.attention.sliding_window", Metadata::usize)?.filter(|&w| w > 0);
    let local = match window {
        Some(_) => local_layers(m, cfg.n_layers)?,
        None => vec![false; cfg.n_layers],
    };
    let local_base = m.opt("gemma3.rope.freq_base_swa", Metadata::f32)?.unwrap_or(LOCAL_ROPE_BASE);
    let scale = match m.opt("gemma3.attention.query_pre_attn_scalar", Metadata::f32)? {
        Some(s) if s > 0.0 => 1.0 / s.sqrt(),
        Some(s) => return Err(ModelError::BadConfig(format!("query_pre_attn_scalar {s} must be positive"))),
        // The 27B model scales by the model width per head rather than the head size.
        None if cfg.n_layers == 62 => 1.0 / ((cfg.n_embd / cfg.n_heads) as f32).sqrt(),
        None => 1.0 / (cfg.head_dim as f32).sqrt(),
    };
    let mut w = WeightLoader { source, uploader };
    let embd = w.matrix("token_embd.weight", cfg.vocab_size, cfg.n_embd)?;
    let e = cfg.n_embd;
    let layers = (0..cfg.n_layers)
        .map(|i| {
            let attn = AttentionWeights::load(&mut w, &cfg, i, norm_add)?;
            if attn.qk_norm.is_none() {
                return Err(ModelError::MissingTensor(format!("blk.{i}.attn_q_norm.weight")));
            }
            let params = if local[i] {
                AttentionParams {
                    rope_base: local_base,
                    rope_freq_scale: 1.0,
                    rope_style: RopeStyle::Halves,
                    scale,
                    window,
                }
            } else {
                AttentionParams {
                    rope_base: cfg.rope_base,
                    rope_freq_scale: cfg.rope_freq_scale,
                    rope_style: RopeStyle::Halves,
                    scale,
                    window: None,
                }
            };
            Ok(Layer {
                attn_norm: w.vector(&format!("blk.{i}.attn_norm.weight"), e, norm_add)?,
                attn,
                post_attn_norm: w.vector(&format!("blk.{i}.post_attention_norm.weight"), e, norm_add)?,
                ffn_norm: w.vector(&format!("blk.{i}.ffn_norm.weight"), e, norm_add)?,
                ffn: FfnWeights::load(&mut w, &cfg, i)?,
                post_ffn_norm: w.vector(&format!("blk.{i}.post_ffw_norm.weight"), e, norm_add)?,
                params,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let head = OutputHead::load(&mut w, &cfg, &embd, norm_add)?;
    Ok(Gemma3 { cfg, embd, layers, head })
}

impl Model for Gemma3 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn forward(&self, g: &mut GraphBuilder, step: &StepInputs<'_>) -> Result<NodeId, ModelError> {
        let eps = self.cfg.norm_eps;
        let x = layers::embed(g, &self.embd, step.tokens)?;
        let mut x = g.scale(x, (self.cfg.n_embd as f32).sqrt())?;
        for (i, l) in self.layers.iter().enumerate() {
            g.label(format!("blk.{i}"));
            let h = layers::rms_norm(g, x, &l.attn_norm, eps)?;
            let a = layers::attention(g, &self.cfg, h, &l.attn, &l.params, step, i)?;
            let (a, residual) = layers::keep_output_rows(g, a, x, step, i + 1 == self.layers.len())?;
            let a = layers::rms_norm(g, a, &l.post_attn_norm, eps)?;
            x = g.add(a, residual)?;
            let h = layers::rms_norm(g, x, &l.ffn_norm, eps)?;
            let f = layers::ffn(g, h, &l.ffn, Activation::GeluTanh)?;
            let f = layers::rms_norm(g, f, &l.post_ffn_norm, eps)?;
            x = g.add(f, x)?;
        }
        g.label("output");
        self.head.forward(g, x, eps)
    }
}
