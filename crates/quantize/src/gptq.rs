//! GPTQ (Frantar et al., 2022, section 3.4; llm-compressor's `quantize_weight`): quantize a
//! weight's columns left to right and spread each column's rounding error over the columns not
//! yet quantized, weighted by the inverse of the inputs' second moment, so that the error of the
//! layer's output over the calibration rows stays small.
//!
//! With `H = 2XᵀX/n` (its off-diagonal part shrunk when the calibration rows are few, which
//! llm-compressor does not do) plus a damping of 1% of its mean diagonal and `U` the upper Cholesky
//! factor of `H⁻¹`: column `i`'s error `(w - q) / U[i][i]` is subtracted from column `j > i` times
//! `U[i][j]`, within blocks of 128 columns at once and across blocks as one product. A group's
//! scale is fixed from the (updated) weights when its first column comes up. Inputs that were
//! always zero ("dead") have their weights zeroed, as in the reference. The factorization runs in
//! f64; weights and errors in f32.

use crate::floats::FloatType;
use crate::integer::{Bits, GroupQuantized};
use crate::linalg::{inverse_cholesky_upper, matmul_nt};

/// Fraction of the mean diagonal added to `H`'s diagonal (llm-compressor's `percdamp`).
pub const DAMPING: f64 = 0.01;
/// Columns updated together (llm-compressor's `blocksize`).
pub const BLOCK: usize = 128;

/// What happened besides quantizing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GptqReport {
    /// Inputs never seen non-zero, whose weights are zeroed.
    pub dead_inputs: usize,
    /// `H` could not be factored even with damping; matrices are rounded to nearest instead.
    pub fell_back_to_rtn: bool,
}

/// The factor of one input site's `H`, shared by every weight reading that input.
pub struct Prepared {
    cols: usize,
    /// `U` (row-major `[cols, cols]`, upper triangular), in f32 for the updates.
    u: Vec<f32>,
    dead: Vec<bool>,
    pub report: GptqReport,
}

/// How much of `H`'s off-diagonal part is dropped when it was estimated from `n` rows of width
/// `d`: `d / (n + d)`, toward the diagonal (each input's own variance, which is well estimated).
/// With few rows the correlations are noisy and GPTQ overfits them: on SmolLM2-135M with the
/// built-in text (1.8K tokens for inputs 576 and 1536 wide), unshrunk GPTQ gave a larger KL
/// divergence from the float model than round-to-nearest on text outside the calibration set,
/// shrunk GPTQ a third of it. The shrinkage vanishes as calibration grows.
pub fn shrinkage(d: usize, n: usize) -> f64 {
    d as f64 / (n + d).max(1) as f64
}

/// Factors the inputs' `H = XᵀX / n` (row-major `[cols, cols]`, f64) estimated from
/// `rows_seen` rows: off-diagonal entries shrunk (see [`shrinkage`]), `2H`, dead inputs set to 1
/// on the diagonal, damped, and `U` with `Uᵀ U = (2H + damping)⁻¹`.
pub fn prepare(h: &[f64], cols: usize, rows_seen: usize) -> Prepared {
    debug_assert_eq!(h.len(), cols * cols);
    let mut h2: Vec<f64> = h.iter().map(|v| 2.0 * v).collect();
    let mut report = GptqReport::default();
    let mut dead = vec![false; cols];
    for (i, dead) in dead.iter_mut().enumerate() {
        if h2[i * cols + i] == 0.0 {
            h2[i * cols + i] = 1.0;
            *dead = true;
            report.dead_inputs += 1;
        }
    }
    let mean_diag = (0..cols).map(|i| h2[i * cols + i]).sum::<f64>() / cols.max(1) as f64;
    let keep = 1.0 - shrinkage(cols, rows_seen);
    for i in 0..cols {
        for j in 0..cols {
            if i != j {
                h2[i * cols + j] *= keep;
            }
        }
    }
    for i in 0..cols {
        h2[i * cols + i] += DAMPING * mean_diag;
    }
    let u = match inverse_cholesky_upper(&h2, cols) {
        Ok(u) => u.iter().map(|&v| v as f32).collect(),
        Err(_) => {
            // As llm-compressor: an identity factor, which makes every update zero.
            report.fell_back_to_rtn = true;
            (0..cols * cols).map(|x| if x / cols == x % cols { 1.0 } else { 0.0 }).collect()
        }
    };
    Prepared { cols, u, dead, report }
}

