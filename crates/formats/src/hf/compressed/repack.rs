//! Byte-level conversions of compressed-tensors' stored layouts into ggml blocks. Every function
//! here is lossless: it either reproduces the checkpoint's dequantized values exactly or returns
//! an error saying which value cannot be represented.
//!
//! Shapes are checked by the caller; these functions take the sizes they are given as true and
//! only index within them.

use half::f16;
use tessera_core::DType;
use tessera_quant::{BlockMxfp4, BlockNvfp4, BlockQ4_0, BlockQ4_1, BlockQ8_0, QK_NVFP4, QK_NVFP4_SUB};

/// Values per block of Q4_0, Q4_1, Q8_0 and MXFP4.
pub(crate) const QK32: usize = 32;

/// Signed integer weights, stored one per byte or packed into little-endian int32 words.
pub(crate) enum IntRows<'a> {
    /// `int8`, row-major `[rows, cols]`.
    Bytes(&'a [u8]),
    /// compressed-tensors' `pack_to_int32`: value `c` of a row sits at bit `c * bits` of the row's
    /// words (`row_words` of them), offset by `2^(bits - 1)` to be unsigned. `bits` divides 32,
    /// so no value straddles two words.
    Packed { words: &'a [u8], bits: u32, row_words: usize },
}

impl IntRows<'_> {
    /// Row `r`'s `out.len()` values.
    pub(crate) fn row(&self, r: usize, out: &mut [i8]) {
        match *self {
            IntRows::Bytes(b) => {
                let row = &b[r * out.len()..][..out.len()];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o = x as i8;
                }
            }
            IntRows::Packed { words, bits, row_words } => {
                let row = &words[r * row_words * 4..][..row_words * 4];
                let per_word = (32 / bits) as usize;
                let mask = (1u32 << bits) - 1;
                let offset = 1i32 << (bits - 1);
                for (w, chunk) in out.chunks_mut(per_word).enumerate() {
                    let word = u32::from_le_bytes([row[4 * w], row[4 * w + 1], row[4 * w + 2], row[4 * w + 3]]);
                    for (k, o) in chunk.iter_mut().enumerate() {
                        *o = (((word >> (k as u32 * bits)) & mask) as i32 - offset) as i8;
                    }
                }
            }
        }
    }
}

/// Zero points packed as compressed-tensors packs them: along the row axis (`packed_dim=0`), a
/// `[ceil(rows * bits / 32), groups]` int32 tensor.
pub(crate) fn unpack_zero_points(words: &[u8], bits: u32, rows: usize, groups: usize) -> Vec<i32> {
    let mask = (1u32 << bits) - 1;
    let offset = 1i32 << (bits - 1);
    let mut out = vec![0i32; rows * groups];
    for r in 0..rows {
        let bit = r * bits as usize;
        let (w, shift) = (bit / 32, (bit % 32) as u32);
        for g in 0..groups {
            let at = 4 * (w * groups + g);
            let word = u32::from_le_bytes([words[at], words[at + 1], words[at + 2], words[at + 3]]);
            out[r * groups + g] = ((word >> shift) & mask) as i32 - offset;
        }
    }
    out
}

/// Per-row, per-group values (scales or zero points) of a `[rows, cols]` weight: element
/// `(r, c)` uses `values[r * per_row + c / group]`.
pub(crate) struct Grid<T> {
    pub values: Vec<T>,
    pub per_row: usize,
    pub group: usize,
}

impl<T: Copy> Grid<T> {
    pub(crate) fn at(&self, r: usize, c: usize) -> T {
        self.values[r * self.per_row + c / self.group]
    }
}

/// Which stored tensor an integer repacking error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Culprit {
    Values,
    Scale,
    ZeroPoint,
}

/// `v` as f16 bits when the conversion is exact.
fn exact_f16(v: f32) -> Option<u16> {
    let h = f16::from_f32(v);
    (v.is_finite() && h.to_f32() == v).then_some(h.to_bits())
}

