//! NVFP4 as ggml stores it: 64 FP4 (E2M1) values in four sub-blocks of 16, each sub-block with
//! its own unsigned E4M3 (UE4M3) scale. Checkpoints' per-tensor factor is not part of the block
//! (a model applies it to the matmul output).

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{signed_max, QuantBlock, QuantizeBlock};
use crate::fp4::{ggml_best_index, E2M1_DOUBLED};

/// Values per block (ggml's `QK_NVFP4`).
pub const QK_NVFP4: usize = 64;
/// Values per scale (ggml's `QK_NVFP4_SUB`).
pub const QK_NVFP4_SUB: usize = 16;
const SUBS: usize = QK_NVFP4 / QK_NVFP4_SUB;

/// ggml's `block_nvfp4`. Sub-block `s` holds values `16s..16s + 16`; its value `j < 8` is the low
/// nibble of `qs[8s + j]` and value `j + 8` the high nibble of the same byte. Value `j` of
/// sub-block `s` is `E2M1_DOUBLED[code] * ue4m3_to_f32_half(d[s])`.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub struct BlockNvfp4 {
    /// UE4M3 scales, one per sub-block of 16 values.
    pub d: [u8; SUBS],
    pub qs: [u8; QK_NVFP4 / 2],
}

impl BlockNvfp4 {
    /// A block from its four scale bytes and 64 E2M1 codes in value order (a code's bit 3 is its
    /// sign; higher bits are ignored).
    pub fn from_codes(d: [u8; SUBS], codes: &[u8; QK_NVFP4]) -> BlockNvfp4 {
        let mut qs = [0u8; QK_NVFP4 / 2];
        for (s, sub) in codes.chunks_exact(QK_NVFP4_SUB).enumerate() {
            for j in 0..QK_NVFP4_SUB / 2 {
                qs[8 * s + j] = (sub[j] & 0x0F) | ((sub[j + 8] & 0x0F) << 4);
            }
        }
        BlockNvfp4 { d, qs }
    }

    /// The E2M1 code of value `j` (`j < 64`).
    pub fn code(&self, j: usize) -> u8 {
        let (s, i) = (j / QK_NVFP4_SUB, j % QK_NVFP4_SUB);
        let byte = self.qs[8 * s + i % 8];
        if i < 8 {
            byte & 0x0F
        } else {
            byte >> 4
        }
    }
}

const fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let (e, m) = (((x >> 3) & 0x0F) as u32, (x & 0x07) as u32);
    if e == 0 {
        // ldexpf(m, -9), halved.
        m as f32 * (1.0 / 1024.0)
    } else {
        // (1 + m / 8) * 2^(e - 7), halved: exact, so built from bits.
        f32::from_bits(((e + 119) << 23) | (m << 20))
    }
}

/// [`ue4m3_to_f32_half`] of every byte, for kernels.
pub const UE4M3_HALF: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = ue4m3_half(b as u8);
        b += 1;
    }
    t
};

/// ggml's `ggml_ue4m3_to_fp32`: half the value of a UE4M3 scale byte (the E2M1 table is
/// doubled), 0 for 0x00 and 0x7F; bit 7 is ignored otherwise. For a finite positive E4M3 byte
/// (below 0x7F) this is exactly half of [`crate::fp8::e4m3_to_f32`].
#[inline]
pub fn ue4m3_to_f32_half(x: u8) -> f32 {
    UE4M3_HALF[x as usize]
}

/// ggml's `ggml_fp32_to_ue4m3`: the scale byte for `x`, 0 for anything not positive (NaN
/// included), saturating to 448 (0x7E). Rounds half up, and gives 0x7E from 256 on (ggml treats
/// exponent 15 as out of range).
pub fn f32_to_ue4m3(x: f32) -> u8 {
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let x = x.min(448.0);
    let bits = x.to_bits();
    let mut exp = ((bits >> 23) & 0xFF) as i32 - 127 + 7;
    if exp <= 0 {
        // Subnormal: man = round(x * 2^9); the conversion truncates as C's `(int)` does.
        let man = ((x * 512.0 + 0.5) as i32).min(7);
        return if man < 1 { 0 } else { man as u8 };
    }
    if exp >= 15 {
        return 0x7E;
    }
    let mut man = ((bits >> 20) & 0x7) as i32 + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7E;
        }
    }
    ((exp << 3) | man) as u8
}

