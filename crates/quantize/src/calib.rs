//! Calibration statistics: what the calibrated quantizers know of the activations entering
//! each matmul, gathered by running the source model on calibration text.
//!
//! Per input site (the rows entering Q/K/V, the attention output, gate/up, down) it keeps the
//! mean magnitude of every input channel (AWQ's `mean|x|`) and the second moment
//! `H = XᵀX / n`, from which a weight error's effect on the output follows:
//! `‖ΔW Xᵀ‖² / n = tr(ΔW H ΔWᵀ)`. While fewer rows than channels have been seen the rows
//! themselves are kept (smaller, and cheaper to evaluate); beyond that their Gram matrix, in f64.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use tessera_runtime::LoadedModel;

use crate::linalg::{self, cholesky_lower};
use crate::{Progress, QuantizeError};

/// Where a matmul's input comes from in a layer; the weights of one site see the same rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    /// The normed residual entering Q, K and V.
    AttnIn,
    /// The attention heads entering the output projection.
    AttnOut,
    /// The normed residual entering gate and up.
    FfnIn,
    /// The gated activation entering down.
    FfnDown,
}

impl Site {
    /// The layer and site of a matmul weight by its GGUF name.
    pub fn of(name: &str) -> Option<(usize, Site)> {
        let rest = name.strip_prefix("blk.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer = layer.parse().ok()?;
        let site = match rest {
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => Site::AttnIn,
            "attn_output.weight" => Site::AttnOut,
            "ffn_gate.weight" | "ffn_up.weight" => Site::FfnIn,
            "ffn_down.weight" => Site::FfnDown,
            _ => return None,
        };
        Some((layer, site))
    }

    /// The one weight per site whose inputs are recorded (the others see the same rows).
    fn recorded_by(name: &str) -> bool {
        name.ends_with(".attn_q.weight")
            || name.ends_with(".attn_output.weight")
            || name.ends_with(".ffn_up.weight")
            || name.ends_with(".ffn_down.weight")
    }
}

enum Moments {
    /// Row-major `[n, d]` rows, while `n <= d`.
    Rows(Vec<f32>),
    /// `Σ xᵀx`, row-major `[d, d]`.
    Gram(Vec<f64>),
}

/// Every how many rows one is kept as a sample, and how many at most (for searches that need
/// the rows themselves, such as W8A8 smoothing, whose error depends on each row's maximum).
const SAMPLE_STRIDE: usize = 4;
const MAX_SAMPLES: usize = 128;

/// Statistics of the rows entering one input site.
pub struct InputStats {
    d: usize,
    n: usize,
    abs_sum: Vec<f64>,
    abs_max: Vec<f32>,
    /// Every `SAMPLE_STRIDE`-th row from the fourth (so never the first token, whose activations
    /// are atypical), up to `MAX_SAMPLES`.
    samples: Vec<f32>,
    moments: Moments,
}

/// A matrix `F` (`[r, d]`, row-major) with `FᵀF = H`: `tr(ΔW H ΔWᵀ) = ‖ΔW Fᵀ‖²`.
pub struct Factor {
    pub rows: usize,
    pub f: Vec<f32>,
    /// `F` is upper triangular (`r == d`), so row `i` is zero before column `i`.
    pub upper: bool,
}

impl InputStats {
    pub fn new(d: usize) -> InputStats {
        InputStats {
            d,
            n: 0,
            abs_sum: vec![0.0; d],
            abs_max: vec![0.0; d],
            samples: Vec::new(),
            moments: Moments::Rows(Vec::new()),
        }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// Rows seen.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Adds rows (row-major `[n, d]`).
    pub fn add(&mut self, rows: &[f32]) {
        let d = self.d;
        if d == 0 || rows.is_empty() {
            return;
        }
        let n_new = rows.len() / d;
        for (i, row) in rows.chunks_exact(d).enumerate() {
            for ((s, m), &x) in self.abs_sum.iter_mut().zip(&mut self.abs_max).zip(row) {
                *s += x.abs() as f64;
                *m = m.max(x.abs());
            }
            if (self.n + i) % SAMPLE_STRIDE == SAMPLE_STRIDE - 1 && self.samples.len() < MAX_SAMPLES * d {
                self.samples.extend_from_slice(row);
            }
        }
        self.n += n_new;
        match &mut self.moments {
            Moments::Rows(kept) if self.n <= d => kept.extend_from_slice(&rows[..n_new * d]),
            Moments::Rows(kept) => {
                let mut gram = vec![0f64; d * d];
                add_gram(&mut gram, kept, d);
                add_gram(&mut gram, &rows[..n_new * d], d);
                self.moments = Moments::Gram(gram);
            }
            Moments::Gram(gram) => add_gram(gram, &rows[..n_new * d], d),
        }
    }

    /// Largest magnitude of each input channel.
    pub fn abs_max(&self) -> &[f32] {
        &self.abs_max
    }

    /// The kept sample rows, row-major `[n, d]`.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    /// Mean magnitude of each input channel.
    pub fn mean_abs(&self) -> Vec<f32> {
        let n = self.n.max(1) as f64;
        self.abs_sum.iter().map(|s| (s / n) as f32).collect()
    }

    /// `H = XᵀX / n`, row-major `[d, d]`.
    pub fn hessian(&self) -> Vec<f64> {
        let d = self.d;
        let n = self.n.max(1) as f64;
        let mut h = match &self.moments {
            Moments::Gram(g) => g.clone(),
            Moments::Rows(x) => {
                let mut g = vec![0f64; d * d];
                add_gram(&mut g, x, d);
                g
            }
        };
        for v in &mut h {
            *v /= n;
        }
        h
    }

    /// A factor of `H` for evaluating output errors: the rows scaled by `1/√n` while they are
    /// kept, else `Lᵀ` of the Cholesky factorization of `H` with a tiny relative damping (which
    /// makes a rank-deficient `H` factorizable and changes no comparison in practice).
    pub fn factor(&self) -> Factor {
        let d = self.d;
        match &self.moments {
            Moments::Rows(x) => {
                let s = 1.0 / (self.n.max(1) as f32).sqrt();
                Factor { rows: self.n, f: x.iter().map(|v| v * s).collect(), upper: false }
            }
            Moments::Gram(_) => {
                let h = self.hessian();
                let mean_diag = (0..d).map(|i| h[i * d + i]).sum::<f64>() / d.max(1) as f64;
                let mut damp = 1e-7 * mean_diag.max(f64::MIN_POSITIVE);
                loop {
                    let mut l = h.clone();
                    for i in 0..d {
                        l[i * d + i] += damp;
                    }
                    if cholesky_lower(&mut l, d).is_ok() {
                        let mut f = vec![0f32; d * d];
                        for i in 0..d {
                            for j in 0..=i {
                                f[j * d + i] = l[i * d + j] as f32;
                            }
                        }
                        return Factor { rows: d, f, upper: true };
                    }
                    // Rounding can leave a singular H slightly indefinite; damp more.
                    damp *= 100.0;
                }
            }
        }
    }
}

/// `gram += XᵀX` for row-major `x` (`[n, d]`): the product of the transpose with itself,
/// in f32 per call and accumulated in f64.
fn add_gram(gram: &mut [f64], x: &[f32], d: usize) {
    let n = x.len() / d;
    if n == 0 {
        return;
    }
    let mut xt = vec![0f32; d * n];
    for (r, row) in x.chunks_exact(d).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            xt[c * n + r] = v;
        }
    }
    let g = linalg::gram(&xt, d, n);
    for (acc, v) in gram.iter_mut().zip(g) {
        *acc += v as f64;
    }
}