/// Repacks integer weights `[rows, cols]` into ggml blocks of `dtype` (Q4_0, Q4_1 or Q8_0), block
/// by block, with value `(q - zero) * scale`. Q4_0 and Q8_0 take `d = scale`; Q4_1 takes
/// `d = scale`, `m = -(zero + 8) * scale` and code `q + 8`. `cols` is a multiple of 32 and every
/// block lies inside one group.
pub(crate) fn int_blocks(
    values: &IntRows<'_>,
    rows: usize,
    cols: usize,
    scales: &Grid<f32>,
    zeros: Option<&Grid<i32>>,
    dtype: DType,
    out: &mut [u8],
) -> Result<(), (Culprit, String)> {
    let block_bytes = dtype.block_bytes();
    let row_bytes = cols / QK32 * block_bytes;
    let mut row = vec![0i8; cols];
    for r in 0..rows {
        values.row(r, &mut row);
        let out_row = &mut out[r * row_bytes..][..row_bytes];
        for (b, (q, block)) in row.chunks_exact(QK32).zip(out_row.chunks_exact_mut(block_bytes)).enumerate() {
            let c = b * QK32;
            let scale = scales.at(r, c);
            let d = exact_f16(scale).ok_or_else(|| {
                (
                    Culprit::Scale,
                    format!("scale {scale:e} (row {r}, column {c}) is not exactly an f16, as ggml stores it"),
                )
            })?;
            let nibble = |v: i8| -> Result<u8, (Culprit, String)> {
                let code = i32::from(v) + 8;
                u8::try_from(code).ok().filter(|&n| n < 16).ok_or_else(|| {
                    (Culprit::Values, format!("value {v} (row {r}, block at column {c}) does not fit in 4 bits"))
                })
            };
            let codes = |q: &[i8]| -> Result<[u8; 16], (Culprit, String)> {
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    qs[j] = nibble(q[j])? | (nibble(q[j + 16])? << 4);
                }
                Ok(qs)
            };
            match dtype {
                DType::Q4_0 => block.copy_from_slice(bytemuck::bytes_of(&BlockQ4_0 { d, qs: codes(q)? })),
                DType::Q4_1 => {
                    let zero = zeros.map_or(0, |z| z.at(r, c));
                    let m = -((zero + 8) as f32) * scale;
                    let m = exact_f16(m).ok_or_else(|| {
                        let what = format!(
                            "zero point {zero} with scale {scale:e} (row {r}, column {c}) gives a minimum {m:e} that is \
                             not exactly an f16, so the weight has no exact Q4_1 form"
                        );
                        (Culprit::ZeroPoint, what)
                    })?;
                    block.copy_from_slice(bytemuck::bytes_of(&BlockQ4_1 { d, m, qs: codes(q)? }));
                }
                DType::Q8_0 => {
                    let mut qs = [0i8; QK32];
                    qs.copy_from_slice(q);
                    block.copy_from_slice(bytemuck::bytes_of(&BlockQ8_0 { d, qs }));
                }
                other => return Err((Culprit::Values, format!("no integer repacking into {other}"))),
            }
        }
    }
    Ok(())
}

/// The E2M1 code of value `c` of a row packed two per byte, value `2k` in the low nibble of
/// byte `k` (compressed-tensors' `pack_fp4_to_uint8`).
fn fp4_code(row: &[u8], c: usize) -> u8 {
    (row[c / 2] >> (4 * (c % 2))) & 0x0F
}

/// Repacks NVFP4 `[rows, cols]` (`cols` a multiple of 64): E2M1 codes packed two per byte, and
/// one E4M3 scale byte per 16 values (`[rows, cols / 16]`), into ggml NVFP4 blocks. ggml reads a
/// scale byte as unsigned E4M3, whose bits are E4M3's for positive values; a negative scale
/// (sign bit set) becomes its magnitude with the sub-block's codes negated, which is exact.
pub(crate) fn nvfp4_blocks(
    packed: &[u8],
    scales: &[u8],
    rows: usize,
    cols: usize,
    out: &mut [u8],
) -> Result<(), String> {
    let subs = QK_NVFP4 / QK_NVFP4_SUB;
    let block_bytes = DType::NVFP4.block_bytes();
    for r in 0..rows {
        let row = &packed[r * cols / 2..][..cols / 2];
        let row_scales = &scales[r * cols / QK_NVFP4_SUB..][..cols / QK_NVFP4_SUB];
        for b in 0..cols / QK_NVFP4 {
            let mut d = [0u8; 4];
            let mut codes = [0u8; QK_NVFP4];
            for s in 0..subs {
                let byte = row_scales[b * subs + s];
                if byte & 0x7F == 0x7F {
                    return Err(format!(
                        "scale byte {byte:#04x} (row {r}, column {}) is an E4M3 NaN",
                        (b * subs + s) * 16
                    ));
                }
                let flip = byte & 0x80;
                d[s] = byte & 0x7F;
                for j in 0..QK_NVFP4_SUB {
                    let c = b * QK_NVFP4 + s * QK_NVFP4_SUB + j;
                    // Bit 3 of an E2M1 code is its sign.
                    codes[s * QK_NVFP4_SUB + j] = fp4_code(row, c) ^ (flip >> 4);
                }
            }
            let block = BlockNvfp4::from_codes(d, &codes);
            out[(r * cols / QK_NVFP4 + b) * block_bytes..][..block_bytes].copy_from_slice(bytemuck::bytes_of(&block));
        }
    }
    Ok(())
}

