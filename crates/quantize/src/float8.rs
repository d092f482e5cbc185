//! FP8 E4M3 weights as compressed-tensors' `float-quantized` format stores them: a scale per
//! output channel (or one for the tensor) of `max|w| / 448`, rounded to the scale's stored type
//! (zero becomes its epsilon), and each value `w / scale` cast to `float8_e4m3fn` (nearest even,
//! saturating at ±448).

use tessera_quant::fp8::{e4m3_from_f32, E4M3_MAX};

use crate::floats::FloatType;
use crate::integer::amax;

/// FP8 codes of a row-major `[rows, cols]` matrix and their scales (`rows` of them, or one).
#[derive(Clone, Debug, PartialEq)]
pub struct Fp8Quantized {
    pub cols: usize,
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

#[cfg(test)]
impl Fp8Quantized {
    pub fn dequantize(&self) -> Vec<f32> {
        let per_row = self.scales.len() > 1;
        let mut out = Vec::with_capacity(self.codes.len());
        for (r, row) in self.codes.chunks_exact(self.cols.max(1)).enumerate() {
            let s = self.scales[if per_row { r } else { 0 }];
            out.extend(row.iter().map(|&c| tessera_quant::fp8::e4m3_to_f32(c) * s));
        }
        out
    }
}

fn scale(amax: f32, scale_type: FloatType) -> f32 {
    let s = scale_type.round(amax / E4M3_MAX);
    if s == 0.0 {
        scale_type.eps()
    } else {
        s
    }
}

/// Quantizes `w` with one scale per row, or one for the whole tensor when `per_tensor`.
pub fn quantize(w: &[f32], rows: usize, cols: usize, per_tensor: bool, scale_type: FloatType) -> Fp8Quantized {
    debug_assert_eq!(w.len(), rows * cols);
    let scales: Vec<f32> = if per_tensor {
        vec![scale(amax(w), scale_type)]
    } else {
        w.chunks_exact(cols.max(1)).map(|row| scale(amax(row), scale_type)).collect()
    };
    let mut codes = Vec::with_capacity(w.len());
    for (r, row) in w.chunks_exact(cols.max(1)).enumerate() {
        let s = scales[if per_tensor { 0 } else { r }];
        codes.extend(row.iter().map(|&v| e4m3_from_f32((v / s).clamp(-E4M3_MAX, E4M3_MAX))));
    }
    Fp8Quantized { cols, codes, scales }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_map_each_row_maximum_to_448() {
        let w = [448.0, -224.0, 1.0, 0.0, 0.0, 0.0, 4.48, -0.001];
        let q = quantize(&w, 4, 2, false, FloatType::BF16);
        assert_eq!(q.scales[0], 1.0);
        assert_eq!(&q.codes[..2], &[0x7E, e4m3_from_f32(-224.0)]);
        assert_eq!(q.scales[2], FloatType::BF16.eps());
        assert_eq!(q.scales[3], FloatType::BF16.round(0.01));
        let d = q.dequantize();
        assert_eq!(&d[..2], &[448.0, -224.0]);
        // Row 1's scale 1/448 is rounded to bf16, so its maximum comes back within E4M3's step.
        assert!((d[2] - 1.0).abs() < 1.0 / 16.0 && d[3] == 0.0, "{}", d[2]);
        assert!((d[6] - 4.48).abs() < 4.48 * 0.07, "{}", d[6]);
    }

    #[test]
    fn per_tensor_uses_one_scale() {
        let w = [896.0, 1.0, -2.0, 3.0];
        let q = quantize(&w, 2, 2, true, FloatType::BF16);
        assert_eq!(q.scales, [2.0]);
        assert_eq!(q.dequantize(), [896.0, 1.0, -2.0, 3.0]);
    }
}
