//! Scalar dot products for the 256-value "K" block types against Q8_K activations, as ggml's
//! generic kernels compute them: unpack a block's integers, take integer sums per sub-block,
//! apply the 6- or 8-bit sub-block scales as integers, and only then the f16/f32 block scales.
//!
//! Block layouts (little-endian):
//! - Q8_K  `[d: f32][qs: 256 x i8][bsums: 16 x i16]` (`bsums[i]` = sum of `qs[16i..16i+16]`).
//! - Q2_K  `[scales: 16][qs: 64][d: f16][dmin: f16]`: 2-bit values, 4-bit scale and min per 16.
//! - Q3_K  `[hmask: 32][qs: 64][scales: 12][d: f16]`: 3-bit values, signed 6-bit scale per 16.
//! - Q4_K  `[d: f16][dmin: f16][scales: 12][qs: 128]`: 4-bit values, 6-bit scale and min per 32.
//! - Q5_K  `[d: f16][dmin: f16][scales: 12][qh: 32][qs: 128]`.
//! - Q6_K  `[ql: 128][qh: 64][scales: 16 x i8][d: f16]`: 6-bit values minus 32, scale per 16.

use super::{f16_at, f32_at, kquant_scales_mins};

pub(crate) const QK_K: usize = 256;
pub(crate) const Q8_K_BYTES: usize = 292;
pub(crate) const Q2_K_BYTES: usize = 84;
pub(crate) const Q3_K_BYTES: usize = 110;
pub(crate) const Q4_K_BYTES: usize = 144;
pub(crate) const Q5_K_BYTES: usize = 176;
pub(crate) const Q6_K_BYTES: usize = 210;

/// Offsets inside a Q8_K block.
pub(crate) const Q8_K_QS: usize = 4;
pub(crate) const Q8_K_BSUMS: usize = 260;

#[inline(always)]
fn blocks<'a>(w: &'a [u8], wb: usize, x: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    w.chunks_exact(wb).zip(x.chunks_exact(Q8_K_BYTES))
}

#[inline(always)]
fn bsum(xb: &[u8], i: usize) -> i32 {
    i16::from_le_bytes([xb[Q8_K_BSUMS + 2 * i], xb[Q8_K_BSUMS + 2 * i + 1]]) as i32
}

/// Sum over 16-value groups of `scale[g] * sum(a * q8)`.
#[inline(always)]
fn scaled_sum_16(a: &[i8; QK_K], scales: impl Fn(usize) -> i32, xb: &[u8]) -> i32 {
    let q8 = &xb[Q8_K_QS..Q8_K_QS + QK_K];
    let mut isum = 0i32;
    for g in 0..QK_K / 16 {
        let mut s = 0i32;
        for l in 16 * g..16 * g + 16 {
            s += a[l] as i32 * q8[l] as i8 as i32;
        }
        isum += scales(g) * s;
    }
    isum
}

pub(crate) fn dot_q2_k(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q2_K_BYTES, x) {
        let sc = &wb[0..16];
        let q2 = &wb[16..80];
        let mut summs = 0i32;
        for (j, &s) in sc.iter().enumerate() {
            summs += bsum(xb, j) * (s >> 4) as i32;
        }
        let mut a = [0i8; QK_K];
        for k in 0..2 {
            for j in 0..4 {
                for l in 0..32 {
                    a[128 * k + 32 * j + l] = ((q2[32 * k + l] >> (2 * j)) & 3) as i8;
                }
            }
        }
        let isum = scaled_sum_16(&a, |g| (sc[g] & 0x0F) as i32, xb);
        let dy = f32_at(xb, 0);
        let dall = dy * f16_at(wb, 80);
        let dmin = dy * f16_at(wb, 82);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// The sixteen signed 6-bit scales of a Q3_K block.
#[inline(always)]
pub(crate) fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    const M1: u32 = 0x0303_0303;
    const M2: u32 = 0x0f0f_0f0f;
    let aux = [
        (a0 & M2) | ((tmp & M1) << 4),
        (a1 & M2) | (((tmp >> 2) & M1) << 4),
        ((a0 >> 4) & M2) | (((tmp >> 4) & M1) << 4),
        ((a1 >> 4) & M2) | (((tmp >> 6) & M1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, v) in aux.iter().enumerate() {
        for (k, b) in v.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *b as i8 - 32;
        }
    }
    out
}

pub(crate) fn dot_q3_k(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q3_K_BYTES, x) {
        let hm = &wb[0..32];
        let q3 = &wb[32..96];
        let scales = q3_k_scales(&wb[96..108]);
        let mut a = [0i8; QK_K];
        for k in 0..2 {
            for j in 0..4 {
                let m = 1u8 << (4 * k + j);
                for l in 0..32 {
                    let low = ((q3[32 * k + l] >> (2 * j)) & 3) as i8;
                    a[128 * k + 32 * j + l] = low - if hm[l] & m != 0 { 0 } else { 4 };
                }
            }
        }
        let isum = scaled_sum_16(&a, |g| scales[g] as i32, xb);
        sumf += f16_at(wb, 108) * f32_at(xb, 0) * isum as f32;
    }
    sumf
}

