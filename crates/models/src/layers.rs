//! Building blocks shared by the architectures: attention with a KV cache, gated FFNs, the
//! output head. Each architecture file decides which pieces and options it uses.

use tessera_backend::{GraphBuilder, NodeId, RopeStyle};

use crate::config::ModelConfig;
use crate::weights::{Linear, OutputScale, WeightLoader, WeightRef};
use crate::{KvInputs, Logits, ModelError, StepInputs};

/// One layer's attention weights. Optional parts exist in some architectures only.
pub(crate) struct AttentionWeights {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Qwen2's projection biases.
    pub biases: Option<[WeightRef; 3]>,
    /// Per-head RMS norms of Q and K before RoPE (Qwen3, Gemma 3).
    pub qk_norm: Option<[WeightRef; 2]>,
}

impl AttentionWeights {
    /// Loads `blk.{i}.attn_*` for the shapes `cfg` implies; `norm_add` as for [`WeightLoader::vector`].
    pub fn load(w: &mut WeightLoader<'_>, cfg: &ModelConfig, i: usize, norm_add: f32) -> Result<Self, ModelError> {
        let (e, q, kv) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
        let p = |s: &str| format!("blk.{i}.{s}");
        let biases = if w.has(&p("attn_q.bias")) {
            Some([
                w.vector(&p("attn_q.bias"), q, 0.0)?,
                w.vector(&p("attn_k.bias"), kv, 0.0)?,
                w.vector(&p("attn_v.bias"), kv, 0.0)?,
            ])
        } else {
            None
        };
        let qk_norm = if w.has(&p("attn_q_norm.weight")) {
            Some([
                w.vector(&p("attn_q_norm.weight"), cfg.head_dim, norm_add)?,
                w.vector(&p("attn_k_norm.weight"), cfg.head_dim, norm_add)?,
            ])
        } else {
            None
        };
        Ok(AttentionWeights {
            q: w.linear(&p("attn_q.weight"), q, e)?,
            k: w.linear(&p("attn_k.weight"), kv, e)?,
            v: w.linear(&p("attn_v.weight"), kv, e)?,
            o: w.linear(&p("attn_output.weight"), e, q)?,
            biases,
            qk_norm,
        })
    }
}

/// How one layer's attention is computed.
pub(crate) struct AttentionParams {
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    pub rope_style: RopeStyle,
    /// Multiplies q·k before the softmax.
    pub scale: f32,
    /// Sliding window in tokens, for local-attention layers.
    pub window: Option<usize>,
}

/// Self-attention of `x` (already normed) for layer `layer`, writing K and V into the cache.
pub(crate) fn attention(
    g: &mut GraphBuilder,
    cfg: &ModelConfig,
    x: NodeId,
    w: &AttentionWeights,
    p: &AttentionParams,
    step: &StepInputs<'_>,
    layer: usize,
) -> Result<NodeId, ModelError> {
    let n = step.n_tokens;
    let mut q = matmul(g, x, &w.q)?;
    let mut k = matmul(g, x, &w.k)?;
    let mut v = matmul(g, x, &w.v)?;
    if let Some([bq, bk, bv]) = &w.biases {
        q = add_weight(g, q, bq)?;
        k = add_weight(g, k, bk)?;
        v = add_weight(g, v, bv)?;
    }
    if let Some([nq, nk]) = &w.qk_norm {
        q = head_norm(g, q, nq, n, cfg.n_heads, cfg.head_dim, cfg.norm_eps)?;
        k = head_norm(g, k, nk, n, cfg.n_kv_heads, cfg.head_dim, cfg.norm_eps)?;
    }
    q = g.rope(q, step.positions, cfg.head_dim, cfg.rope_dims, p.rope_base, p.rope_freq_scale, p.rope_style)?;
    k = g.rope(k, step.positions, cfg.head_dim, cfg.rope_dims, p.rope_base, p.rope_freq_scale, p.rope_style)?;
    let (k_cache, v_cache) = step.kv.layer(layer);
    let (heads, kv_heads, dim) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    let a = match step.kv {
        KvInputs::Contiguous { start, .. } => {
            let k_all = g.store(k, k_cache, start)?;
            let v_all = g.store(v, v_cache, start)?;
            g.attention(q, k_all, v_all, step.positions, heads, kv_heads, dim, p.scale, p.window)?
        }
        KvInputs::Paged { slots, tables, block_size, .. } => {
            let k_all = g.store_rows(k, k_cache, slots)?;
            let v_all = g.store_rows(v, v_cache, slots)?;
            let pos = step.positions;
            g.paged_attention(q, k_all, v_all, pos, tables, heads, kv_heads, dim, p.scale, p.window, block_size)?
        }
    };
    matmul(g, a, &w.o)
}