/// Statistics per layer and site.
pub type Calibration = BTreeMap<(usize, Site), InputStats>;

/// Tokens per calibration sequence: each starts at position 0, as llm-compressor's samples do.
pub const SEQUENCE_TOKENS: usize = 512;

/// The calibration text cut into sequences of at most [`SEQUENCE_TOKENS`] tokens, each with
/// BOS when the tokenizer adds one by default.
pub fn sequences(model: &LoadedModel, text: &str) -> Result<Vec<Vec<u32>>, QuantizeError> {
    let tok = &model.tokenizer;
    let ids = tok.encode(text, false, false);
    if ids.is_empty() {
        return Err(QuantizeError::Invalid("the calibration text gives no tokens".into()));
    }
    let bos = tok.bos_id().filter(|_| tok.add_bos_by_default());
    let room = SEQUENCE_TOKENS - usize::from(bos.is_some());
    Ok(ids.chunks(room).map(|c| bos.into_iter().chain(c.iter().copied()).collect()).collect())
}

/// Loads the source on the CPU backend, with as many threads as the rayon pool has.
pub fn load_model(source: &Path) -> Result<LoadedModel, QuantizeError> {
    let threads = rayon::current_num_threads().max(1);
    let backend = Arc::new(tessera_backend_cpu::CpuBackend::new(threads));
    Ok(LoadedModel::load(source, backend, None)?)
}

/// Cuts `layers` (in order) into consecutive groups whose statistics, `bytes_of` each, fit
/// `budget` together; a group holds at least one layer.
pub fn windows<T>(
    layers: Vec<(usize, T)>,
    budget: usize,
    bytes_of: impl Fn(usize, &T) -> usize,
) -> Vec<Vec<(usize, T)>> {
    let mut groups: Vec<Vec<(usize, T)>> = Vec::new();
    let mut bytes = 0;
    for (layer, item) in layers {
        let b = bytes_of(layer, &item);
        match groups.last_mut() {
            Some(group) if bytes + b <= budget => {
                bytes += b;
                group.push((layer, item));
            }
            _ => {
                bytes = b;
                groups.push(vec![(layer, item)]);
            }
        }
    }
    groups
}

