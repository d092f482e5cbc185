//! Element-wise ops: Add, Mul (with one-row broadcast), Scale, SwiGlu and GeGlu.

use rayon::prelude::*;

use super::CHUNK;

/// `f(a, b)` element by element; a `b` shorter than `a` is one row, repeated.
fn binary(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    if b.len() == a.len() {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = f(*a, *b);
            }
        });
    } else if !b.is_empty() {
        let rows_per_task = (CHUNK / b.len()).max(1);
        out.par_chunks_mut(b.len() * rows_per_task).zip(a.par_chunks(b.len() * rows_per_task)).for_each(|(o, a)| {
            for (o, a) in o.chunks_mut(b.len()).zip(a.chunks(b.len())) {
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    *o = f(*a, *b);
                }
            }
        });
    }
    out
}

/// `f(x)` element by element.
fn unary(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, x) in o.iter_mut().zip(x) {
            *o = f(*x);
        }
    });
    out
}

pub(crate) fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    binary(a, b, |a, b| a + b)
}

pub(crate) fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    binary(a, b, |a, b| a * b)
}

pub(crate) fn scale(x: &[f32], factor: f32) -> Vec<f32> {
    unary(x, |x| x * factor)
}

/// ggml's `ggml_silu_f32`.
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF_A: f32 = 0.044715;

/// ggml's `ggml_gelu_f32`: the tanh approximation, computed directly (not from a table).
#[inline]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

pub(crate) fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    binary(gate, up, |g, u| silu(g) * u)
}

pub(crate) fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    binary(gate, up, |g, u| gelu(g) * u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_one_row() {
        assert_eq!(add(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0]), vec![11.0, 22.0, 13.0, 24.0]);
        assert_eq!(mul(&[1.0, 2.0], &[3.0, 4.0]), vec![3.0, 8.0]);
    }

    #[test]
    fn activations_match_known_values() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        // gelu_tanh(1) = 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715))
        assert!((gelu(1.0) - 0.841_191_9).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }
}
