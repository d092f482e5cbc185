//! AWQ-style activation-aware scaling (Lin et al., 2023; llm-compressor's `AWQModifier`):
//! input channels that carry large activations matter more, so before rounding, the weights
//! reading them are multiplied by a per-channel scale `s` and the operator producing those
//! activations is divided by it. The float model computes the same function; the rounded one
//! loses less where it counts.
//!
//! For the weights sharing one input (Q/K/V, gate/up, ...) the scales are searched over
//! `s = mean|x|^α` (normalized by `√(max s · min s)`) for α on a grid over [0, 1], minimizing the
//! output error `Σ tr(ΔW H ΔWᵀ)` with `ΔW = W - Q(W diag(s)) diag(s)⁻¹`, which is the squared
//! error of the layers' outputs over the calibration rows. α = 0 gives `s = 1`, plain
//! rounding, so the choice is never worse than round-to-nearest on that measure.
//!
//! Folding keeps the checkpoint a plain W4A16 model: scales go into the RMS norm before the
//! weights (`w / s`, or for Gemma's `1 + w` norm, `(1 + w) / s - 1`), or into the output rows of
//! the projection before them (up for down, V for O when V's outputs are O's inputs).

use crate::calib::Factor;
use crate::linalg::sum_sq_nt;

/// Grid points α = i / (n - 1) (llm-compressor's `n_grid`).
pub const GRID: usize = 20;
/// Smallest scale before normalization (llm-compressor's clamp).
const MIN_SCALE: f32 = 1e-4;

/// A weight reading the shared input: row-major `[rows, cols]`, `cols` being the input width.
pub struct Balance<'a> {
    pub w: &'a [f32],
    pub rows: usize,
}

/// The outcome of a search.
#[derive(Clone, Debug)]
pub struct Choice {
    pub alpha: f32,
    /// Per input channel; all 1 when α = 0 won.
    pub scales: Vec<f32>,
    /// Output error of the chosen scales and of plain rounding (α = 0).
    pub loss: f64,
    pub rtn_loss: f64,
}

/// The scales of grid point `alpha`.
pub fn scales_for(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
    let mut s: Vec<f32> = mean_abs.iter().map(|&m| m.powf(alpha).max(MIN_SCALE)).collect();
    let (lo, hi) = s.iter().fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (hi * lo).sqrt();
    for v in &mut s {
        *v /= norm;
        if !v.is_finite() {
            *v = 1.0;
        }
    }
    s
}