/// Runs the model over `sequences` and gathers the statistics of the sites of `layers` for
/// which `wanted` is true.
pub fn collect(
    model: &LoadedModel,
    sequences: &[Vec<u32>],
    layers: Range<usize>,
    wanted: &dyn Fn(usize, Site) -> bool,
    progress: &mut dyn Progress,
) -> Result<Calibration, QuantizeError> {
    let mut stats = Calibration::new();
    let tokens: usize = sequences.iter().map(Vec::len).sum();
    let start = std::time::Instant::now();
    for seq in sequences {
        model.capture_linear_inputs(seq, SEQUENCE_TOKENS, &mut |name, rows, in_dim| {
            if !Site::recorded_by(name) {
                return;
            }
            let Some((layer, site)) = Site::of(name) else { return };
            if layers.contains(&layer) && wanted(layer, site) {
                stats.entry((layer, site)).or_insert_with(|| InputStats::new(in_dim)).add(rows);
            }
        })?;
    }
    progress.message(&format!(
        "calibrated layers {}..{} on {tokens} tokens ({} sequences) in {:.1} s",
        layers.start,
        layers.end,
        sequences.len(),
        start.elapsed().as_secs_f64()
    ));
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::sum_sq_nt;
    use crate::linalg::tests::Rng;

    fn direct_hessian(x: &[f32], d: usize) -> Vec<f64> {
        let n = x.len() / d;
        let mut h = vec![0f64; d * d];
        for row in x.chunks_exact(d) {
            for i in 0..d {
                for j in 0..d {
                    h[i * d + j] += row[i] as f64 * row[j] as f64 / n as f64;
                }
            }
        }
        h
    }

    #[test]
    fn windows_fill_the_budget_in_order_and_hold_at_least_one_layer() {
        let layers: Vec<(usize, usize)> = vec![(0, 4), (1, 4), (2, 9), (3, 1), (4, 2)];
        let groups = windows(layers, 8, |_, &b| b);
        let ids: Vec<Vec<usize>> = groups.iter().map(|g| g.iter().map(|(l, _)| *l).collect()).collect();
        assert_eq!(ids, vec![vec![0, 1], vec![2], vec![3, 4]]);
    }

    #[test]
    fn sites_are_named_by_weight() {
        assert_eq!(Site::of("blk.3.attn_k.weight"), Some((3, Site::AttnIn)));
        assert_eq!(Site::of("blk.12.ffn_down.weight"), Some((12, Site::FfnDown)));
        assert_eq!(Site::of("blk.0.ffn_gate.weight"), Some((0, Site::FfnIn)));
        assert_eq!(Site::of("blk.0.attn_norm.weight"), None);
        assert_eq!(Site::of("output.weight"), None);
        assert!(Site::recorded_by("blk.1.attn_q.weight") && !Site::recorded_by("blk.1.attn_v.weight"));
    }

    #[test]
    fn statistics_agree_before_and_after_switching_to_the_gram_matrix() {
        let d = 6;
        let mut rng = Rng(3);
        let mut stats = InputStats::new(d);
        let mut all = Vec::new();
        for n in [2, 3, 4, 1] {
            let rows = rng.vec(n * d);
            stats.add(&rows);
            all.extend_from_slice(&rows);
            let want = direct_hessian(&all, d);
            for (a, b) in stats.hessian().iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "after {} rows", all.len() / d);
            }
            // ‖ΔW Fᵀ‖² is tr(ΔW H ΔWᵀ) for any ΔW.
            let dw = rng.vec(3 * d);
            let f = stats.factor();
            let got = sum_sq_nt(&dw, &f.f, 3, f.rows, d, f.upper);
            let mut want_loss = 0.0;
            for r in 0..3 {
                for i in 0..d {
                    for j in 0..d {
                        want_loss += dw[r * d + i] as f64 * want[i * d + j] * dw[r * d + j] as f64;
                    }
                }
            }
            assert!((got - want_loss).abs() < 1e-4 * (1.0 + want_loss), "{got} vs {want_loss}");
            assert_eq!(f.upper, all.len() / d > d);
        }
        assert_eq!(stats.count(), 10);
        let mean: Vec<f32> = (0..d).map(|c| all.chunks_exact(d).map(|r| r[c].abs()).sum::<f32>() / 10.0).collect();
        for (a, b) in stats.mean_abs().iter().zip(&mean) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn a_rank_deficient_gram_matrix_still_factors() {
        // Eight identical rows of width 4: H has rank 1.
        let mut stats = InputStats::new(4);
        for _ in 0..8 {
            stats.add(&[1.0, -2.0, 0.0, 3.0]);
        }
        let f = stats.factor();
        assert!(f.upper && f.f.iter().all(|v| v.is_finite()));
        let loss = sum_sq_nt(&[1.0, 1.0, 1.0, 1.0], &f.f, 1, 4, 4, true);
        assert!((loss - 4.0).abs() < 1e-3, "{loss}");
    }
}
