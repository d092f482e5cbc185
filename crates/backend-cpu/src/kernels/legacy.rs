//! Scalar dot products for the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, MXFP4)
//! and NVFP4 against Q8_0 or Q8_1 activations, following ggml's generic kernels operation for
//! operation.
//!
//! Block layouts (little-endian, as ggml stores them):
//! - Q4_0 `[d: f16][qs: 16]`: value `j` is the low nibble of `qs[j]`, value `j + 16` the high one,
//!   both minus 8, times `d`.
//! - Q4_1 `[d: f16][m: f16][qs: 16]`: `d * q + m`.
//! - Q5_0 `[d: f16][qh: u32][qs: 16]`: bit `j` of `qh` is the fifth bit of value `j`; minus 16.
//! - Q5_1 `[d: f16][m: f16][qh: u32][qs: 16]`.
//! - Q8_0 `[d: f16][qs: 32 x i8]`; Q8_1 `[d: f16][s: f16][qs: 32 x i8]` where `s = d * sum(qs)`.
//! - MXFP4 `[e: u8][qs: 16]`: E2M1 nibbles times the E8M0 scale `2^(e - 127)`.
//! - NVFP4 `[d: 4 x u8][qs: 32]`, 64 values: sub-block `s` (values `16s..16s + 16`) has the UE4M3
//!   scale `d[s]`; its value `j < 8` is the low nibble of `qs[8s + j]`, value `j + 8` the high
//!   one. A block meets two Q8_0 blocks: sub-blocks 0 and 1 the first, 2 and 3 the second.

use tessera_quant::UE4M3_HALF;

use super::{e8m0_half, f16_at, MXFP4_VALUES};

pub(crate) const QK: usize = 32;
pub(crate) const Q4_0_BYTES: usize = 18;
pub(crate) const Q4_1_BYTES: usize = 20;
pub(crate) const Q5_0_BYTES: usize = 22;
pub(crate) const Q5_1_BYTES: usize = 24;
pub(crate) const Q8_0_BYTES: usize = 34;
pub(crate) const Q8_1_BYTES: usize = 36;
pub(crate) const MXFP4_BYTES: usize = 17;
pub(crate) const NVFP4_BYTES: usize = 36;

/// Pairs up the blocks of a weight row and an activation row.
#[inline(always)]
fn blocks<'a>(w: &'a [u8], wb: usize, x: &'a [u8], xb: usize) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    w.chunks_exact(wb).zip(x.chunks_exact(xb))
}

#[inline(always)]
fn q8(x: &[u8], at: usize, j: usize) -> i32 {
    x[at + j] as i8 as i32
}

pub(crate) fn dot_q4_0(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q4_0_BYTES, x, Q8_0_BYTES) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..QK / 2 {
            let q = wb[2 + j];
            s0 += ((q & 0x0F) as i32 - 8) * q8(xb, 2, j);
            s1 += ((q >> 4) as i32 - 8) * q8(xb, 2, j + QK / 2);
        }
        sumf += (s0 + s1) as f32 * f16_at(wb, 0) * f16_at(xb, 0);
    }
    sumf
}

pub(crate) fn dot_q4_1(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q4_1_BYTES, x, Q8_1_BYTES) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..QK / 2 {
            let q = wb[4 + j];
            s0 += (q & 0x0F) as i32 * q8(xb, 4, j);
            s1 += (q >> 4) as i32 * q8(xb, 4, j + QK / 2);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    sumf
}

pub(crate) fn dot_q5_0(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q5_0_BYTES, x, Q8_0_BYTES) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..QK / 2 {
            let q = wb[6 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            s0 += (((q & 0x0F) as u32 | h0) as i32 - 16) * q8(xb, 2, j);
            s1 += (((q >> 4) as u32 | h1) as i32 - 16) * q8(xb, 2, j + QK / 2);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32;
    }
    sumf
}

pub(crate) fn dot_q5_1(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, Q5_1_BYTES, x, Q8_1_BYTES) {
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..QK / 2 {
            let q = wb[8 + j];
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            s0 += ((q & 0x0F) as u32 | h0) as i32 * q8(xb, 4, j);
            s1 += ((q >> 4) as u32 | h1) as i32 * q8(xb, 4, j + QK / 2);
        }
        sumf += (f16_at(wb, 0) * f16_at(xb, 0)) * (s0 + s1) as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    sumf
}

/// Q8_0 weights, and the 8-bit part of Q8_1 weights (`qs` at `at`), against Q8_0 activations.
#[inline(always)]
fn dot_8bit(w: &[u8], wbytes: usize, at: usize, x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, wbytes, x, Q8_0_BYTES) {
        let mut s = 0i32;
        for j in 0..QK {
            s += q8(wb, at, j) * q8(xb, 2, j);
        }
        sumf += s as f32 * (f16_at(wb, 0) * f16_at(xb, 0));
    }
    sumf
}

pub(crate) fn dot_q8_0(w: &[u8], x: &[u8]) -> f32 {
    dot_8bit(w, Q8_0_BYTES, 2, x)
}

/// Q8_1 is an activation format in ggml; as a weight its `s` field is redundant.
pub(crate) fn dot_q8_1(w: &[u8], x: &[u8]) -> f32 {
    dot_8bit(w, Q8_1_BYTES, 4, x)
}

pub(crate) fn dot_mxfp4(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, MXFP4_BYTES, x, Q8_0_BYTES) {
        let d = f16_at(xb, 0) * e8m0_half(wb[0]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..QK / 2 {
            let q = wb[1 + j];
            s0 += q8(xb, 2, j) * MXFP4_VALUES[(q & 0x0F) as usize] as i32;
            s1 += q8(xb, 2, j + QK / 2) * MXFP4_VALUES[(q >> 4) as usize] as i32;
        }
        sumf += d * (s0 + s1) as f32;
    }
    sumf
}

pub(crate) fn dot_nvfp4(w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in blocks(w, NVFP4_BYTES, x, 2 * Q8_0_BYTES) {
        for s in 0..4 {
            let xq = &xb[(s / 2) * Q8_0_BYTES..];
            let at = 2 + (s % 2) * 16;
            let (mut lo, mut hi) = (0i32, 0i32);
            for j in 0..8 {
                let q = wb[4 + 8 * s + j];
                lo += q8(xq, at, j) * MXFP4_VALUES[(q & 0x0F) as usize] as i32;
                hi += q8(xq, at, j + 8) * MXFP4_VALUES[(q >> 4) as usize] as i32;
            }
            sumf += f16_at(xq, 0) * UE4M3_HALF[wb[s] as usize] * (lo + hi) as f32;
        }
    }
    sumf
}
