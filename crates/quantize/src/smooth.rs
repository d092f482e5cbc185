//! SmoothQuant-style smoothing for INT8 W8A8 (Xiao et al., 2023; llm-compressor's
//! `SmoothQuantModifier`, the first step of its W8A8 recipes): a few input channels carry
//! activations far larger than the rest, and one int8 scale per token then leaves the others
//! only a few levels. Dividing those channels by `s` before the activations are quantized, and
//! multiplying the weights reading them by `s`, moves the difficulty into the weights, which are
//! quantized per output channel and tolerate it. The float model computes the same function.
//!
//! The scales are `s_j = max|x_j|^α / max|w_j|^(1-α)` (the paper's migration strength α). α is
//! searched on a grid by the error of the layers' outputs as the kernels compute them
//! (per-token int8 activations of `x / s`, per-channel int8 weights of `W diag(s)`) on sampled
//! calibration rows, against the float outputs; no smoothing at all is a candidate too, so the
//! choice is never worse than plain W8A8 on that measure. The scales fold exactly as AWQ's do
//! (into the norm or the projection before).

use tessera_quant::int8::quantize_activation_row;

use crate::awq::{scale_columns, Balance};
use crate::linalg::matmul_nt;

/// Grid points α = 0.05, 0.15, ..., 0.95.
const GRID: usize = 10;
/// Smallest scale (llm-compressor clamps the channel maxima at 1e-5).
const MIN_SCALE: f32 = 1e-5;

/// The outcome of a search.
#[derive(Clone, Debug)]
pub struct Smoothing {
    /// `None` when no smoothing did best.
    pub alpha: Option<f32>,
    /// Per input channel; all 1 when `alpha` is `None`.
    pub scales: Vec<f32>,
    /// Output error with the chosen scales and without smoothing.
    pub loss: f64,
    pub plain_loss: f64,
}

