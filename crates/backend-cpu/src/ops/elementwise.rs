//! Element-wise ops: Add, Mul (with one-row broadcast), Scale, SwiGlu and GeGlu.

use rayon::prelude::*;

use super::CHUNK;

/// `a = f(a, b)` element by element; a `b` shorter than `a` is one row, repeated.
fn binary(a: &mut [f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    if b.len() == a.len() {
        a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(a, b)| {
            for (a, b) in a.iter_mut().zip(b) {
                *a = f(*a, *b);
            }
        });
    } else if !b.is_empty() {
        let rows_per_task = (CHUNK / b.len()).max(1);
        a.par_chunks_mut(b.len() * rows_per_task).for_each(|a| {
            for a in a.chunks_mut(b.len()) {
                for (a, b) in a.iter_mut().zip(b) {
                    *a = f(*a, *b);
                }
            }
        });
    } else {
        // Nothing to combine with: what the op gave before it could work in place.
        a.fill(0.0);
    }
}

/// The element-wise ops, each applied in place to its first operand (which the executor hands
/// over when nothing else reads it, and copies otherwise).
#[derive(Clone, Copy)]
pub(crate) enum Elementwise {
    Add,
    Mul,
    Scale(f32),
    SwiGlu,
    GeGlu,
}

impl Elementwise {
    /// `a = op(a, b)` (`b` is ignored by `Scale`).
    pub(crate) fn apply(self, a: &mut [f32], b: &[f32]) {
        match self {
            Elementwise::Add => binary(a, b, |a, b| a + b),
            Elementwise::Mul => binary(a, b, |a, b| a * b),
            Elementwise::SwiGlu => binary(a, b, |g, u| silu(g) * u),
            Elementwise::GeGlu => binary(a, b, |g, u| gelu(g) * u),
            Elementwise::Scale(factor) => a.par_chunks_mut(CHUNK).for_each(|a| {
                for a in a {
                    *a *= factor;
                }
            }),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_one_row() {
        let applied = |op: Elementwise, a: &[f32], b: &[f32]| {
            let mut a = a.to_vec();
            op.apply(&mut a, b);
            a
        };
        assert_eq!(applied(Elementwise::Add, &[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0]), vec![11.0, 22.0, 13.0, 24.0]);
        assert_eq!(applied(Elementwise::Mul, &[1.0, 2.0], &[3.0, 4.0]), vec![3.0, 8.0]);
        assert_eq!(applied(Elementwise::Scale(0.5), &[1.0, -4.0], &[]), vec![0.5, -2.0]);
        assert_eq!(applied(Elementwise::SwiGlu, &[1.0], &[2.0]), vec![2.0 * silu(1.0)]);
        assert_eq!(applied(Elementwise::GeGlu, &[1.0], &[2.0]), vec![2.0 * gelu(1.0)]);
    }

    #[test]
    fn activations_match_known_values() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        // gelu_tanh(1) = 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715))
        assert!((gelu(1.0) - 0.841_191_9).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }
}
