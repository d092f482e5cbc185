//! MXFP4 (OCP microscaling): 32 FP4 (E2M1) values sharing one power-of-two (E8M0) scale.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{signed_max, QuantBlock, QuantizeBlock};
use crate::fp4::{ggml_best_index, E2M1_DOUBLED};

const QK: usize = 32;

/// The E2M1 values, doubled so they are integers (ggml's `kvalues_mxfp4`); the scale is halved
/// to match (see [`e8m0_to_f32_half`]).
pub const KVALUES_MXFP4: [i8; 16] = E2M1_DOUBLED;

/// ggml's `block_mxfp4`: value `j` is `KVALUES_MXFP4[code_j] * 2^(e - 128)`; codes `j` and
/// `j + 16` share byte `j`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMxfp4 {
    /// Shared exponent, E8M0.
    pub e: u8,
    pub qs: [u8; QK / 2],
}

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, built from bits (subnormal for `e < 2`).
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { ((e - 1) as u32) << 23 };
    f32::from_bits(bits)
}

impl QuantBlock for BlockMxfp4 {
    const DTYPE: DType = DType::MXFP4;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK];
        let d = e8m0_to_f32_half(self.e);
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = KVALUES_MXFP4[(q & 0x0F) as usize] as f32 * d;
            out[j + QK / 2] = KVALUES_MXFP4[(q >> 4) as usize] as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockMxfp4 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let amax = signed_max(x).1;
        // ggml converts through a 32-bit integer, so out-of-range exponents wrap, not saturate.
        let e = if amax > 0.0 { (amax.log2().floor() - 2.0 + 127.0) as i32 as u8 } else { 0 };
        let d = e8m0_to_f32_half(e);
        let mut qs = [0u8; QK / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = ggml_best_index(x[j], d) | (ggml_best_index(x[j + QK / 2], d) << 4);
        }
        BlockMxfp4 { e, qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // E2M1 has steps of up to 2 (in doubled units) near its top value of 12 and the scale
        // puts amax in [4, 8) doubled units: a step of 2 in 8 is 1/4, half of it 1/8.
        check_round_trip::<BlockMxfp4>(0.26);
    }

    #[test]
    fn scale_is_a_power_of_two() {
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(0), f32::from_bits(0x0020_0000));
        assert_eq!(e8m0_to_f32_half(1), f32::from_bits(0x0040_0000));
    }
}
