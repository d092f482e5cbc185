//! Comparing models against a reference on the same tokens, as llama-perplexity's
//! `--kl-divergence` does: each model's perplexity, the KL divergence from the reference's
//! next-token distribution to the model's at every scored token, and how often both put the
//! same token first. Also bits per weight, so quality can be set against size.
//!
//! The reference's distributions are kept as llama.cpp keeps them: log-probabilities quantized
//! to 16 bits per token over the 16 nats below the most likely token ([`LogProbRows`]). They
//! are the same whether the reference runs now or is read back from a saved file
//! ([`crate::kl_base`]), so both give identical figures. Memory stays at one chunk: the reference
//! runs on a chunk, then each model runs on the same chunk and is scored against it.

use tessera_formats::ModelSource;

use crate::context::{Context, LoadedModel};
use crate::kl_base::{KlBaseReader, KlBaseWriter};
use crate::perplexity::{NllSum, ScoredChunks};
use crate::RuntimeError;

/// Log-probabilities further than this below the most likely token are not kept (llama.cpp's
/// cut-off): they are quantized to the floor and left out of the KL sum.
const LOG_PROB_RANGE: f32 = 16.0;

/// Bookkeeping of one quantized row: what a reader needs besides its 16-bit values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowHead {
    /// Exact log-probability of the token that came next in the text.
    pub target_log_prob: f32,
    /// The most likely token (the first one of equal logits), taken before quantization.
    pub top: u32,
    /// Log-probability of value `q` is `scale * q + min`.
    pub scale: f32,
    pub min: f32,
}

/// One chunk's reference log-probabilities: a [`RowHead`] and `vocab` 16-bit values per scored
/// token.
#[derive(Clone, Debug, PartialEq)]
pub struct LogProbRows {
    vocab: usize,
    heads: Vec<RowHead>,
    values: Vec<u16>,
}

impl LogProbRows {
    /// Quantizes `logits` (`[targets.len(), vocab]`), row `j` predicting `targets[j]`.
    pub fn quantize(logits: &[f32], vocab: usize, targets: &[u32]) -> Result<LogProbRows, RuntimeError> {
        check_rows(logits.len(), vocab, targets)?;
        let mut rows = LogProbRows::with_capacity(vocab, targets.len());
        for (row, &target) in logits.chunks_exact(vocab).zip(targets) {
            rows.push_row(row, target as usize);
        }
        Ok(rows)
    }

    pub(crate) fn with_capacity(vocab: usize, rows: usize) -> LogProbRows {
        LogProbRows { vocab, heads: Vec::with_capacity(rows), values: Vec::with_capacity(rows * vocab) }
    }

    /// Adds a row read back from storage; `values` holds `vocab` entries.
    pub(crate) fn push_stored(&mut self, head: RowHead, values: &[u16]) {
        debug_assert_eq!(values.len(), self.vocab);
        self.heads.push(head);
        self.values.extend_from_slice(values);
    }