/// GPTQ of a row-major `[rows, cols]` matrix in groups of `group` columns, given its input
/// site's factor.
pub fn quantize(
    w: &[f32],
    rows: usize,
    prepared: &Prepared,
    group: usize,
    bits: Bits,
    scale_type: FloatType,
) -> GroupQuantized {
    let cols = prepared.cols;
    debug_assert!(w.len() == rows * cols && cols.is_multiple_of(group));
    let u = &prepared.u;
    let mut w = w.to_vec();
    for (i, _) in prepared.dead.iter().enumerate().filter(|(_, d)| **d) {
        for r in 0..rows {
            w[r * cols + i] = 0.0;
        }
    }

    let groups_per_row = cols / group;
    let mut codes = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * groups_per_row];
    // Blocks hold whole groups, so a group's scale is fixed from up-to-date weights.
    let block = if group <= BLOCK { BLOCK / group * group } else { group };
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + block).min(cols);
        let width = i2 - i1;
        // The block's columns as rows (each a contiguous vector over the matrix's rows).
        let mut wt = vec![0f32; width * rows];
        for r in 0..rows {
            for c in 0..width {
                wt[c * rows + r] = w[r * cols + i1 + c];
            }
        }
        let mut err_t = vec![0f32; width * rows];
        let mut group_scales = vec![0f32; rows];
        for i in 0..width {
            let col = i1 + i;
            if col % group == 0 {
                for (r, s) in group_scales.iter_mut().enumerate() {
                    let g_amax = (i..i + group).fold(0f32, |m, c| m.max(wt[c * rows + r].abs()));
                    *s = bits.scale(g_amax, scale_type);
                    scales[r * groups_per_row + col / group] = *s;
                }
            }
            let d = u[col * cols + col];
            let (done, rest) = wt.split_at_mut((i + 1) * rows);
            let column = &done[i * rows..];
            let err = &mut err_t[i * rows..(i + 1) * rows];
            for r in 0..rows {
                let s = group_scales[r];
                let q = bits.code(column[r], s);
                codes[r * cols + col] = q;
                err[r] = (column[r] - q as f32 * s) / d;
            }
            for (j, later) in rest.chunks_exact_mut(rows).enumerate() {
                let uij = u[col * cols + col + 1 + j];
                if uij != 0.0 {
                    for (v, e) in later.iter_mut().zip(err.iter()) {
                        *v -= e * uij;
                    }
                }
            }
        }
        if i2 < cols {
            // W[:, i2..] -= Err · U[i1..i2, i2..], as a product with the transpose of U's block.
            let rest = cols - i2;
            let mut err = vec![0f32; rows * width];
            for c in 0..width {
                for r in 0..rows {
                    err[r * width + c] = err_t[c * rows + r];
                }
            }
            let mut ut = vec![0f32; rest * width];
            for j in 0..rest {
                for c in 0..width {
                    ut[j * width + c] = u[(i1 + c) * cols + i2 + j];
                }
            }
            let delta = matmul_nt(&err, &ut, rows, rest, width);
            for r in 0..rows {
                for (v, dv) in w[r * cols + i2..(r + 1) * cols].iter_mut().zip(&delta[r * rest..(r + 1) * rest]) {
                    *v -= dv;
                }
            }
        }
        i1 = i2;
    }
    GroupQuantized { rows, cols, group, codes, scales }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integer::quantize_rtn;
    use crate::linalg::tests::Rng;

    /// Correlated inputs: independent sources mixed by `mix` (`[d, d]`), with a few channels much
    /// larger than the rest (as in language models).
    fn mixed(rng: &mut Rng, n: usize, d: usize, mix: &[f32]) -> Vec<f32> {
        let z = rng.vec(n * d);
        let mut x = crate::linalg::matmul_nt(&z, mix, n, d, d);
        for row in x.chunks_exact_mut(d) {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= if c % 7 == 0 { 8.0 } else { 1.0 };
            }
        }
        x
    }

    fn inputs(rng: &mut Rng, n: usize, d: usize) -> Vec<f32> {
        let mix = rng.vec(d * d);
        mixed(rng, n, d, &mix)
    }

    fn hessian(x: &[f32], d: usize) -> Vec<f64> {
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

    /// `‖(W - Q) Xᵀ‖² / n`, the output error over the calibration rows.
    fn output_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, d: usize) -> f64 {
        let dw: Vec<f32> = w.iter().zip(q).map(|(a, b)| a - b).collect();
        let n = x.len() / d;
        crate::linalg::sum_sq_nt(&dw, x, rows, n, d, false) / n as f64
    }

    #[test]
    fn gptq_beats_round_to_nearest_on_correlated_inputs() {
        let mut rng = Rng(5);
        let (rows, d, n) = (24, 256, 512);
        let x = inputs(&mut rng, n, d);
        let h = hessian(&x, d);
        for group in [32, 64, 128, 256] {
            let w = rng.vec(rows * d);
            let prepared = prepare(&h, d, n);
            assert_eq!(prepared.report, GptqReport::default());
            let q = quantize(&w, rows, &prepared, group, Bits(4), FloatType::BF16);
            let rtn = quantize_rtn(&w, rows, d, group, Bits(4), FloatType::BF16);
            let (e_gptq, e_rtn) =
                (output_error(&w, &q.dequantize(), &x, rows, d), output_error(&w, &rtn.dequantize(), &x, rows, d));
            assert!(e_gptq < 0.8 * e_rtn, "group {group}: GPTQ {e_gptq} vs RTN {e_rtn}");
            assert!(q.codes.iter().all(|&c| (-8..=7).contains(&c)));
        }
    }

    #[test]
    fn with_few_rows_gptq_still_beats_round_to_nearest_on_unseen_rows() {
        // Calibrated on half as many rows as inputs, judged on fresh rows of the same kind.
        let mut rng = Rng(21);
        let (rows, d) = (16, 128);
        let mix = rng.vec(d * d);
        let (calibration, fresh) = (mixed(&mut rng, d / 2, d, &mix), mixed(&mut rng, 1024, d, &mix));
        let w = rng.vec(rows * d);
        let q = quantize(&w, rows, &prepare(&hessian(&calibration, d), d, d / 2), 32, Bits(4), FloatType::BF16);
        let rtn = quantize_rtn(&w, rows, d, 32, Bits(4), FloatType::BF16);
        let (e_gptq, e_rtn) =
            (output_error(&w, &q.dequantize(), &fresh, rows, d), output_error(&w, &rtn.dequantize(), &fresh, rows, d));
        assert!(e_gptq < e_rtn, "GPTQ {e_gptq} vs RTN {e_rtn}");
    }

    #[test]
    fn shrinkage_fades_as_calibration_grows() {
        assert_eq!(shrinkage(576, 0), 1.0);
        assert!((shrinkage(576, 1728) - 0.25).abs() < 1e-12);
        assert!(shrinkage(576, 1 << 20) < 1e-3);
    }

    #[test]
    fn uncorrelated_inputs_give_round_to_nearest() {
        // A diagonal H has a diagonal factor: no error is carried to other columns.
        let mut rng = Rng(9);
        let (rows, d) = (5, 64);
        let w = rng.vec(rows * d);
        let h: Vec<f64> = (0..d * d).map(|x| if x / d == x % d { 1.0 + (x / d) as f64 } else { 0.0 }).collect();
        let q = quantize(&w, rows, &prepare(&h, d, 1000), 32, Bits(4), FloatType::BF16);
        assert_eq!(q, quantize_rtn(&w, rows, d, 32, Bits(4), FloatType::BF16));
    }

    #[test]
    fn dead_inputs_are_zeroed_and_nothing_is_nan() {
        let mut rng = Rng(13);
        let (rows, d, n) = (4, 32, 64);
        let mut x = inputs(&mut rng, n, d);
        for row in x.chunks_exact_mut(d) {
            row[3] = 0.0;
            row[20] = 0.0;
        }
        let h = hessian(&x, d);
        let w = rng.vec(rows * d);
        let prepared = prepare(&h, d, n);
        assert_eq!(prepared.report.dead_inputs, 2);
        let q = quantize(&w, rows, &prepared, 16, Bits(4), FloatType::BF16);
        assert!(q.scales.iter().all(|s| s.is_finite() && *s > 0.0));
        for r in 0..rows {
            assert_eq!(q.codes[r * d + 3], 0);
            assert_eq!(q.codes[r * d + 20], 0);
        }
    }

    #[test]
    fn an_unfactorable_hessian_falls_back_to_round_to_nearest() {
        let d = 8;
        let h = vec![f64::NAN; d * d];
        let w: Vec<f32> = (0..2 * d).map(|i| i as f32 / 3.0 - 2.0).collect();
        let prepared = prepare(&h, d, 100);
        assert!(prepared.report.fell_back_to_rtn);
        let q = quantize(&w, 2, &prepared, 8, Bits(4), FloatType::BF16);
        assert_eq!(q, quantize_rtn(&w, 2, d, 8, Bits(4), FloatType::BF16));
    }
}
