//! Q2_K: super-blocks of 256 values in 16 groups of 16; each group has a 4-bit scale and min
//! under f16 super-scales, and each value a 2-bit code: `x = d * sc * q - dmin * m`.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, QuantBlock, QuantizeBlock};
use crate::kquant::{make_qkx2_quants, nearest_int, Qkx2};
use crate::QK_K;

/// ggml's `block_q2_K`. Byte `scales[g]` holds group `g`'s scale (low nibble) and min (high).
/// In each 128-value half, `qs[32h + l]` holds the codes of values `l`, `l + 32`, `l + 64` and
/// `l + 96` in bits 0-1, 2-3, 4-5 and 6-7.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    /// Super-scale of the group scales, f16 bits.
    pub d: u16,
    /// Super-scale of the group mins, f16 bits.
    pub dmin: u16,
}

/// Packs 2-bit codes in the layout Q2_K and Q3_K share.
pub(crate) fn pack_2bit(codes: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (q, l) in qs.chunks_exact_mut(32).zip(codes.chunks_exact(128)) {
        for j in 0..32 {
            q[j] = l[j] | (l[j + 32] << 2) | (l[j + 64] << 4) | (l[j + 96] << 6);
        }
    }
    qs
}

impl QuantBlock for BlockQ2K {
    const DTYPE: DType = DType::Q2_K;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        // Group g (16 values) reads bits 2 * ((g / 2) % 4) of 16 bytes of its 128-value half.
        for (g, y) in out.chunks_exact_mut(16).enumerate() {
            let q = &self.qs[32 * (g / 8) + 16 * (g % 2)..][..16];
            let shift = 2 * ((g / 2) % 4);
            let sc = self.scales[g];
            let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
            for (o, &b) in y.iter_mut().zip(q) {
                *o = dl * ((b >> shift) & 3) as f32 - ml;
            }
        }
    }
}

impl QuantizeBlock for BlockQ2K {
    fn quantize(src: &[f32]) -> Self {
        const Q4SCALE: f32 = 15.0;
        let x = &src[..QK_K];
        let p = Qkx2 { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
        let mut codes = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..16 {
            let xb = &x[16 * j..16 * j + 16];
            let mut weights = [0f32; 16];
            for (w, &v) in weights.iter_mut().zip(xb) {
                *w = v.abs();
            }
            (scales[j], mins[j]) = make_qkx2_quants(&p, xb, &weights, &mut codes[16 * j..16 * j + 16]);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut block = BlockQ2K::zeroed();
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &scale) in block.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * scale) as u8;
            }
            block.d = f32_to_f16(max_scale / Q4SCALE);
        } else {
            block.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &min) in block.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * min) << 4) as u8;
            }
            block.dmin = f32_to_f16(max_min / Q4SCALE);
        } else {
            block.dmin = f32_to_f16(0.0);
        }
        for j in 0..16 {
            let d = f16_to_f32(block.d) * (block.scales[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16_to_f32(block.dmin) * (block.scales[j] >> 4) as f32;
            for ii in 0..16 {
                codes[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }
        block.qs = pack_2bit(&codes);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // Four levels per 16 values, min and scale in 4 bits: coarse (about 0.33 seen).
        check_round_trip::<BlockQ2K>(0.4);
    }
}