/// The scales of migration strength `alpha`, from the channels' largest activations and weights.
pub fn scales_for(act_max: &[f32], w_max: &[f32], alpha: f32) -> Vec<f32> {
    act_max
        .iter()
        .zip(w_max)
        .map(|(&a, &w)| {
            let s = a.max(MIN_SCALE).powf(alpha) / w.max(MIN_SCALE).powf(1.0 - alpha);
            if s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect()
}

/// The largest magnitude of each input channel over every balance weight.
fn weight_max(balance: &[Balance<'_>], cols: usize) -> Vec<f32> {
    let mut m = vec![0f32; cols];
    for b in balance {
        for row in b.w.chunks_exact(cols) {
            for (m, &v) in m.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
    }
    m
}

/// `Σ (y - y_ref)²` over sample rows `x` (`[n, cols]`) and every balance weight, where `y` is
/// what the kernels compute after smoothing by `s` and `y_ref` the float output.
fn output_error(
    balance: &[Balance<'_>],
    s: &[f32],
    x: &[f32],
    reference: &[Vec<f32>],
    fake_quantize: &dyn Fn(&[f32], usize) -> Vec<f32>,
) -> f64 {
    let cols = s.len();
    // The activations as the kernels see them: x / s, quantized per row, dequantized.
    let mut xq = vec![0f32; x.len()];
    let mut q = vec![0i8; cols];
    let mut scaled = vec![0f32; cols];
    for (out, row) in xq.chunks_exact_mut(cols).zip(x.chunks_exact(cols)) {
        scaled.iter_mut().zip(row).zip(s).for_each(|((o, &v), &f)| *o = v / f);
        let d = quantize_activation_row(&scaled, &mut q);
        out.iter_mut().zip(&q).for_each(|(o, &c)| *o = c as f32 * d);
    }
    let n = x.len() / cols;
    balance
        .iter()
        .zip(reference)
        .map(|(b, reference)| {
            let mut w = b.w.to_vec();
            scale_columns(&mut w, cols, s);
            let y = matmul_nt(&xq, &fake_quantize(&w, b.rows), n, b.rows, cols);
            // Summed in one thread, in order: the same inputs give the same choice on any
            // number of threads.
            y.iter().zip(reference).map(|(&y, &r)| ((y - r) as f64).powi(2)).sum::<f64>()
        })
        .sum()
}

/// Float outputs `x Wᵀ` of each balance weight, `[n, rows]`.
fn float_outputs(balance: &[Balance<'_>], x: &[f32], cols: usize) -> Vec<Vec<f32>> {
    balance.iter().map(|b| matmul_nt(x, b.w, x.len() / cols, b.rows, cols)).collect()
}

/// Searches the smoothing of weights sharing an input whose channels reach `act_max`, measured
/// on sample rows `x` (`[n, cols]`). `fake_quantize(w, rows)` returns the weight as the
/// checkpoint will hold it; `constrain` adjusts each candidate to what the fold can carry (equal
/// scales for inputs that come from one producer row).
pub fn search(
    balance: &[Balance<'_>],
    act_max: &[f32],
    x: &[f32],
    fake_quantize: &dyn Fn(&[f32], usize) -> Vec<f32>,
    constrain: &dyn Fn(Vec<f32>) -> Vec<f32>,
) -> Smoothing {
    let cols = act_max.len();
    let plain = vec![1f32; cols];
    if cols == 0 || x.len() < cols {
        return Smoothing { alpha: None, scales: plain, loss: 0.0, plain_loss: 0.0 };
    }
    let reference = float_outputs(balance, x, cols);
    let plain_loss = output_error(balance, &plain, x, &reference, fake_quantize);
    let w_max = weight_max(balance, cols);
    let mut best = Smoothing { alpha: None, scales: plain, loss: plain_loss, plain_loss };
    for i in 0..GRID {
        let alpha = (i as f32 + 0.5) / GRID as f32;
        let s = constrain(scales_for(act_max, &w_max, alpha));
        let loss = output_error(balance, &s, x, &reference, fake_quantize);
        if loss.is_finite() && loss < best.loss {
            best = Smoothing { alpha: Some(alpha), scales: s, loss, plain_loss };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floats::FloatType;
    use crate::integer::{fake_quantize_rtn, Bits};
    use crate::linalg::tests::Rng;

    fn int8(w: &[f32], rows: usize) -> Vec<f32> {
        let cols = w.len() / rows;
        fake_quantize_rtn(w, rows, cols, cols, Bits(8), FloatType::BF16)
    }

    #[test]
    fn scales_move_magnitude_from_activations_to_weights() {
        let s = scales_for(&[100.0, 1.0], &[1.0, 1.0], 0.5);
        assert!((s[0] - 10.0).abs() < 1e-4 && (s[1] - 1.0).abs() < 1e-6, "{s:?}");
        // Degenerate channels get a finite scale.
        assert!(scales_for(&[0.0], &[0.0], 0.5)[0].is_finite());
    }

    /// Activations with two outlier channels, as after the norms of small LLMs: smoothing must
    /// cut the error of per-token int8 activations by a wide margin, and the search reports the
    /// unsmoothed error it compared with.
    #[test]
    fn smoothing_beats_plain_w8a8_on_outlier_channels() {
        let mut rng = Rng(7);
        let (n, cols, rows) = (64, 96, 40);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let v = rng.next_f32();
                if i % cols == 5 || i % cols == 61 {
                    v * 80.0
                } else {
                    v
                }
            })
            .collect();
        let w: Vec<f32> = (0..rows * cols).map(|_| 0.5 * rng.next_f32()).collect();
        let act_max: Vec<f32> = (0..cols).map(|c| x.chunks_exact(cols).fold(0f32, |m, r| m.max(r[c].abs()))).collect();
        let balance = [Balance { w: &w, rows }];
        let choice = search(&balance, &act_max, &x, &int8, &|s| s);
        assert!(choice.alpha.is_some(), "{choice:?}");
        assert!(choice.loss < 0.5 * choice.plain_loss, "{} vs {}", choice.loss, choice.plain_loss);
        // The loss is what it says: recomputing it for the chosen scales gives the same number.
        let reference = float_outputs(&balance, &x, cols);
        let again = output_error(&balance, &choice.scales, &x, &reference, &int8);
        assert!((again - choice.loss).abs() <= 1e-9 * choice.loss.max(1.0));
    }

    /// Without outliers there is little to gain; whatever is chosen is never worse than plain.
    #[test]
    fn never_worse_than_plain() {
        let mut rng = Rng(3);
        let (n, cols, rows) = (16, 33, 7);
        let (x, w) = (rng.vec(n * cols), rng.vec(rows * cols));
        let act_max: Vec<f32> = (0..cols).map(|c| x.chunks_exact(cols).fold(0f32, |m, r| m.max(r[c].abs()))).collect();
        let choice = search(&[Balance { w: &w, rows }], &act_max, &x, &int8, &|s| s);
        assert!(choice.loss <= choice.plain_loss);
        if choice.alpha.is_none() {
            assert!(choice.scales.iter().all(|&s| s == 1.0));
        }
    }
}
