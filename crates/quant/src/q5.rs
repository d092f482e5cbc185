//! Q5_0 and Q5_1: 32 values as 5-bit codes (low nibbles in `qs`, fifth bits in `qh`) with an f16
//! scale (Q5_1 adds an f16 minimum).

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, inverse_or_zero, min_max, signed_max, QuantBlock, QuantizeBlock};

const QK: usize = 32;

/// ggml's `block_q5_0`: value `j` is `d * (code_j - 16)`; bit `j` of the little-endian `qh` is
/// code `j`'s fifth bit.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale, f16 bits.
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// ggml's `block_q5_1`: value `j` is `d * code_j + m`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale, f16 bits.
    pub d: u16,
    /// Minimum, f16 bits.
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// The 5-bit codes `j` and `j + 16` of a block, as ggml's dequantizers unpack them.
#[inline]
fn codes(qh: u32, qs: u8, j: usize) -> (i32, i32) {
    let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
    (((qs & 0x0F) | xh_0) as i32, ((qs >> 4) | xh_1) as i32)
}

/// Packs 32 five-bit codes into (`qh`, `qs`) as ggml's quantizers do.
fn pack(code: impl Fn(usize) -> (u8, u8)) -> ([u8; 4], [u8; QK / 2]) {
    let mut qh = 0u32;
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let (xi0, xi1) = code(j);
        *q = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    (qh.to_le_bytes(), qs)
}

impl QuantBlock for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK];
        let d = f16_to_f32(self.d);
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let (x0, x1) = codes(qh, q, j);
            out[j] = (x0 - 16) as f32 * d;
            out[j + QK / 2] = (x1 - 16) as f32 * d;
        }
    }
}

impl QuantizeBlock for BlockQ5_0 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let d = signed_max(x).0 / -16.0;
        let id = inverse_or_zero(d);
        let (qh, qs) = pack(|j| {
            let xi0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let xi1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            (xi0, xi1)
        });
        BlockQ5_0 { d: f32_to_f16(d), qh, qs }
    }
}

impl QuantBlock for BlockQ5_1 {
    const DTYPE: DType = DType::Q5_1;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK];
        let d = f16_to_f32(self.d);
        let m = f16_to_f32(self.m);
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let (x0, x1) = codes(qh, q, j);
            out[j] = x0 as f32 * d + m;
            out[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

impl QuantizeBlock for BlockQ5_1 {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK];
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        // No clamp here, as in ggml: (max - min) * id rounds to at most 31.
        let (qh, qs) = pack(|j| (((x[j] - min) * id + 0.5) as u8, ((x[j + QK / 2] - min) * id + 0.5) as u8));
        BlockQ5_1 { d: f32_to_f16(d), m: f32_to_f16(min), qh, qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // As Q4_0: the opposite extreme clips one step (amax/16) short.
        check_round_trip::<BlockQ5_0>(1.0 / 16.0 + 0.001);
        check_round_trip::<BlockQ5_1>(1.0 / 31.0 + 0.002);
    }

    #[test]
    fn fifth_bits_land_in_qh() {
        let mut x = [0f32; 32];
        x[0] = -1.0; // code 0
        x[17] = 1.0; // code 31 after the clip: fifth bit set at bit 17
        let b = BlockQ5_0::quantize(&x);
        assert_eq!(u32::from_le_bytes(b.qh) & (1 << 17), 1 << 17);
        assert_eq!(u32::from_le_bytes(b.qh) & 1, 0);
    }
}
