use tessera_formats::Metadata;

use crate::ModelError;

/// Hyperparameters every decoder-only transformer here shares, read from `{arch}.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub n_layers: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    pub norm_eps: f32,
    pub rope_base: f32,
    pub rope_dims: usize,
    /// Linear RoPE scaling: positions are multiplied by this.
    pub rope_freq_scale: f32,
}

impl ModelConfig {
    pub fn from_metadata(m: &Metadata, vocab_from_embeddings: usize) -> Result<ModelConfig, ModelError> {
        let arch = m.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_embd = m.usize(&key("embedding_length"))?;
        let n_heads = m.usize(&key("attention.head_count"))?;
        let n_kv_heads = m.opt(&key("attention.head_count_kv"), Metadata::usize)?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::BadConfig(format!("{n_heads} heads cannot share {n_kv_heads} KV heads")));
        }
        let head_dim = match m.opt(&key("attention.key_length"), Metadata::usize)? {
            Some(d) => d,
            None => n_embd / n_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::BadConfig(format!("head dimension {head_dim} must be even and non-zero")));
        }
        let rope_dims = m.opt(&key("rope.dimension_count"), Metadata::usize)?.unwrap_or(head_dim);
        if rope_dims == 0 || rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(ModelError::BadConfig(format!("RoPE over {rope_dims} of {head_dim} dims")));
        }
        let scaling_key = key("rope.scaling.type");
        let scaling = if m.contains(&scaling_key) { Some(m.str(&scaling_key)?) } else { None };
        let factor = m.opt(&key("rope.scaling.factor"), Metadata::f32)?.unwrap_or(1.0);
        let rope_freq_scale = match scaling {
            None | Some("none") => 1.0,
            Some("linear") if factor > 0.0 => 1.0 / factor,
            Some(other) => return Err(ModelError::BadConfig(format!("RoPE scaling {other:?} is not supported"))),
        };
        let vocab_size = m.opt(&key("vocab_size"), Metadata::usize)?.unwrap_or(vocab_from_embeddings);
        let cfg = ModelConfig {
            n_layers: m.usize(&key("block_count"))?,
            n_embd,
            n_ff: m.usize(&key("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: m.opt(&key("context_length"), Metadata::usize)?.unwrap_or(2048),
            norm_eps: m.opt(&key("attention.layer_norm_rms_epsilon"), Metadata::f32)?.unwrap_or(1e-5),
            rope_base: m.opt(&key("rope.freq_base"), Metadata::f32)?.unwrap_or(10_000.0),
            rope_dims,
            rope_freq_scale,
            architecture: arch,
        };
        if cfg.n_layers == 0 || cfg.n_embd == 0 || cfg.n_ff == 0 || cfg.vocab_size == 0 {
            return Err(ModelError::BadConfig(format!("empty dimension in {cfg:?}")));
        }
        Ok(cfg)
    }

    /// Width of one layer's K (and V) rows in the cache.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// Vocabulary size from the token embedding table, `[vocab, n_embd]`.
pub(crate) fn vocab_from(source: &tessera_formats::ModelSource) -> Result<usize, ModelError> {
    let emb =
        source.tensor("token_embd.weight").ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
    emb.shape.dims().first().copied().ok_or_else(|| ModelError::BadConfig("token_embd.weight has no rows".into()))
}
