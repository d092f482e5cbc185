//! Q5_K: as Q4_K with a fifth bit per value in `qh`: `x = d * sc * q - dmin * m`, `q` in 0..32.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, QuantBlock, QuantizeBlock};
use crate::kquant::{get_scale_min_k4, quantize_scale_min_super_block};
use crate::{K_SCALE_SIZE, QK_K};

/// ggml's `block_q5_K`. Group `2k` takes the low nibbles of `qs[32k..]` and bit `2k` of `qh`,
/// group `2k + 1` the high nibbles and bit `2k + 1`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-scale of the group scales, f16 bits.
    pub d: u16,
    /// Super-scale of the group mins, f16 bits.
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

impl QuantBlock for BlockQ5K {
    const DTYPE: DType = DType::Q5_K;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        let qh = &self.qh;
        for (k, (ql, y)) in self.qs.chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
            let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
            let (sc, m) = get_scale_min_k4(2 * k, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * k + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

impl QuantizeBlock for BlockQ5K {
    fn quantize(src: &[f32]) -> Self {
        let (d, dmin, scales, codes) = quantize_scale_min_super_block(&src[..QK_K], 31, -0.5, 15);
        let mut qh = [0u8; QK_K / 8];
        let mut qs = [0u8; QK_K / 2];
        for (k, (ql, l)) in qs.chunks_exact_mut(32).zip(codes.chunks_exact(64)).enumerate() {
            let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
            for j in 0..32 {
                let (mut l1, mut l2) = (l[j], l[j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
        }
        BlockQ5K { d, dmin, scales, qh, qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // As Q4_K with twice the levels (about 0.044 seen).
        check_round_trip::<BlockQ5K>(0.05);
    }
}
