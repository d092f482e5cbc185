//! Q4_K: super-blocks of 256 values in 8 groups of 32; each group has a 6-bit scale and min
//! under f16 super-scales, and each value a 4-bit code: `x = d * sc * q - dmin * m`.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, QuantBlock, QuantizeBlock};
use crate::kquant::{get_scale_min_k4, quantize_scale_min_super_block};
use crate::{K_SCALE_SIZE, QK_K};

/// ggml's `block_q4_K`. Group `2k` uses the low nibbles of `qs[32k..32k + 32]`, group `2k + 1`
/// the high nibbles.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-scale of the group scales, f16 bits.
    pub d: u16,
    /// Super-scale of the group mins, f16 bits.
    pub dmin: u16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

impl QuantBlock for BlockQ4K {
    const DTYPE: DType = DType::Q4_K;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        for (k, (q, y)) in self.qs.chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
            let (sc, m) = get_scale_min_k4(2 * k, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = get_scale_min_k4(2 * k + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

impl QuantizeBlock for BlockQ4K {
    fn quantize(src: &[f32]) -> Self {
        let (d, dmin, scales, codes) = quantize_scale_min_super_block(&src[..QK_K], 15, -1.0, 20);
        let mut qs = [0u8; QK_K / 2];
        for (q, l) in qs.chunks_exact_mut(32).zip(codes.chunks_exact(64)) {
            for j in 0..32 {
                q[j] = l[j] | (l[j + 32] << 4);
            }
        }
        BlockQ4K { d, dmin, scales, qs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // 16 levels over each group's range (at most 2 * amax) under 6-bit scales and mins:
        // a little over half a step (about 0.08 seen).
        check_round_trip::<BlockQ4K>(0.1);
    }
}
