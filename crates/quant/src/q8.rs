//! 8-bit formats: Q8_0 (weights), Q8_1 (activations, with a precomputed `d * sum`) and Q8_K (the
//! activation format the K-quant dot products use, with an f32 scale and per-16 sums).

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, inverse_or_zero, signed_max, QuantBlock, QuantizeBlock};
use crate::kquant::nearest_int;
use crate::QK_K;

const QK: usize = 32;

/// ggml's `block_q8_0`: value `j` is `d * qs[j]`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [i8; QK],
}

/// ggml's `block_q8_1`: as Q8_0 plus `s = d * sum(qs)`, which dot products with Q4_1/Q5_1 use.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// `d * sum(qs)`, f16 bits.
    pub s: u16,
    pub qs: [i8; QK],
}

/// ggml's `block_q8_K`: value `j` is `d * qs[j]`; `bsums[g]` is the sum of `qs[16g..16g + 16]`.
/// Unlike the other blocks its scale is an f32, so it is 4-byte aligned.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// Largest magnitude, with ggml's `MAX(amax, fabsf(v))` (a NaN wins, as in C).
fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |amax, v| if amax > v.abs() { amax } else { v.abs() })
}

impl QuantBlock for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_0 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let d = absmax(x) / 127.0;
        let id = inverse_or_zero(d);
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        BlockQ8_0 { d: f32_to_f16(d), qs }
    }
}

impl QuantBlock for BlockQ8_1 {
    const DTYPE: DType = DType::Q8_1;

    /// ggml has no Q8_1 dequantizer; this is the obvious one, `d * qs[j]`, as for Q8_0.
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ8_1 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let d = absmax(x) / 127.0;
        let id = inverse_or_zero(d);
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for j in 0..QK / 2 {
            qs[j] = (x[j] * id).round() as i8;
            qs[j + QK / 2] = (x[j + QK / 2] * id).round() as i8;
            sum += qs[j] as i32 + qs[j + QK / 2] as i32;
        }
        BlockQ8_1 { d: f32_to_f16(d), s: f32_to_f16(sum as f32 * d), qs }
    }
}

impl QuantBlock for BlockQ8K {
    const DTYPE: DType = DType::Q8_K;

    fn dequantize(&self, out: &mut [f32]) {
        for (o, &q) in out[..QK_K].iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}

impl QuantizeBlock for BlockQ8K {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_K];
        let mut block = BlockQ8K::zeroed();
        let (max, amax) = signed_max(x);
        if amax == 0.0 {
            return block;
        }
        // -127 rather than -128 so that codes stay symmetric, as ggml does for its IQ formats.
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        block.d = 1.0 / iscale;
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // Half a step of amax/127, plus f16 rounding of d (2^-11 relative, times 127 steps).
        check_round_trip::<BlockQ8_0>(0.5 / 127.0 + 0.0005);
        check_round_trip::<BlockQ8_1>(0.5 / 127.0 + 0.0005);
        check_round_trip::<BlockQ8K>(0.5 / 127.0 + 1e-6);
    }

    #[test]
    fn q8_1_sum_and_q8_k_bsums_match_codes() {
        let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 * 0.37).sin()).collect();
        let b = BlockQ8_1::quantize(&x);
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        // `s` uses the f32 scale, before it is rounded to f16.
        assert_eq!(b.s, f32_to_f16(sum as f32 * (absmax(&x[..32]) / 127.0)));
        let k = BlockQ8K::quantize(&x);
        for (g, s) in k.bsums.iter().enumerate() {
            assert_eq!(*s as i32, k.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum::<i32>());
        }
    }
}