/// RMS norm of every head separately: `[n, heads * dim]` viewed as `[n * heads, dim]`.
fn head_norm(
    g: &mut GraphBuilder,
    x: NodeId,
    w: &WeightRef,
    n: usize,
    heads: usize,
    dim: usize,
    eps: f32,
) -> Result<NodeId, ModelError> {
    let per_head = g.reshape(x, [n * heads, dim])?;
    let normed = rms_norm(g, per_head, w, eps)?;
    Ok(g.reshape(normed, [n, heads * dim])?)
}

/// Gated feed-forward weights (`ffn_gate`, `ffn_up`, `ffn_down`).
pub(crate) struct FfnWeights {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl FfnWeights {
    pub fn load(w: &mut WeightLoader<'_>, cfg: &ModelConfig, i: usize) -> Result<Self, ModelError> {
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        Ok(FfnWeights {
            gate: w.linear(&format!("blk.{i}.ffn_gate.weight"), f, e)?,
            up: w.linear(&format!("blk.{i}.ffn_up.weight"), f, e)?,
            down: w.linear(&format!("blk.{i}.ffn_down.weight"), e, f)?,
        })
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Activation {
    Silu,
    GeluTanh,
}

pub(crate) fn ffn(g: &mut GraphBuilder, x: NodeId, w: &FfnWeights, act: Activation) -> Result<NodeId, ModelError> {
    let gate = matmul(g, x, &w.gate)?;
    let up = matmul(g, x, &w.up)?;
    let h = match act {
        Activation::Silu => g.swiglu(gate, up)?,
        Activation::GeluTanh => g.geglu(gate, up)?,
    };
    matmul(g, h, &w.down)
}

/// The final norm and the projection to vocabulary logits.
pub(crate) struct OutputHead {
    pub norm: WeightRef,
    /// `output.weight`, or the token embeddings when the model ties them.
    pub proj: Linear,
}

impl OutputHead {
    pub fn load(
        w: &mut WeightLoader<'_>,
        cfg: &ModelConfig,
        embd: &WeightRef,
        norm_add: f32,
    ) -> Result<Self, ModelError> {
        let norm = w.vector("output_norm.weight", cfg.n_embd, norm_add)?;
        let proj = match w.opt_linear("output.weight", cfg.vocab_size, cfg.n_embd)? {
            Some(p) => p,
            None => Linear::plain("token_embd.weight", embd.clone()),
        };
        Ok(OutputHead { norm, proj })
    }

    /// `x` holds only the rows whose logits are wanted (see [`keep_output_rows`]).
    pub fn forward(&self, g: &mut GraphBuilder, x: NodeId, eps: f32) -> Result<NodeId, ModelError> {
        let x = rms_norm(g, x, &self.norm, eps)?;
        matmul(g, x, &self.proj)
    }
}

/// `x · wᵀ`, times the weight's output scale when it has one.
pub(crate) fn matmul(g: &mut GraphBuilder, x: NodeId, w: &Linear) -> Result<NodeId, ModelError> {
    let leaf = w.weight.leaf(g)?;
    let y = g.mat_mul(x, leaf)?;
    Ok(match &w.scale {
        None => y,
        Some(OutputScale::PerTensor(s)) => g.scale(y, *s)?,
        Some(OutputScale::PerChannel(v)) => {
            let v = v.leaf(g)?;
            g.mul(y, v)?
        }
    })
}

pub(crate) fn rms_norm(g: &mut GraphBuilder, x: NodeId, w: &WeightRef, eps: f32) -> Result<NodeId, ModelError> {
    let w = w.leaf(g)?;
    Ok(g.rms_norm(x, w, eps)?)
}

fn add_weight(g: &mut GraphBuilder, x: NodeId, w: &WeightRef) -> Result<NodeId, ModelError> {
    let w = w.leaf(g)?;
    Ok(g.add(x, w)?)
}

/// Looks up token embeddings: `[n]` ids → `[n, n_embd]`.
pub(crate) fn embed(g: &mut GraphBuilder, table: &WeightRef, tokens: NodeId) -> Result<NodeId, ModelError> {
    let t = table.leaf(g)?;
    Ok(g.get_rows(t, tokens)?)
}

/// In the last layer, drops the rows whose logits are not wanted from the attention output and
/// the residual before the FFN: they would be computed and thrown away.
pub(crate) fn keep_output_rows(
    g: &mut GraphBuilder,
    attn_out: NodeId,
    residual: NodeId,
    step: &StepInputs<'_>,
    last_layer: bool,
) -> Result<(NodeId, NodeId), ModelError> {
    if !last_layer {
        return Ok((attn_out, residual));
    }
    if let Logits::Rows { ids, .. } = step.logits {
        return Ok((g.get_rows(attn_out, ids)?, g.get_rows(residual, ids)?));
    }
    let first = step.logits.first_row(step.n_tokens);
    if first == 0 {
        return Ok((attn_out, residual));
    }
    let rows = step.n_tokens - first;
    Ok((g.slice_rows(attn_out, first, rows)?, g.slice_rows(residual, first, rows)?))
}