/// Repacks MXFP4 `[rows, cols]` (`cols` a multiple of 32): E2M1 codes packed two per byte, and one
/// E8M0 exponent byte per 32 values (`[rows, cols / 32]`), into ggml MXFP4 blocks. E8M0 0xFF is
/// NaN in the OCP format and is refused.
pub(crate) fn mxfp4_blocks(
    packed: &[u8],
    scales: &[u8],
    rows: usize,
    cols: usize,
    out: &mut [u8],
) -> Result<(), String> {
    let block_bytes = DType::MXFP4.block_bytes();
    for r in 0..rows {
        let row = &packed[r * cols / 2..][..cols / 2];
        for b in 0..cols / QK32 {
            let e = scales[r * cols / QK32 + b];
            if e == 0xFF {
                return Err(format!("scale byte 0xff (row {r}, column {}) is an E8M0 NaN", b * QK32));
            }
            let mut qs = [0u8; QK32 / 2];
            for (j, q) in qs.iter_mut().enumerate() {
                let c = b * QK32 + j;
                *q = fp4_code(row, c) | (fp4_code(row, c + QK32 / 2) << 4);
            }
            let block = BlockMxfp4 { e, qs };
            out[(r * cols / QK32 + b) * block_bytes..][..block_bytes].copy_from_slice(bytemuck::bytes_of(&block));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_quant::{dequantize_to_vec, fp4::E2M1_VALUES, fp8::e4m3_to_f32};

    use super::*;

    /// compressed-tensors' `pack_to_int32` for one row, written from its definition.
    fn pack(values: &[i8], bits: u32) -> Vec<u8> {
        let mut words = vec![0u32; (values.len() * bits as usize).div_ceil(32)];
        for (c, &v) in values.iter().enumerate() {
            let u = (i32::from(v) + (1 << (bits - 1))) as u32;
            let bit = c * bits as usize;
            words[bit / 32] |= u << (bit % 32);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn packed_rows_unpack_at_every_width() {
        for bits in [1u32, 2, 4, 8] {
            let lo = -(1i32 << (bits - 1));
            let values: Vec<i8> = (0..40).map(|i| (lo + i % (1 << bits)) as i8).collect();
            let words = pack(&values, bits);
            let rows = IntRows::Packed { words: &words, bits, row_words: words.len() / 4 };
            let mut got = vec![0i8; 40];
            rows.row(0, &mut got);
            assert_eq!(got, values, "{bits} bits");
        }
    }

    #[test]
    fn int4_groups_become_exact_q4_0_and_q4_1() {
        let (rows, cols) = (2, 64);
        let values: Vec<i8> = (0..rows * cols).map(|i| ((i * 7) % 16) as i8 - 8).collect();
        let words: Vec<u8> = values.chunks(cols).flat_map(|r| pack(r, 4)).collect();
        let src = IntRows::Packed { words: &words, bits: 4, row_words: cols / 8 };
        let scales = Grid { values: vec![0.5, 0.25, 1.5, 0.125], per_row: 2, group: 32 };
        let mut out = vec![0u8; rows * cols / 32 * 18];
        int_blocks(&src, rows, cols, &scales, None, DType::Q4_0, &mut out).unwrap();
        let got = dequantize_to_vec(DType::Q4_0, &out).unwrap();
        for (i, &g) in got.iter().enumerate() {
            assert_eq!(g, f32::from(values[i]) * scales.at(i / cols, i % cols), "value {i}");
        }

        let zeros = Grid { values: vec![-3, 0, 7, -8], per_row: 2, group: 32 };
        let mut out = vec![0u8; rows * cols / 32 * 20];
        int_blocks(&src, rows, cols, &scales, Some(&zeros), DType::Q4_1, &mut out).unwrap();
        let got = dequantize_to_vec(DType::Q4_1, &out).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let (r, c) = (i / cols, i % cols);
            assert_eq!(g, (f32::from(values[i]) - zeros.at(r, c) as f32) * scales.at(r, c), "value {i}");
        }
    }

    #[test]
    fn inexact_scales_and_minimums_are_refused() {
        let values = vec![1i8; 32];
        let src = IntRows::Bytes(bytemuck::cast_slice(&values));
        let mut out = vec![0u8; 20];
        let tiny = Grid { values: vec![1e-9], per_row: 1, group: 32 };
        let (culprit, e) = int_blocks(&src, 1, 32, &tiny, None, DType::Q4_0, &mut out).unwrap_err();
        assert!(culprit == Culprit::Scale && e.contains("not exactly an f16"), "{e}");
        // 0.1 as f16 is 0.0999755859375; 13 times it needs 15 significant bits.
        let scale = f16::from_f32(0.1).to_f32();
        let scales = Grid { values: vec![scale], per_row: 1, group: 32 };
        let zeros = Grid { values: vec![5], per_row: 1, group: 32 };
        let (culprit, e) = int_blocks(&src, 1, 32, &scales, Some(&zeros), DType::Q4_1, &mut out).unwrap_err();
        assert!(culprit == Culprit::ZeroPoint && e.contains("no exact Q4_1 form"), "{e}");
        let wide = vec![100i8; 32];
        let (culprit, e) =
            int_blocks(&IntRows::Bytes(bytemuck::cast_slice(&wide)), 1, 32, &scales, None, DType::Q4_0, &mut out)
                .unwrap_err();
        assert!(culprit == Culprit::Values && e.contains("does not fit in 4 bits"), "{e}");
    }

    #[test]
    fn int8_becomes_q8_0() {
        let values: Vec<i8> = (0..64).map(|i| (i * 9 % 256) as u8 as i8).collect();
        let src = IntRows::Bytes(bytemuck::cast_slice(&values));
        let scales = Grid { values: vec![0.03125], per_row: 0, group: 64 };
        let mut out = vec![0u8; 2 * 34];
        int_blocks(&src, 1, 64, &scales, None, DType::Q8_0, &mut out).unwrap();
        let got = dequantize_to_vec(DType::Q8_0, &out).unwrap();
        let want: Vec<f32> = values.iter().map(|&v| f32::from(v) * 0.03125).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn zero_points_unpack_along_rows() {
        let (rows, groups, bits) = (9usize, 2usize, 4u32);
        let zp: Vec<i32> = (0..rows * groups).map(|i| (i as i32 * 5) % 16 - 8).collect();
        let word_rows = (rows * bits as usize).div_ceil(32);
        let mut words = vec![0u32; word_rows * groups];
        for r in 0..rows {
            for g in 0..groups {
                let bit = r * bits as usize;
                words[(bit / 32) * groups + g] |= ((zp[r * groups + g] + 8) as u32) << (bit % 32);
            }
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(unpack_zero_points(&bytes, bits, rows, groups), zp);
    }

    fn fp4_packed(codes: &[u8]) -> Vec<u8> {
        codes.chunks(2).map(|p| p[0] | (p[1] << 4)).collect()
    }

    #[test]
    fn nvfp4_repacks_with_the_sign_of_negative_scales_moved_into_the_codes() {
        let cols = 128;
        let codes: Vec<u8> = (0..cols).map(|i| (i * 5 % 16) as u8).collect();
        let scales: Vec<u8> = vec![0x38, 0xB8, 0x01, 0x7E, 0x00, 0x80, 0x41, 0x30];
        let mut out = vec![0u8; 2 * 36];
        nvfp4_blocks(&fp4_packed(&codes), &scales, 1, cols, &mut out).unwrap();
        let got = dequantize_to_vec(DType::NVFP4, &out).unwrap();
        for (c, &g) in got.iter().enumerate() {
            let want = E2M1_VALUES[codes[c] as usize] * e4m3_to_f32(scales[c / 16]);
            assert!(g == want || (g == 0.0 && want == 0.0), "value {c}: {g} vs {want}");
        }
        let e = nvfp4_blocks(&fp4_packed(&codes), &[0x7F; 8], 1, cols, &mut out).unwrap_err();
        assert!(e.contains("E4M3 NaN"), "{e}");
    }

    #[test]
    fn mxfp4_repacks_value_j_and_j_plus_16_into_one_byte() {
        let cols = 64;
        let codes: Vec<u8> = (0..cols).map(|i| (i * 3 % 16) as u8).collect();
        let scales = [127u8, 130];
        let mut out = vec![0u8; 2 * 17];
        mxfp4_blocks(&fp4_packed(&codes), &scales, 1, cols, &mut out).unwrap();
        let got = dequantize_to_vec(DType::MXFP4, &out).unwrap();
        for (c, &g) in got.iter().enumerate() {
            let want = E2M1_VALUES[codes[c] as usize] * 2f32.powi(i32::from(scales[c / 32]) - 127);
            assert!(g == want || (g == 0.0 && want == 0.0), "value {c}: {g} vs {want}");
        }
        let e = mxfp4_blocks(&fp4_packed(&codes), &[0xFF, 0], 1, cols, &mut out).unwrap_err();
        assert!(e.contains("E8M0 NaN"), "{e}");
    }
}
