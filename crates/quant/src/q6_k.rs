//! Q6_K: super-blocks of 256 values in 16 groups of 16; each group has a signed 8-bit scale under
//! an f16 super-scale, and each value a 6-bit code: `x = d * sc * (q - 32)`.

use bytemuck::{Pod, Zeroable};
use tessera_core::DType;

use crate::block::{f16_to_f32, f32_to_f16, QuantBlock, QuantizeBlock};
use crate::kquant::{make_qx_quants, nearest_int, GROUP_MAX_EPS};
use crate::QK_K;

/// ggml's `block_q6_K`. In each 128-value half, `ql[64h + l]` holds the low nibbles of values
/// `l` (low) and `l + 64` (high), `ql[64h + l + 32]` those of `l + 32` and `l + 96`, and
/// `qh[32h + l]` the top two bits of `l`, `l + 32`, `l + 64`, `l + 96`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    /// Super-scale, f16 bits.
    pub d: u16,
}

impl QuantBlock for BlockQ6K {
    const DTYPE: DType = DType::Q6_K;

    fn dequantize(&self, out: &mut [f32]) {
        let out = &mut out[..QK_K];
        let d = f16_to_f32(self.d);
        for (h, y) in out.chunks_exact_mut(128).enumerate() {
            let (ql, qh, sc) = (&self.ql[64 * h..][..64], &self.qh[32 * h..][..32], &self.scales[8 * h..][..8]);
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | (qh[l] & 3) << 4) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) as i32 - 32;
                let q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl QuantizeBlock for BlockQ6K {
    fn quantize(src: &[f32]) -> Self {
        let x = &src[..QK_K];
        let mut codes = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut codes[16 * ib..16 * ib + 16]);
            if scales[ib].abs() > max_abs_scale {
                max_abs_scale = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        let mut block = BlockQ6K::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            return block;
        }
        let iscale = -128.0 / max_scale;
        block.d = f32_to_f16(1.0 / iscale);
        for (q, &s) in block.scales.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..16 {
            let d = f16_to_f32(block.d) * block.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                codes[16 * j + ii] = nearest_int(x[16 * j + ii] / d).clamp(-32, 31) as i8 + 32;
            }
        }
        for h in 0..2 {
            let l6 = &codes[128 * h..128 * h + 128];
            for l in 0..32 {
                let c = |k: usize| l6[l + 32 * k] as u8;
                block.ql[64 * h + l] = (c(0) & 0xF) | ((c(2) & 0xF) << 4);
                block.ql[64 * h + l + 32] = (c(1) & 0xF) | ((c(3) & 0xF) << 4);
                block.qh[32 * h + l] = (c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6);
            }
        }
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_util::check_round_trip;

    #[test]
    fn round_trip_error_is_bounded() {
        // 64 levels per 16 values under 8-bit scales (about 0.016 seen).
        check_round_trip::<BlockQ6K>(0.02);
    }
}
