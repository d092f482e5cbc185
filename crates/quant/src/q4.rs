//! Q4_0 and Q4_1: 32 values as 4-bit codes with an f16 scale (Q4_1 adds an f16 minimum).

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, inverse_or_zero, min_max, signed_max, QuantBlock, QuantizeBlock};

const QK: usize = 32;

/// ggml's `block_q4_0`: value `j` is `d * (code_j - 8)`; codes `j` and `j + 16` share byte `j`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qs: [u8; QK / 2],
}

/// ggml's `block_q4_1`: value `j` is `d * code_j + m`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    pub qs: [u8; QK / 2],
}

impl QuantBlock for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK];
        let d = f16_to_f32(self.d);
        for (j, &q) in self.qs.iter().enumerate() {
            let x0 = (q & 0x0F) as i32 - 8;
            let x1 = (q >> 4) as i32 - 8;
            out[j] = x0 as f32 * d;
            out[j + QK / 2] = x1 as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ4_0 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let d = signed_max(x).0 / -8.0;
        let id = inverse_or_zero(d);
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let xi0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let xi1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
        BlockQ4_0 { d: f32_to_f16(d), qs }
    }
}

impl QuantBlock for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK];
        let d = f16_to_f32(self.d);
        let m = f16_to_f32(self.m);
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0F) as f32 * d + m;
            out[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

impl QuantizeBlock for BlockQ4_1 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let xi0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let xi1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            *q = xi0 | (xi1 << 4);
        }
        BlockQ4_1 { d: f32_to_f16(d), m: f32_to_f16(min), qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // Q4_0 maps the largest magnitude to code 0 (-8 steps of amax/8); the opposite extreme
        // clips at +7 steps, one whole step short.
        check_round_trip::<BlockQ4_0>(0.126);
        // Half a step of range/15 where the range is at most 2*amax.
        check_round_trip::<BlockQ4_1>(2.0 / 15.0 * 0.5 + 0.002);
    }

    #[test]
    fn dequantizes_a_hand_made_block() {
        let b = BlockQ4_0 { d: f32_to_f16(0.5), qs: [0x8F; 16] };
        let mut out = [0f32; 32];
        b.dequantize(&mut out);
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.0);
    }
}
