//! Perplexity scored the way llama.cpp's `llama-perplexity` scores it, so figures compare:
//! the text is cut into chunks of `n_ctx` tokens, each evaluated from an empty cache (its first
//! token replaced by BOS when the model wants one), and only the second half of each chunk is
//! scored, so every scored token sees at least `n_ctx / 2` tokens of context.
//!
//! [`ScoredChunks`] and [`NllSum`] are that chunking and that estimate; `tessera eval`'s model
//! comparison ([`crate::eval`]) scores the same chunks.

use crate::context::{Context, LoadedModel};
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

/// The smallest context worth scoring: half of it is context, half is scored.
const MIN_CTX: usize = 16;

/// The chunks of a text as they are evaluated: whole chunks of `n_ctx` tokens, BOS already put
/// in place of each chunk's first token when the tokenizer wants one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoredChunks {
    n_ctx: usize,
    /// Chunk `c` is `tokens[c * n_ctx..(c + 1) * n_ctx]`.
    tokens: Vec<u32>,
    /// Tokens in the whole text, scored or not.
    text_tokens: usize,
}

impl ScoredChunks {
    /// Tokenizes `text` and keeps at most `max_chunks` whole chunks (all when `None`).
    pub fn from_text(
        tokenizer: &tessera_tokenizer::Tokenizer,
        text: &str,
        n_ctx: usize,
        max_chunks: Option<usize>,
    ) -> Result<ScoredChunks, RuntimeError> {
        check_ctx(n_ctx)?;
        let add_bos = tokenizer.add_bos_by_default();
        let tokens = tokenizer.encode(text, add_bos, false);
        let available = tokens.len() / n_ctx;
        let chunks = max_chunks.map_or(available, |m| m.min(available));
        if chunks == 0 {
            return Err(RuntimeError::Invalid(format!(
                "the text has {} tokens, fewer than one chunk of {n_ctx}: give a longer text or a smaller context",
                tokens.len()
            )));
        }
        let text_tokens = tokens.len();
        let mut kept = tokens;
        kept.truncate(chunks * n_ctx);
        if add_bos {
            if let Some(bos) = tokenizer.bos_id() {
                kept.iter_mut().step_by(n_ctx).for_each(|t| *t = bos);
            }
        }
        Ok(ScoredChunks { n_ctx, tokens: kept, text_tokens })
    }

    /// Chunks given as evaluated (as a saved KL base holds them): `tokens.len()` must be a
    /// positive multiple of `n_ctx`.
    pub fn from_tokens(tokens: Vec<u32>, n_ctx: usize) -> Result<ScoredChunks, RuntimeError> {
        check_ctx(n_ctx)?;
        if tokens.is_empty() || !tokens.len().is_multiple_of(n_ctx) {
            return Err(RuntimeError::Invalid(format!("{} tokens do not make whole chunks of {n_ctx}", tokens.len())));
        }
        let text_tokens = tokens.len();
        Ok(ScoredChunks { n_ctx, tokens, text_tokens })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.n_ctx
    }

    /// Always false: there is at least one chunk.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokens of the text these chunks were cut from (the chunks may hold fewer).
    pub fn text_tokens(&self) -> usize {
        self.text_tokens
    }

    /// Every chunk's tokens, one after the other.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn chunk(&self, c: usize) -> &[u32] {
        &self.tokens[c * self.n_ctx..(c + 1) * self.n_ctx]
    }

    /// Keeps the first `chunks` chunks.
    pub fn truncate(&mut self, chunks: usize) {
        self.tokens.truncate(chunks.max(1) * self.n_ctx);
    }

    /// Index in a chunk of the first position whose logits are kept: row `j` of a chunk's
    /// logits (see [`ScoredChunks::eval`]) predicts `targets(c)[j]`.
    pub fn first_row(&self) -> usize {
        self.n_ctx / 2
    }

    /// Tokens scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first_row()
    }

    /// The scored tokens of chunk `c`, in order.
    pub fn targets(&self, c: usize) -> &[u32] {
        &self.chunk(c)[self.first_row() + 1..]
    }

    /// A context sized for these chunks.
    pub fn new_context<'m>(&self, model: &'m LoadedModel, n_batch: usize) -> Result<Context<'m>, RuntimeError> {
        model.new_context(ContextOptions {
            n_ctx: self.n_ctx,
            n_batch: n_batch.min(self.n_ctx),
            ..ContextOptions::default()
        })
    }

    /// Evaluates chunk `c` from an empty cache and returns the logits of its scored rows,
    /// `[scored_per_chunk, vocab]` (the chunk's last row predicts nothing and is dropped).
    pub fn eval(&self, ctx: &mut Context<'_>, c: usize) -> Result<Vec<f32>, RuntimeError> {
        ctx.clear();
        let mut logits = ctx.eval(self.chunk(c), Logits::From(self.first_row()))?;
        logits.truncate(self.scored_per_chunk() * ctx.model().config().vocab_size);
        Ok(logits)
    }
}

