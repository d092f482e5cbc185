//! RmsNorm, as ggml computes it: squares in f32 summed in f64, the scale in f32.

use rayon::prelude::*;

use super::CHUNK;

pub(crate) fn rms_norm(x: &[f32], w: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if cols == 0 {
        return out;
    }
    let rows_per_task = (CHUNK / cols).max(1);
    out.par_chunks_mut(cols * rows_per_task).zip(x.par_chunks(cols * rows_per_task)).for_each(|(o, x)| {
        for (o, x) in o.chunks_mut(cols).zip(x.chunks(cols)) {
            let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / cols as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                *o = (x * scale) * w;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_row() {
        let y = rms_norm(&[3.0, 4.0, 1.0, 1.0], &[1.0, 2.0], 2, 0.0);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
        assert!((y[2] - 1.0).abs() < 1e-6 && (y[3] - 2.0).abs() < 1e-6);
    }
}