impl QuantBlock for BlockNvfp4 {
    const DTYPE: DType = DType::NVFP4;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_NVFP4];
        for (s, yb) in out.chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = ue4m3_to_f32_half(self.d[s]);
            for j in 0..QK_NVFP4_SUB / 2 {
                let q = self.qs[8 * s + j];
                yb[j] = E2M1_DOUBLED[(q & 0x0F) as usize] as f32 * d;
                yb[j + 8] = E2M1_DOUBLED[(q >> 4) as usize] as f32 * d;
            }
        }
    }
}

impl QuantizeBlock for BlockNvfp4 {
    /// ggml's `quantize_row_nvfp4_ref`: each sub-block's scale maps its largest magnitude to 6.
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_NVFP4];
        let mut block = BlockNvfp4::zeroed();
        for (s, xb) in x.chunks_exact(QK_NVFP4_SUB).enumerate() {
            let amax = signed_max(xb).1;
            let ue = f32_to_ue4m3(amax / 6.0);
            block.d[s] = ue;
            let d = ue4m3_to_f32_half(ue);
            for j in 0..QK_NVFP4_SUB / 2 {
                block.qs[8 * s + j] = ggml_best_index(xb[j], d) | (ggml_best_index(xb[j + 8], d) << 4);
            }
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;
    use crate::fp8::e4m3_to_f32;

    #[test]
    fn round_trip_error_is_bounded() {
        // A normal scale puts a sub-block's amax near 6, where E2M1 steps by 2: about 1/6 of
        // amax. Small sub-blocks get subnormal scales (steps of 2^-9): when amax / 6 is just
        // under 1.5 * 2^-9 the scale rounds to 2^-9 and 6 * d falls short of amax by 1/3.
        check_round_trip::<BlockNvfp4>(0.34);
    }

    #[test]
    fn scales_are_half_of_e4m3() {
        for b in 1..0x7Fu8 {
            assert_eq!(ue4m3_to_f32_half(b) * 2.0, e4m3_to_f32(b), "{b:#04x}");
        }
        assert_eq!(ue4m3_to_f32_half(0x7F), 0.0);
        assert_eq!(ue4m3_to_f32_half(0xFF), 240.0);
        assert_eq!(ue4m3_to_f32_half(0x38), 0.5);
    }

    #[test]
    fn scale_encoding_follows_ggml() {
        assert_eq!(f32_to_ue4m3(1.0), 0x38);
        assert_eq!(f32_to_ue4m3(-1.0), 0);
        assert_eq!(f32_to_ue4m3(f32::NAN), 0);
        assert_eq!(f32_to_ue4m3(1e9), 0x7E);
        // From 256 on ggml saturates.
        assert_eq!(f32_to_ue4m3(300.0), 0x7E);
        // Halfway rounds up (1.0625 lies between 0x38 and 0x39).
        assert_eq!(f32_to_ue4m3(1.0625), 0x39);
        // Subnormals: round(x * 512) capped at 7.
        assert_eq!(f32_to_ue4m3(3.0 / 512.0), 3);
        assert_eq!(f32_to_ue4m3(0.0155), 7);
        assert_eq!(f32_to_ue4m3(0.5 / 512.0), 1);
        assert_eq!(f32_to_ue4m3(0.4 / 512.0), 0);
    }

    #[test]
    fn codes_pack_in_ggml_order() {
        let codes: [u8; 64] = std::array::from_fn(|j| (j % 16) as u8);
        let block = BlockNvfp4::from_codes([0x38; 4], &codes);
        assert!((0..64).all(|j| block.code(j) == codes[j]));
        // Value 8 of sub-block 0 is the high nibble of byte 0.
        assert_eq!(block.qs[0], 0x80);
        let mut out = [0f32; 64];
        block.dequantize(&mut out);
        assert_eq!(out[7], 6.0);
        assert_eq!(out[15], -6.0);
    }
}
