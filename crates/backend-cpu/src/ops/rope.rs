//! Rotary position embedding, computed as ggml computes it: the angle of pair `i` is built by
//! repeated multiplication (`theta *= base^(-2 / rot_dims)`) in f32, once per row.

use rayon::prelude::*;
use tessera_backend::RopeStyle;

pub(crate) struct RopeParams {
    pub head_dim: usize,
    pub rot_dims: usize,
    pub base: f32,
    pub freq_scale: f32,
    pub style: RopeStyle,
}

pub(crate) fn rope(x: &[f32], pos: &[i32], cols: usize, p: &RopeParams) -> Vec<f32> {
    let mut out = x.to_vec();
    if cols == 0 || p.head_dim == 0 {
        return out;
    }
    let half = p.rot_dims / 2;
    let theta_scale = p.base.powf(-2.0 / p.rot_dims as f32);
    out.par_chunks_mut(cols).zip(pos.par_iter()).with_min_len(8).for_each_init(
        || vec![(0f32, 0f32); half],
        |cache, (row, &position)| {
            let mut theta = position as f32;
            for c in cache.iter_mut() {
                let angle = p.freq_scale * theta;
                *c = (angle.cos(), angle.sin());
                theta *= theta_scale;
            }
            for head in row.chunks_exact_mut(p.head_dim) {
                for (i, &(cos, sin)) in cache.iter().enumerate() {
                    let (a, b) = match p.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos - x1 * sin;
                    head[b] = x0 * sin + x1 * cos;
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(style: RopeStyle) -> RopeParams {
        RopeParams { head_dim: 4, rot_dims: 4, base: 10000.0, freq_scale: 1.0, style }
    }

    #[test]
    fn position_zero_is_identity() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(rope(&x, &[0], 4, &params(RopeStyle::Halves)), x.to_vec());
    }

    #[test]
    fn rotates_pairs_by_style() {
        // Pair 0 turns by 1 radian at position 1; pair 1 by 1/100.
        let x = [1.0, 0.0, 0.0, 0.0];
        let y = rope(&x, &[1], 4, &params(RopeStyle::Interleaved));
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[1] - 1f32.sin()).abs() < 1e-6);
        let y = rope(&x, &[1], 4, &params(RopeStyle::Halves));
        assert!((y[0] - 1f32.cos()).abs() < 1e-6 && (y[2] - 1f32.sin()).abs() < 1e-6);
    }
}