    /// Quantizes one row as llama-perplexity's `log_softmax` does (same arithmetic, so the
    /// values match a file it writes), adding the exact target log-probability and top token.
    fn push_row(&mut self, logits: &[f32], target: usize) {
        let (top, max) = argmax(logits);
        let low = logits.iter().copied().fold(f32::INFINITY, f32::min).max(max - LOG_PROB_RANGE);
        let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
        let log_sum_exp = sum_exp.ln() as f32;
        let scale = (max - low) / 65535.0;
        let head = RowHead {
            target_log_prob: log_prob(logits, target, max, sum_exp.ln()) as f32,
            top: top as u32,
            scale,
            min: low - max - log_sum_exp,
        };
        self.heads.push(head);
        if scale > 0.0 {
            let inv = 1.0 / scale;
            self.values
                .extend(logits.iter().map(|&l| if l > low { (inv * (l - low)).round_ties_even() as u16 } else { 0 }));
        } else {
            self.values.extend(std::iter::repeat_n(0u16, logits.len()));
        }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Number of rows (scored tokens).
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    pub fn head(&self, row: usize) -> RowHead {
        self.heads[row]
    }

    /// The 16-bit values of row `row`.
    pub fn values(&self, row: usize) -> &[u16] {
        &self.values[row * self.vocab..(row + 1) * self.vocab]
    }

    /// Log-probability of `token` in row `row`, as stored (within `scale / 2` of the exact one
    /// for tokens within 16 nats of the top).
    pub fn log_prob(&self, row: usize, token: usize) -> f32 {
        let h = self.heads[row];
        h.scale * self.values(row)[token] as f32 + h.min
    }

    /// Compares row `row` of the reference with a model's `logits` for the same position.
    pub fn compare(&self, row: usize, logits: &[f32]) -> TokenComparison {
        let head = self.heads[row];
        let (top, max) = argmax(logits);
        let sum_exp: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        // log q_i = l_i - (max + ln sum_exp).
        let norm = max as f64 + sum_exp.ln();
        let mut kl = 0f64;
        for (&q, &l) in self.values(row).iter().zip(logits) {
            let lp_ref = head.scale * q as f32 + head.min;
            if lp_ref > -LOG_PROB_RANGE {
                let lp_ref = lp_ref as f64;
                kl += lp_ref.exp() * (lp_ref - (l as f64 - norm));
            }
        }
        TokenComparison { kl, same_top: top as u32 == head.top }
    }
}

fn check_rows(len: usize, vocab: usize, targets: &[u32]) -> Result<(), RuntimeError> {
    if vocab == 0 || len != vocab * targets.len() {
        return Err(RuntimeError::Invalid(format!(
            "{len} logits are not {} rows of vocabulary {vocab}",
            targets.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(RuntimeError::BadToken { id: t, vocab });
    }
    Ok(())
}

/// Index and value of the largest logit, the first of equals.
fn argmax(logits: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            best = (i, l);
        }
    }
    best
}

/// log softmax(logits)[target], given the row's max and ln Σ exp(l - max).
fn log_prob(logits: &[f32], target: usize, max: f32, ln_sum_exp: f64) -> f64 {
    logits[target] as f64 - max as f64 - ln_sum_exp
}

/// How a model's distribution at one token compares with the reference's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenComparison {
    /// KL(reference ‖ model) in nats, over the tokens the reference keeps.
    pub kl: f64,
    /// Both put the same token first.
    pub same_top: bool,
}

/// Distribution of per-token KL divergences, as llama-perplexity summarizes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlStats {
    pub mean: f64,
    /// Standard error of the mean (0 for 10 tokens or fewer, as llama.cpp).
    pub mean_error: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl KlStats {
    /// Summarizes `values` (any order); `None` when there are none.
    pub fn from_values(values: &[f64]) -> Option<KlStats> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (mean, mean_error) = mean_and_error(values);
        Some(KlStats {
            mean,
            mean_error,
            median: percentile(&sorted, 0.5),
            p90: percentile(&sorted, 0.9),
            p99: percentile(&sorted, 0.99),
            p999: percentile(&sorted, 0.999),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Mean and its standard error, as llama-perplexity's `mean_and_uncertainty`.
fn mean_and_error(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| v * v).sum::<f64>() / n as f64 - mean * mean;
    let error = if var > 0.0 && n > 10 { (var / (n - 1) as f64).sqrt() } else { 0.0 };
    (mean, error)
}

/// The `fraction` quantile of ascending `sorted` (non-empty), interpolating linearly between
/// neighbours as llama-perplexity does; the median of an even count is the middle pair's mean.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p as usize;
    let frac = p - i as f64;
    (1.0 - frac) * sorted[i] + frac * sorted[(i + 1).min(sorted.len() - 1)]
}

/// Size of a model's weights, from its file: what bits per weight counts.
///
/// A weight is every tensor of two or more dimensions (embeddings, attention and FFN matrices,
/// the output head), together with the bytes of its companion `<name>.scale` tensor when it has
/// one. One-dimensional tensors (norms, biases) are left out: every format keeps them in full
/// precision, and they would blur the cost of the matrices' format. A tied output head is stored
/// once and counted once. llama.cpp's `BPW` divides the whole file's tensor bytes by all values
/// instead, so it comes out slightly higher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightStats {
    /// Bytes of the weights (as stored, companion scales included).
    pub weight_bytes: u64,
    /// Values in the weights.
    pub weight_values: u64,
    /// Bytes of every tensor in the model.
    pub total_bytes: u64,
}

impl WeightStats {
    pub fn of(source: &ModelSource) -> WeightStats {
        let mut stats = WeightStats::default();
        for t in &source.tensors {
            let bytes = t.bytes.as_ref().len() as u64;
            stats.total_bytes += bytes;
            if t.shape.rank() >= 2 {
                stats.weight_bytes += bytes;
                stats.weight_values += t.shape.count() as u64;
            } else if let Some(base) = t.name.strip_suffix(".scale") {
                let owner = source.tensor(&format!("{base}.weight")).or_else(|| source.tensor(base));
                if owner.is_some_and(|w| w.shape.rank() >= 2) {
                    stats.weight_bytes += bytes;
                }
            }
        }
        stats
    }

