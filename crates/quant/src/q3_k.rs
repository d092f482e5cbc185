//! Q3_K: super-blocks of 256 values in 16 groups of 16; each group has a signed 6-bit scale under
//! an f16 super-scale, and each value a 3-bit code (2 low bits in `qs`, the third in `hmask`):
//! `x = d * (sc - 32) * (q - 4)`.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, QuantBlock, QuantizeBlock};
use crate::kquant::{make_q3_quants, nearest_int};
use crate::q2_k::pack_2bit;
use crate::QK_K;

/// ggml's `block_q3_K`. Value `i` has its third bit in bit `i / 32` of `hmask[i % 32]`; a clear
/// bit means "subtract 4". The low bits are packed as in Q2_K.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales: low nibbles in bytes 0-7, top two bits in bytes 8-11.
    pub scales: [u8; 12],
    /// Super-scale, f16 bits.
    pub d: u16,
}

/// The 6-bit scale of group `j` (0..16), offset by 32 as ggml stores it.
#[inline]
fn scale(s: &[u8; 12], j: usize) -> i32 {
    let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

impl QuantBlock for BlockQ3K {
    const DTYPE: DType = DType::Q3_K;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d_all = f16_to_f32(self.d);
        // Group g (16 values) reads bits 2 * ((g / 2) % 4) of 16 bytes of its 128-value half,
        // and bit g / 2 of half of `hmask`.
        for (g, y) in out.chunks_exact_mut(16).enumerate() {
            let q = &self.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let hm = &self.hmask[16 * (g % 2)..][..16];
            let shift = 2 * ((g / 2) % 4);
            let m = 1u8 << (g / 2);
            let dl = d_all * scale(&self.scales, g) as f32;
            for ((o, &b), &h) in y.iter_mut().zip(q).zip(hm) {
                let code = ((b >> shift) & 3) as i32 - if h & m != 0 { 0 } else { 4 };
                *o = dl * code as f32;
            }
        }
    }
}

impl QuantizeBlock for BlockQ3K {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_K];
        let mut codes = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut codes[16 * j..16 * j + 16]);
            let s = scales[j].abs();
            if s > amax {
                amax = s;
                max_scale = scales[j];
            }
        }
        let mut block = BlockQ3K::zeroed();
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                let l = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    block.scales[j] = l & 0xF;
                } else {
                    block.scales[j - 8] |= (l & 0xF) << 4;
                }
                block.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            block.d = f32_to_f16(1.0 / iscale);
        } else {
            block.d = f32_to_f16(0.0);
        }
        for j in 0..16 {
            let d = f16_to_f32(block.d) * scale(&block.scales, j) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                codes[16 * j + ii] = nearest_int(x[16 * j + ii] / d).clamp(-4, 3) as i8 + 4;
            }
        }
        let mut low = [0u8; QK_K];
        for (i, (&c, l)) in codes.iter().zip(low.iter_mut()).enumerate() {
            let mut c = c as u8;
            if c > 3 {
                block.hmask[i % 32] |= 1 << (i / 32);
                c -= 4;
            }
            *l = c;
        }
        block.qs = pack_2bit(&low);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // Eight levels per 16 values under a 6-bit scale (about 0.18 seen).
        check_round_trip::<BlockQ3K>(0.22);
    }
}