/// Q4_K and Q5_K: 4-bit values (plus a fifth bit from `qh` for Q5_K) with a 6-bit scale and min
/// per 32 values.
#[inline(always)]
fn dot_q45_k(w: &[u8], x: &[u8], wbytes: usize, five_bits: bool) -> f32 {
    let mut sumf = 0f32;
    let qs_at = if five_bits { 48 } else { 16 };
    for (wb, xb) in blocks(w, wbytes, x) {
        let (sc, mn) = kquant_scales_mins(&wb[4..16]);
        let qs = &wb[qs_at..qs_at + 128];
        let mut a = [0i8; QK_K];
        for j in 0..4 {
            for l in 0..32 {
                a[64 * j + l] = (qs[32 * j + l] & 0x0F) as i8;
                a[64 * j + 32 + l] = (qs[32 * j + l] >> 4) as i8;
            }
            if five_bits {
                let qh = &wb[16..48];
                for l in 0..32 {
                    a[64 * j + l] += if qh[l] & (1 << (2 * j)) != 0 { 16 } else { 0 };
                    a[64 * j + 32 + l] += if qh[l] & (1 << (2 * j + 1)) != 0 { 16 } else { 0 };
                }
            }
        }
        let mut summs = 0i32;
        for j in 0..16 {
            summs += bsum(xb, j) * mn[j / 2] as i32;
        }
        let isum = scaled_sum_16(&a, |g| sc[g / 2] as i32, xb);
        let dy = f32_at(xb, 0);
        sumf += f16_at(wb, 0) * dy * isum as f32 - f16_at(wb, 2) * dy * summs as f32;
    }
    sumf
}

pub(crate) fn dot_q4_k(w: &[u8], x: &[u8]) -> f32 {
    dot_q45_k(w, x, Q4_K_BYTES, false)
}

pub(crate) fn dot_q5_k(w: &[u8], x: &[u8]) -> f32 {
    dot_q45_k(w, x, Q5_K_BYTES, true)
}

pub(crate) fn dot_q6_k(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q6_K_BYTES, x) {
        let mut a = [0i8; QK_K];
        for c in 0..2 {
            let ql = &wb[64 * c..64 * c + 64];
            let qh = &wb[128 + 32 * c..128 + 32 * c + 32];
            for l in 0..32 {
                let o = 128 * c + l;
                a[o] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[o + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[o + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[o + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let isum = scaled_sum_16(&a, |g| wb[192 + g] as i8 as i32, xb);
        sumf += f16_at(wb, 208) * f32_at(xb, 0) * isum as f32;
    }
    sumf
}

/// Q8_K is an activation format in ggml; as a weight it is a plain 8-bit dot product.
pub(crate) fn dot_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q8_K_BYTES, x) {
        let mut s = 0i32;
        for l in 0..QK_K {
            s += wb[Q8_K_QS + l] as i8 as i32 * xb[Q8_K_QS + l] as i8 as i32;
        }
        sumf += f32_at(wb, 0) * f32_at(xb, 0) * s as f32;
    }
    sumf
}
