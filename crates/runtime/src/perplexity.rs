//! Perplexity scored the way llama.cpp's `llama-perplexity` scores it, so figures compare:
//! the text is cut into chunks of `n_ctx` tokens, each evaluated from an empty cache (its first
//! token replaced by BOS when the model wants one), and only the second half of each chunk is
//! scored, so every scored token sees at least `n_ctx / 2` tokens of context.

use crate::context::LoadedModel;
use crate::{ContextOptions, Logits, RuntimeError};

#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    pub n_ctx: usize,
    /// Most chunks to score; `None` scores every whole chunk.
    pub max_chunks: Option<usize>,
    pub n_batch: usize,
}

#[derive(Clone, Debug)]
pub struct PerplexityReport {
    pub tokens: usize,
    pub chunks: usize,
    /// Running estimate after each chunk (what llama-perplexity prints as `[i]value`).
    pub running: Vec<f64>,
    pub ppl: f64,
    /// Standard error of the estimate, as llama-perplexity's `+/-`.
    pub ppl_error: f64,
}

pub fn perplexity(
    model: &LoadedModel,
    text: &str,
    options: &PerplexityOptions,
) -> Result<PerplexityReport, RuntimeError> {
    let n_ctx = options.n_ctx;
    if n_ctx < 16 {
        return Err(RuntimeError::Invalid(format!("context {n_ctx} is too small to score (at least 16)")));
    }
    let tok = &model.tokenizer;
    let add_bos = tok.add_bos_by_default();
    let tokens = tok.encode(text, add_bos, false);
    let available = tokens.len() / n_ctx;
    let chunks = options.max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        return Err(RuntimeError::Invalid(format!(
            "the text has {} tokens; at least {} (2 × context) are needed",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let mut ctx = model.new_context(ContextOptions {
        n_ctx,
        n_batch: options.n_batch.min(n_ctx),
        ..ContextOptions::default()
    })?;
    let first = n_ctx / 2;
    let vocab = model.config().vocab_size;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    for c in 0..chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if add_bos {
            chunk[0] = tok.bos_id().unwrap_or(chunk[0]);
        }
        ctx.clear();
        let logits = ctx.eval(&chunk, Logits::From(first))?;
        // Row j predicts token first + j + 1; the last row has nothing to predict.
        for j in 0..n_ctx - 1 - first {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = chunk[first + j + 1] as usize;
            let lp = log_softmax_at(row, target);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        running.push((nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    let ppl_error = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    Ok(PerplexityReport { tokens: tokens.len(), chunks, running, ppl, ppl_error })
}

fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
