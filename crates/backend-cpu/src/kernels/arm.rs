//! AArch64 Advanced SIMD kernels for the common 32-value block types and F32.
//!
//! Baseline NEON only (widening multiplies and pairwise adds), no `dotprod`: these exist so Arm
//! machines are not left on the scalar path; the integer sums are exact, as on x86.

use std::arch::aarch64::*;

use tessera_core::DType;

use super::legacy::{Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q8_0_BYTES, Q8_1_BYTES};
use super::{f16_at, DotFn};

/// # Safety
/// The CPU must support NEON (every AArch64 CPU Tessera targets does).
pub(super) unsafe fn neon_dot(w: DType) -> Option<DotFn> {
    Some(match w {
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q5_0 => q5_0,
        DType::Q8_0 => q8_0,
        DType::F32 => f32_dot,
        _ => return None,
    })
}

#[target_feature(enable = "neon")]
#[inline]
fn load_u8(b: &[u8], at: usize) -> uint8x16_t {
    let s = &b[at..at + 16];
    // SAFETY: `s` holds 16 readable bytes.
    unsafe { vld1q_u8(s.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn load_s8(b: &[u8], at: usize) -> int8x16_t {
    vreinterpretq_s8_u8(load_u8(b, at))
}

/// Sum of the 16 products of two signed byte vectors (no overflow for |a| <= 128, |b| <= 127).
#[target_feature(enable = "neon")]
#[inline]
fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let m = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let m = vmlal_s8(m, vget_high_s8(a), vget_high_s8(b));
    vpaddlq_s16(m)
}

/// Low and high nibbles of the 16 bytes at `b[at..]`.
#[target_feature(enable = "neon")]
#[inline]
fn nibbles(b: &[u8], at: usize) -> (int8x16_t, int8x16_t) {
    let v = load_u8(b, at);
    (vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)))
}

#[target_feature(enable = "neon")]
fn q4_0_impl(w: &[u8], x: &[u8]) -> f32 {
    let eight = vdupq_n_s8(8);
    let mut sumf = 0f32;
    for (wb, xb) in w.chunks_exact(Q4_0_BYTES).zip(x.chunks_exact(Q8_0_BYTES)) {
        let (lo, hi) = nibbles(wb, 2);
        let p = vaddq_s32(dot16(vsubq_s8(lo, eight), load_s8(xb, 2)), dot16(vsubq_s8(hi, eight), load_s8(xb, 18)));
        sumf += vaddvq_s32(p) as f32 * f16_at(wb, 0) * f16_at(xb, 0);
    }
    sumf
}

#[target_feature(enable = "neon")]
fn q4_1_impl(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in w.chunks_exact(Q4_1_BYTES).zip(x.chunks_exact(Q8_1_BYTES)) {
        let (lo, hi) = nibbles(wb, 4);
        let p = vaddq_s32(dot16(lo, load_s8(xb, 4)), dot16(hi, load_s8(xb, 20)));
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * vaddvq_s32(p) as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    sumf
}

#[target_feature(enable = "neon")]
fn q5_0_impl(w: &[u8], x: &[u8]) -> f32 {
    let sixteen = vdupq_n_s8(16);
    let mut sumf = 0f32;
    for (wb, xb) in w.chunks_exact(Q5_0_BYTES).zip(x.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let mut hb = [0u8; 32];
        for (j, h) in hb.iter_mut().enumerate() {
            *h = (((qh >> j) & 1) << 4) as u8;
        }
        let (lo, hi) = nibbles(wb, 6);
        let lo = vsubq_s8(vorrq_s8(lo, load_s8(&hb, 0)), sixteen);
        let hi = vsubq_s8(vorrq_s8(hi, load_s8(&hb, 16)), sixteen);
        let p = vaddq_s32(dot16(lo, load_s8(xb, 2)), dot16(hi, load_s8(xb, 18)));
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * vaddvq_s32(p) as f32;
    }
    sumf
}

#[target_feature(enable = "neon")]
fn q8_0_impl(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in w.chunks_exact(Q8_0_BYTES).zip(x.chunks_exact(Q8_0_BYTES)) {
        let p = vaddq_s32(dot16(load_s8(wb, 2), load_s8(xb, 2)), dot16(load_s8(wb, 18), load_s8(xb, 18)));
        sumf += vaddvq_s32(p) as f32 * (f16_at(wb, 0) * f16_at(xb, 0));
    }
    sumf
}

#[target_feature(enable = "neon")]
fn f32_dot_impl(w: &[u8], x: &[u8]) -> f32 {
    let n = (w.len() / 4).min(x.len() / 4);
    let mut acc = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        let a = vreinterpretq_f32_u8(load_u8(w, 4 * i));
        let b = vreinterpretq_f32_u8(load_u8(x, 4 * i));
        acc = vfmaq_f32(acc, a, b);
        i += 4;
    }
    let mut s = vaddvq_f32(acc);
    for j in i..n {
        s += super::f32_at(w, 4 * j) * super::f32_at(x, 4 * j);
    }
    s
}

macro_rules! entry {
    ($($name:ident => $imp:ident),*) => {$(
        fn $name(w: &[u8], x: &[u8]) -> f32 {
            // SAFETY: only handed out by `neon_dot`, whose caller checked for NEON.
            unsafe { $imp(w, x) }
        }
    )*};
}
entry!(q4_0 => q4_0_impl, q4_1 => q4_1_impl, q5_0 => q5_0_impl, q8_0 => q8_0_impl, f32_dot => f32_dot_impl);

#[cfg(test)]
mod tests {
    use super::super::testing::check_against_scalar;
    use super::*;

    #[test]
    fn neon_kernels_match_scalar() {
        for d in DType::ALL {
            // SAFETY: NEON is part of the AArch64 baseline.
            if let Some(f) = unsafe { neon_dot(d) } {
                check_against_scalar(d, f, "neon");
            }
        }
    }
}