/// Output error of `balance` when each is scaled by `s`, fake-quantized and scaled back.
fn loss(balance: &[Balance<'_>], s: &[f32], factor: &Factor, fake_quantize: &dyn Fn(&[f32], usize) -> Vec<f32>) -> f64 {
    let cols = s.len();
    balance
        .iter()
        .map(|b| {
            let mut scaled = b.w.to_vec();
            scale_columns(&mut scaled, cols, s);
            let q = fake_quantize(&scaled, b.rows);
            let dw: Vec<f32> = b.w.iter().zip(&q).enumerate().map(|(i, (&w, &q))| w - q / s[i % cols]).collect();
            sum_sq_nt(&dw, &factor.f, b.rows, factor.rows, cols, factor.upper)
        })
        .sum()
}

/// Searches the scales for weights sharing an input with channel magnitudes `mean_abs` and
/// second moment `factor`. `fake_quantize(w, rows)` returns the matrix as the checkpoint will
/// hold it.
pub fn search(
    balance: &[Balance<'_>],
    mean_abs: &[f32],
    factor: &Factor,
    fake_quantize: &dyn Fn(&[f32], usize) -> Vec<f32>,
) -> Choice {
    let mut best: Option<Choice> = None;
    let mut rtn_loss = f64::NAN;
    for i in 0..GRID {
        let alpha = i as f32 / (GRID - 1) as f32;
        let s = scales_for(mean_abs, alpha);
        let l = loss(balance, &s, factor, fake_quantize);
        if i == 0 {
            rtn_loss = l;
        }
        // Strictly better only: ties keep the smaller α (plain rounding first of all).
        if l.is_finite() && best.as_ref().is_none_or(|b| l < b.loss) {
            best = Some(Choice { alpha, scales: s, loss: l, rtn_loss });
        }
    }
    let mut best = best.unwrap_or(Choice { alpha: 0.0, scales: vec![1.0; mean_abs.len()], loss: rtn_loss, rtn_loss });
    best.rtn_loss = rtn_loss;
    best
}

/// `w[:, c] *= s[c]` for row-major `w` of `cols` columns.
pub fn scale_columns(w: &mut [f32], cols: usize, s: &[f32]) {
    for row in w.chunks_exact_mut(cols) {
        for (v, &f) in row.iter_mut().zip(s) {
            *v *= f;
        }
    }
}

/// `w[r, :] /= s[r]` for row-major `w` of `cols` columns (an output-side fold; a bias is
/// divided the same way by calling this with `cols == 1`).
pub fn divide_rows(w: &mut [f32], cols: usize, s: &[f32]) {
    for (row, &f) in w.chunks_exact_mut(cols).zip(s) {
        for v in row {
            *v /= f;
        }
    }
}

/// Folds `1/s` into an RMS norm's weight as Hugging Face stores it: `w / s`, or with
/// `one_plus` (Gemma, whose norm multiplies by `1 + w`) `(1 + w) / s - 1`.
pub fn fold_into_norm(norm: &mut [f32], s: &[f32], one_plus: bool) {
    for (w, &f) in norm.iter_mut().zip(s) {
        *w = if one_plus { (1.0 + *w) / f - 1.0 } else { *w / f };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::InputStats;
    use crate::floats::FloatType;
    use crate::integer::{fake_quantize_rtn, Bits};
    use crate::linalg::tests::Rng;

    fn matvec(w: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
        let cols = x.len();
        (0..rows).map(|r| (0..cols).map(|c| w[r * cols + c] * x[c]).sum()).collect()
    }

    fn rms_norm(x: &[f32], w: &[f32], one_plus: bool) -> Vec<f32> {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let r = 1.0 / (ms + 1e-6).sqrt();
        x.iter().zip(w).map(|(v, g)| v * r * if one_plus { 1.0 + g } else { *g }).collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn folding_keeps_the_float_function() {
        let mut rng = Rng(17);
        let d = 12;
        let x = rng.vec(d);
        let s: Vec<f32> = (0..d).map(|i| 0.25 + i as f32 * 0.3).collect();
        // Norm then linear (Llama's w and Gemma's 1 + w).
        for one_plus in [false, true] {
            let (mut norm, mut w) = (rng.vec(d), rng.vec(5 * d));
            let before = matvec(&w, &rms_norm(&x, &norm, one_plus), 5);
            fold_into_norm(&mut norm, &s, one_plus);
            scale_columns(&mut w, d, &s);
            close(&matvec(&w, &rms_norm(&x, &norm, one_plus), 5), &before);
        }
        // Up's output rows feed down through the gate: down(act(gate x) * up x).
        let (gate, mut up, mut down) = (rng.vec(d * 4), rng.vec(d * 4), rng.vec(3 * d));
        let ffn = |up: &[f32], down: &[f32]| {
            let g = matvec(&gate, &x[..4], d);
            let u = matvec(up, &x[..4], d);
            let h: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            matvec(down, &h, 3)
        };
        let before = ffn(&up, &down);
        divide_rows(&mut up, 4, &s);
        scale_columns(&mut down, d, &s);
        close(&ffn(&up, &down), &before);
        // V's output rows are O's inputs when there is one KV head per query head: attention
        // output = Σ_t a_t v_t.
        let (xs, a) = ([rng.vec(d), rng.vec(d)], [0.3f32, 0.7]);
        let (mut v, mut v_bias, mut o) = (rng.vec(d * d), rng.vec(d), rng.vec(2 * d));
        let attn = |v: &[f32], bias: &[f32], o: &[f32]| {
            let mut h = vec![0f32; d];
            for (x, a) in xs.iter().zip(a) {
                for (hv, (vv, b)) in h.iter_mut().zip(matvec(v, x, d).iter().zip(bias)) {
                    *hv += a * (vv + b);
                }
            }
            matvec(o, &h, 2)
        };
        let before = attn(&v, &v_bias, &o);
        divide_rows(&mut v, d, &s);
        divide_rows(&mut v_bias, 1, &s);
        scale_columns(&mut o, d, &s);
        close(&attn(&v, &v_bias, &o), &before);
    }

    #[test]
    fn the_search_never_loses_to_round_to_nearest() {
        let mut rng = Rng(23);
        let (d, n) = (128, 300);
        // A few input channels carry much larger activations.
        let mut x = rng.vec(n * d);
        for row in x.chunks_exact_mut(d) {
            for c in [3, 50, 97] {
                row[c] *= 30.0;
            }
        }
        let mut stats = InputStats::new(d);
        stats.add(&x);
        let factor = stats.factor();
        let quant = |w: &[f32], rows: usize| fake_quantize_rtn(w, rows, d, 32, Bits(4), FloatType::BF16);
        let (wa, wb) = (rng.vec(16 * d), rng.vec(8 * d));
        let balance = [Balance { w: &wa, rows: 16 }, Balance { w: &wb, rows: 8 }];
        let choice = search(&balance, &stats.mean_abs(), &factor, &quant);
        assert!(choice.loss <= choice.rtn_loss);
        assert!(choice.alpha > 0.0 && choice.loss < 0.9 * choice.rtn_loss, "{choice:?}");
        // The reported loss is the output error over the rows.
        let mut scaled_a = wa.clone();
        scale_columns(&mut scaled_a, d, &choice.scales);
        let qa = quant(&scaled_a, 16);
        let dw: Vec<f32> = wa.iter().zip(&qa).enumerate().map(|(i, (w, q))| w - q / choice.scales[i % d]).collect();
        let direct = crate::linalg::sum_sq_nt(&dw, &x, 16, n, d, false) / n as f64;
        let only_a = loss(&balance[..1], &choice.scales, &factor, &quant);
        assert!((direct - only_a).abs() < 1e-3 * direct, "{direct} vs {only_a}");
    }

    #[test]
    fn alpha_zero_is_plain_rounding() {
        assert_eq!(scales_for(&[0.0, 3.0, 100.0], 0.0), [1.0, 1.0, 1.0]);
        let s = scales_for(&[0.0, 1.0, 4.0], 1.0);
        // Clamped to 1e-4, then divided by √(4e-4).
        assert!((s[0] - 1e-4 / 0.02).abs() < 1e-6 && (s[2] - 4.0 / 0.02).abs() < 1e-3, "{s:?}");
    }
}
