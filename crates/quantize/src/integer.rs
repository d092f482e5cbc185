//! Symmetric integer quantization as compressed-tensors defines it (`calculate_qparams`,
//! `_quantize`): a group's scale is `max|w| / ((q_max - q_min) / 2)`, i.e. `max|w| / 7.5` for
//! int4 and `max|w| / 127.5` for int8, rounded to the scale's stored type (a zero scale becomes
//! that type's epsilon); a value's code is `clamp(round_half_even(w / scale), q_min, q_max)`.
//!
//! INT8 W8A8 is the special case of one group per row. The int4 codes of `pack-quantized`
//! checkpoints are packed eight to an `int32`, lowest bits first, offset by 8
//! (`pack_to_int32`).

use crate::floats::FloatType;

/// A signed integer code width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bits(pub u32);

impl Bits {
    pub fn min(self) -> i32 {
        -(1 << (self.0 - 1))
    }

    pub fn max(self) -> i32 {
        (1 << (self.0 - 1)) - 1
    }

    /// `(q_max - q_min) / 2`, the divisor compressed-tensors takes for a symmetric scale.
    fn half_range(self) -> f32 {
        (self.max() - self.min()) as f32 / 2.0
    }

    /// The stored scale of a group whose largest magnitude is `amax`.
    pub fn scale(self, amax: f32, scale_type: FloatType) -> f32 {
        let scale = scale_type.round(amax / self.half_range());
        if scale == 0.0 {
            scale_type.eps()
        } else {
            scale
        }
    }

    /// The code of `w` under `scale`.
    #[inline]
    pub fn code(self, w: f32, scale: f32) -> i8 {
        (w / scale).round_ties_even().clamp(self.min() as f32, self.max() as f32) as i8
    }
}

/// A matrix quantized in groups of `group` consecutive values of a row.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupQuantized {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    /// Row-major `[rows, cols]`.
    pub codes: Vec<i8>,
    /// Row-major `[rows, cols / group]`, as stored.
    pub scales: Vec<f32>,
}

impl GroupQuantized {
    pub fn groups_per_row(&self) -> usize {
        self.cols / self.group
    }

    /// The values the checkpoint stands for: code times scale.
    pub fn dequantize(&self) -> Vec<f32> {
        let gpr = self.groups_per_row();
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, (row, codes)) in out.chunks_exact_mut(self.cols).zip(self.codes.chunks_exact(self.cols)).enumerate() {
            for (i, (v, &c)) in row.iter_mut().zip(codes).enumerate() {
                *v = c as f32 * self.scales[r * gpr + i / self.group];
            }
        }
        out
    }
}