    /// Bits per weight value; 0 when the model has no weights.
    pub fn bits_per_weight(&self) -> f64 {
        if self.weight_values == 0 {
            0.0
        } else {
            self.weight_bytes as f64 * 8.0 / self.weight_values as f64
        }
    }
}

/// Agreement between a model and the reference over all scored tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub kl: KlStats,
    /// Fraction of tokens where both put the same token first.
    pub same_top: f64,
    /// Its standard error (binomial).
    pub same_top_error: f64,
}

/// One model's scores over the chunks.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelScores {
    pub ppl: f64,
    pub ppl_error: f64,
    /// Against the reference; `None` for the reference itself.
    pub comparison: Option<Comparison>,
}

/// What [`compare_models`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub n_ctx: usize,
    pub chunks: usize,
    /// Tokens scored per model.
    pub tokens_scored: usize,
    /// The reference's perplexity (from its exact target log-probabilities).
    pub reference: ModelScores,
    /// One entry per compared model, in order.
    pub models: Vec<ModelScores>,
}

/// Where the reference's log-probabilities come from.
pub enum Reference<'a> {
    /// Run this model on every chunk.
    Model(&'a LoadedModel),
    /// Read them from a saved KL base, whose header the caller has checked against the chunks.
    Saved(&'a mut KlBaseReader),
}

/// A [`Reference`] made ready to give rows.
enum Source<'a, 'm> {
    Run(Context<'m>),
    Read(&'a mut KlBaseReader),
}

/// Running totals of one compared model.
#[derive(Default)]
struct Tally {
    nll: NllSum,
    kl: Vec<f64>,
    same_top: usize,
}

impl Tally {
    fn scores(&self) -> ModelScores {
        let comparison = KlStats::from_values(&self.kl).map(|kl| {
            let n = self.kl.len();
            let p = self.same_top as f64 / n as f64;
            let same_top_error = (p * (1.0 - p) / (n as f64 - 1.0).max(1.0)).sqrt();
            Comparison { kl, same_top: p, same_top_error }
        });
        ModelScores { ppl: self.nll.ppl(), ppl_error: self.nll.ppl_error(), comparison }
    }
}

/// A compared model, scored chunk by chunk from an empty cache: a Tessera model with its
/// context ([`ContextScorer`]), or a model compiled by another runtime.
pub trait ChunkScorer {
    fn vocab_size(&self) -> usize;
    /// How errors name the model.
    fn describe(&self) -> String;
    /// The logits of chunk `c`'s scored rows, `[chunks.scored_per_chunk(), vocab]`.
    fn score(&mut self, chunks: &ScoredChunks, c: usize) -> Result<Vec<f32>, RuntimeError>;
}

/// A Tessera model scored through its own context.
pub struct ContextScorer<'m> {
    ctx: Context<'m>,
}

impl<'m> ContextScorer<'m> {
    pub fn new(model: &'m LoadedModel, chunks: &ScoredChunks, n_batch: usize) -> Result<Self, RuntimeError> {
        Ok(ContextScorer { ctx: chunks.new_context(model, n_batch)? })
    }
}

impl ChunkScorer for ContextScorer<'_> {
    fn vocab_size(&self) -> usize {
        self.ctx.model().config().vocab_size
    }

    fn describe(&self) -> String {
        self.ctx.model().source.path.display().to_string()
    }

    fn score(&mut self, chunks: &ScoredChunks, c: usize) -> Result<Vec<f32>, RuntimeError> {
        chunks.eval(&mut self.ctx, c)
    }
}

/// Scores every model in `models` on `chunks` against `reference`, one chunk at a time: the
/// reference's rows for a chunk (written to `save` when given), then each model on that chunk.
/// Every model's vocabulary must have `vocab` tokens, the reference's. `progress` hears the
/// number of chunks done after each one.
pub fn compare_models(
    chunks: &ScoredChunks,
    vocab: usize,
    reference: Reference<'_>,
    models: &mut [Box<dyn ChunkScorer + '_>],
    n_batch: usize,
    mut save: Option<&mut KlBaseWriter>,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalReport, RuntimeError> {
    let mismatch = |name: String, v: usize| {
        RuntimeError::Invalid(format!(
            "{name} has a vocabulary of {v} tokens but the reference has {vocab}: models compared on the same \
             tokens must share a tokenizer"
        ))
    };
    if let Reference::Model(m) = &reference {
        if m.config().vocab_size != vocab {
            return Err(mismatch(name_of(m, 0), m.config().vocab_size));
        }
    }
    let offset = matches!(reference, Reference::Model(_)) as usize;
    for (i, m) in models.iter().enumerate() {
        if m.vocab_size() != vocab {
            return Err(mismatch(format!("model {} ({})", i + 1 + offset, m.describe()), m.vocab_size()));
        }
    }
    let mut source = match reference {
        Reference::Model(m) => Source::Run(chunks.new_context(m, n_batch)?),
        Reference::Saved(reader) => Source::Read(reader),
    };
    let mut reference_nll = NllSum::default();
    let mut tallies: Vec<Tally> = models.iter().map(|_| Tally::default()).collect();
    for c in 0..chunks.len() {
        let targets = chunks.targets(c);
        let rows = match &mut source {
            Source::Run(ctx) => LogProbRows::quantize(&chunks.eval(ctx, c)?, vocab, targets)?,
            Source::Read(reader) => reader.read_chunk()?,
        };
        if rows.len() != targets.len() || rows.vocab() != vocab {
            return Err(RuntimeError::Invalid(format!(
                "reference rows of chunk {} hold {} × {} values, expected {} × {vocab}",
                c + 1,
                rows.len(),
                rows.vocab(),
                targets.len()
            )));
        }
        if let Some(w) = save.as_deref_mut() {
            w.write_chunk(&rows)?;
        }
        for j in 0..rows.len() {
            reference_nll.push(rows.head(j).target_log_prob as f64);
        }
        for (model, tally) in models.iter_mut().zip(&mut tallies) {
            let logits = model.score(chunks, c)?;
            for (j, (row, &target)) in logits.chunks_exact(vocab).zip(targets).enumerate() {
                let (_, max) = argmax(row);
                let sum_exp: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
                tally.nll.push(log_prob(row, target as usize, max, sum_exp.ln()));
                let cmp = rows.compare(j, row);
                tally.kl.push(cmp.kl);
                tally.same_top += cmp.same_top as usize;
            }
        }
        progress(c + 1);
    }
    if let Some(w) = save {
        w.finish()?;
    }
    Ok(EvalReport {
        n_ctx: chunks.n_ctx(),
        chunks: chunks.len(),
        tokens_scored: reference_nll.count(),
        reference: ModelScores { ppl: reference_nll.ppl(), ppl_error: reference_nll.ppl_error(), comparison: None },
        models: tallies.iter().map(Tally::scores).collect(),
    })
}

/// How errors name a model: its file, with its place in the list.
fn name_of(model: &LoadedModel, index: usize) -> String {
    format!("model {} ({})", index + 1, model.source.path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perplexity::log_softmax_at;

    fn rows(logits: &[f32], vocab: usize, targets: &[u32]) -> LogProbRows {
        LogProbRows::quantize(logits, vocab, targets).expect("valid rows")
    }

    #[test]
    fn identical_distributions_have_zero_kl_and_agree() {
        let logits = [1.0, 2.5, -0.5, 0.0, 3.0, 0.25];
        let r = rows(&logits, 6, &[1]);
        let cmp = r.compare(0, &logits);
        assert!(cmp.kl.abs() < 1e-6, "{}", cmp.kl);
        assert!(cmp.same_top);
        // A uniform row quantizes with scale 0 and compares exactly.
        let flat = [0.5f32; 5];
        let cmp = rows(&flat, 5, &[0]).compare(0, &flat);
        assert!(cmp.kl.abs() < 1e-6 && cmp.same_top, "{cmp:?}");
    }

    #[test]
    fn kl_matches_a_hand_computed_example() {
        // Reference p = (1/2, 1/4, 1/4); model q = (1/4, 1/2, 1/4).
        // KL(p‖q) = 1/2 ln 2 + 1/4 ln(1/2) + 0 = ln(2) / 4.
        let p = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let q = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
        let cmp = rows(&p, 3, &[2]).compare(0, &q);
        assert!((cmp.kl - 2f64.ln() / 4.0).abs() < 1e-4, "{}", cmp.kl);
        assert!(!cmp.same_top);
        // Logits are shift-invariant: adding 7 to the model's changes nothing.
        let shifted: Vec<f32> = q.iter().map(|l| l + 7.0).collect();
        let again = rows(&p, 3, &[2]).compare(0, &shifted);
        assert!((again.kl - cmp.kl).abs() < 1e-6);
    }

    #[test]
    fn stored_log_probs_are_close_and_the_target_is_exact() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 23) as f32 * 0.7 - 20.0 * (i % 2) as f32).collect();
        let r = rows(&logits, 50, &[7]);
        let head = r.head(0);
        assert!((head.target_log_prob as f64 - log_softmax_at(&logits, 7)).abs() < 1e-5);
        assert_eq!(head.top as usize, argmax(&logits).0);
        for (i, _) in logits.iter().enumerate() {
            let exact = log_softmax_at(&logits, i);
            if exact > -15.0 {
                assert!((r.log_prob(0, i) as f64 - exact).abs() <= head.scale as f64, "token {i}");
            } else {
                assert!(r.log_prob(0, i) as f64 <= -15.0, "token {i} is cut off at the floor");
            }
        }
    }

    #[test]
    fn top1_agreement_follows_the_argmax() {
        let reference = [0.0, 5.0, 1.0, 4.9];
        let r = rows(&reference, 4, &[0]);
        assert!(r.compare(0, &[0.0, 2.0, 1.0, 1.9]).same_top);
        assert!(!r.compare(0, &[0.0, 4.9, 1.0, 5.0]).same_top);
        // Ties go to the first token, on both sides.
        assert_eq!(argmax(&[1.0, 3.0, 3.0]).0, 1);
    }

    #[test]
    fn bad_rows_are_refused() {
        assert!(LogProbRows::quantize(&[0.0; 5], 3, &[0]).is_err());
        assert!(matches!(LogProbRows::quantize(&[0.0; 3], 3, &[3]), Err(RuntimeError::BadToken { id: 3, vocab: 3 })));
        assert!(LogProbRows::quantize(&[], 0, &[]).is_err());
    }

    #[test]
    fn percentiles_interpolate_like_llama_perplexity() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert!((percentile(&v, 0.99) - 9.9).abs() < 1e-12);
        assert!((percentile(&v, 0.25) - 2.5).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 0.0);
        assert_eq!(percentile(&v, 1.0), 10.0);
        // An even count: the median is the middle pair's mean.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn kl_stats_summarize_in_any_order() {
        let values: Vec<f64> = (0..100).rev().map(|i| i as f64 / 100.0).collect();
        let s = KlStats::from_values(&values).expect("values");
        assert!((s.mean - 0.495).abs() < 1e-12);
        assert!((s.median - 0.495).abs() < 1e-12);
        assert!((s.p99 - 0.9801).abs() < 1e-12);
        assert_eq!(s.max, 0.99);
        // Population variance of 0..99 / 100 is 0.083325; over n - 1 = 99.
        assert!((s.mean_error - (0.083325f64 / 99.0).sqrt()).abs() < 1e-9);
        assert!(KlStats::from_values(&[]).is_none());
        assert_eq!(KlStats::from_values(&[0.5; 5]).map(|s| s.mean_error), Some(0.0));
    }

    #[test]
    fn agreement_reports_a_binomial_error() {
        let tally = Tally { nll: NllSum::default(), kl: vec![0.0; 5], same_top: 4 };
        let c = tally.scores().comparison.expect("compared");
        assert!((c.same_top - 0.8).abs() < 1e-12);
        assert!((c.same_top_error - (0.8f64 * 0.2 / 4.0).sqrt()).abs() < 1e-12);
    }
}