fn check_ctx(n_ctx: usize) -> Result<(), RuntimeError> {
    if n_ctx < MIN_CTX {
        return Err(RuntimeError::Invalid(format!("context {n_ctx} is too small to score (at least {MIN_CTX})")));
    }
    Ok(())
}

/// Running sums of negative log-likelihoods: llama-perplexity's estimate and its error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllSum {
    sum: f64,
    sum2: f64,
    count: usize,
}

impl NllSum {
    /// Adds one token whose log-probability was `log_prob`.
    pub fn push(&mut self, log_prob: f64) {
        self.sum -= log_prob;
        self.sum2 += log_prob * log_prob;
        self.count += 1;
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean negative log-likelihood per token (nats).
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    pub fn ppl(&self) -> f64 {
        self.mean().exp()
    }

    /// Standard error of [`NllSum::ppl`], as llama-perplexity's `+/-`.
    pub fn ppl_error(&self) -> f64 {
        let mean = self.mean();
        let var = (self.sum2 / self.count.max(1) as f64 - mean * mean).max(0.0);
        self.ppl() * (var / (self.count as f64 - 1.0).max(1.0)).sqrt()
    }
}

pub fn perplexity(
    model: &LoadedModel,
    text: &str,
    options: &PerplexityOptions,
) -> Result<PerplexityReport, RuntimeError> {
    let chunks = ScoredChunks::from_text(&model.tokenizer, text, options.n_ctx, options.max_chunks)?;
    let mut ctx = chunks.new_context(model, options.n_batch)?;
    let vocab = model.config().vocab_size;
    let mut nll = NllSum::default();
    let mut running = Vec::with_capacity(chunks.len());
    for c in 0..chunks.len() {
        let logits = chunks.eval(&mut ctx, c)?;
        for (row, &target) in logits.chunks_exact(vocab).zip(chunks.targets(c)) {
            nll.push(log_softmax_at(row, target as usize));
        }
        running.push(nll.ppl());
    }
    Ok(PerplexityReport {
        tokens: chunks.text_tokens(),
        chunks: chunks.len(),
        running,
        ppl: nll.ppl(),
        ppl_error: nll.ppl_error(),
    })
}

/// Natural log of softmax(`row`)[`target`], summed in f64.
pub(crate) fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_from_tokens_split_and_score_the_second_half() {
        let chunks = ScoredChunks::from_tokens((0..64).collect(), 32).expect("whole chunks");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks.first_row(), 16);
        assert_eq!(chunks.scored_per_chunk(), 15);
        assert_eq!(chunks.targets(1), &(49..64).collect::<Vec<u32>>()[..]);
        assert!(ScoredChunks::from_tokens((0..40).collect(), 32).is_err());
        assert!(ScoredChunks::from_tokens(Vec::new(), 32).is_err());
        let small = ScoredChunks::from_tokens((0..16).collect(), 8).expect_err("context too small");
        assert!(small.to_string().contains("too small"), "{small}");
    }

    #[test]
    fn nll_sum_matches_the_closed_form() {
        let mut nll = NllSum::default();
        for lp in [-1.0, -2.0, -3.0] {
            nll.push(lp);
        }
        assert!((nll.mean() - 2.0).abs() < 1e-12);
        assert!((nll.ppl() - 2f64.exp()).abs() < 1e-12);
        // Population variance 2/3, over n - 1 = 2: standard error sqrt(1/3), scaled by ppl.
        assert!((nll.ppl_error() - 2f64.exp() * (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn log_softmax_of_equal_logits_is_uniform() {
        let lp = log_softmax_at(&[3.0; 4], 2);
        assert!((lp + 4f64.ln()).abs() < 1e-12);
    }
}