/// Largest magnitude of `values`.
pub fn amax(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Round-to-nearest quantization of a row-major `[rows, cols]` matrix in groups of `group`
/// (`group == cols` gives one scale per row). `cols` must be a multiple of `group`.
pub fn quantize_rtn(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    bits: Bits,
    scale_type: FloatType,
) -> GroupQuantized {
    debug_assert!(w.len() == rows * cols && group > 0 && cols.is_multiple_of(group));
    let gpr = cols / group;
    let mut codes = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    for ((row, out), row_scales) in
        w.chunks_exact(cols).zip(codes.chunks_exact_mut(cols)).zip(scales.chunks_exact_mut(gpr))
    {
        for ((g, o), s) in row.chunks_exact(group).zip(out.chunks_exact_mut(group)).zip(row_scales) {
            *s = bits.scale(amax(g), scale_type);
            for (&v, q) in g.iter().zip(o) {
                *q = bits.code(v, *s);
            }
        }
    }
    GroupQuantized { rows, cols, group, codes, scales }
}

/// The matrix after quantizing and dequantizing, as the checkpoint will hold it.
pub fn fake_quantize_rtn(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    bits: Bits,
    scale_type: FloatType,
) -> Vec<f32> {
    quantize_rtn(w, rows, cols, group, bits, scale_type).dequantize()
}

/// compressed-tensors' `pack_to_int32` for 4-bit codes: each row's codes, offset by 8 to
/// 0..=15, eight to an `int32` with the first in the lowest bits; a row that is not a multiple
/// of 8 is padded with zeros (code -8 + 8). Returns `[rows, ceil(cols / 8)]` little-endian
/// bytes.
pub fn pack_int4(codes: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let words = cols.div_ceil(8);
    let mut out = Vec::with_capacity(rows * words * 4);
    for row in codes.chunks_exact(cols) {
        for chunk in row.chunks(8) {
            let mut word = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                word |= (((c as i32) + 8) as u32 & 0xF) << (4 * i);
            }
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// The inverse of [`pack_int4`].
#[cfg(test)]
pub fn unpack_int4(bytes: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let words = cols.div_ceil(8);
    let mut out = Vec::with_capacity(rows * cols);
    for row in bytes.chunks_exact(words * 4).take(rows) {
        for i in 0..cols {
            let w = u32::from_le_bytes([row[i / 8 * 4], row[i / 8 * 4 + 1], row[i / 8 * 4 + 2], row[i / 8 * 4 + 3]]);
            out.push(((w >> (4 * (i % 8))) & 0xF) as i8 - 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_scale_and_codes_follow_compressed_tensors() {
        let b = Bits(4);
        assert_eq!((b.min(), b.max()), (-8, 7));
        // max|w| = 7.5 gives scale 1: the largest value rounds to 8 (ties to even) and clamps to
        // 7, its negative reaches -8.
        let w = [7.5, -7.5, 2.5, 3.5, -0.5, 0.49, 1.0, 0.0];
        let q = quantize_rtn(&w, 1, 8, 8, b, FloatType::BF16);
        assert_eq!(q.scales, [1.0]);
        assert_eq!(q.codes, [7, -8, 2, 4, 0, 0, 1, 0]);
        assert_eq!(q.dequantize(), [7.0, -8.0, 2.0, 4.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn groups_have_their_own_scales_rounded_to_the_scale_type() {
        // Row 0: groups with max 15 and 0.3; row 1: an all-zero group and max 1.
        let w = [15.0, -3.0, 0.3, 0.1, 0.0, 0.0, -1.0, 0.5];
        let q = quantize_rtn(&w, 2, 4, 2, Bits(4), FloatType::BF16);
        let expected_small = FloatType::BF16.round(0.3 / 7.5);
        assert_eq!(q.scales, [2.0, expected_small, FloatType::BF16.eps(), FloatType::BF16.round(1.0 / 7.5)]);
        assert_eq!(&q.codes[..2], &[7, -2]); // -3 / 2 = -1.5 rounds to even -2
        assert_eq!(q.codes[2], (0.3 / expected_small).round_ties_even().min(7.0) as i8);
        assert_eq!(&q.codes[4..6], &[0, 0]);
    }

    #[test]
    fn int8_per_channel_divides_by_127_5() {
        let w = [127.5, -127.5, 1.0, 64.0];
        let q = quantize_rtn(&w, 1, 4, 4, Bits(8), FloatType::BF16);
        assert_eq!(q.scales, [1.0]);
        assert_eq!(q.codes, [127, -128, 1, 64]);
    }

    #[test]
    fn packing_matches_pack_to_int32() {
        // Codes -8..=7 in order: offsets 0..=15; the first word holds 0..7 in nibbles 0..7.
        let codes: Vec<i8> = (-8..8).collect();
        let packed = pack_int4(&codes, 1, 16);
        assert_eq!(u32::from_le_bytes(packed[0..4].try_into().unwrap()), 0x7654_3210);
        assert_eq!(u32::from_le_bytes(packed[4..8].try_into().unwrap()), 0xFEDC_BA98);
        assert_eq!(unpack_int4(&packed, 1, 16), codes);
        // A row of 12 codes takes two words, the second padded with offset zeros.
        let codes: Vec<i8> = vec![1; 24];
        let packed = pack_int4(&codes, 2, 12);
        assert_eq!(packed.len(), 2 * 2 * 4);
        assert_eq!(u32::from_le_bytes(packed[4..8].try_into().unwrap()), 0x0000_9999);
        assert_eq!(unpack_int4(&packed, 2, 12), codes);
    }
}
