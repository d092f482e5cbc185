//! Quantized block formats: ggml-exact dequantization and reference quantization, one file per
//! format family.
//!
//! Every block struct is laid out byte for byte as ggml lays it out (`ggml-common.h`), and every
//! conversion performs the same float operations in the same order as ggml's `dequantize_row_*`
//! and `quantize_row_*_ref`, so results are bit-identical to ggml's. The fixtures in
//! `tests/fixtures/quant/` (made by `scripts/fixtures/quant/make_quant_fixtures.py`) check this
//! against implementations written outside Tessera.
//!
//! Blocks are read from byte slices with unaligned loads, so tensor bytes at any address work.
//! Kernels that want typed blocks can borrow them with [`blocks`] when the bytes are aligned.
//!
//! The element codecs other code needs on their own live in [`fp8`] (E4M3), [`fp4`] (E2M1) and
//! [`int8`] (I8, and the per-row activation quantization that MatMul with I8 weights uses).

mod block;
mod float;
pub mod fp4;
pub mod fp8;
pub mod int8;
mod kquant;
mod mxfp4;
mod nvfp4;
mod q2_k;
mod q3_k;
mod q4;
mod q4_k;
mod q5;
mod q5_k;
mod q6_k;
mod q8;

pub use block::{blocks, QuantBlock, QuantizeBlock};
pub use mxfp4::BlockMxfp4;
pub use nvfp4::{f32_to_ue4m3, ue4m3_to_f32_half, BlockNvfp4, QK_NVFP4, QK_NVFP4_SUB, UE4M3_HALF};
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4::{BlockQ4_0, BlockQ4_1};
pub use q4_k::BlockQ4K;
pub use q5::{BlockQ5_0, BlockQ5_1};
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8::{BlockQ8K, BlockQ8_0, BlockQ8_1};

use block::{dequantize_row, quantize_row};
use tessera_core::DType;

/// Values per super-block of the K-quants (ggml's `QK_K`).
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K (ggml's `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("{op} is not supported for {dtype}")]
    Unsupported { dtype: DType, op: &'static str },
    #[error("{bytes} bytes is not a whole number of {dtype} blocks ({block_bytes} bytes each)")]
    PartialBlock { dtype: DType, bytes: usize, block_bytes: usize },
    #[error("{values} values is not a whole number of {dtype} blocks ({block_len} values each)")]
    PartialValues { dtype: DType, values: usize, block_len: usize },
    #[error("{bytes} bytes of {dtype} hold {expected} values, but the f32 side has {values}")]
    LengthMismatch { dtype: DType, bytes: usize, expected: usize, values: usize },
    #[error("{dtype} blocks need {align}-byte alignment; these bytes are not aligned")]
    Misaligned { dtype: DType, align: usize },
}

/// Checks that `bytes` of `dtype` and `values` f32s describe the same whole blocks.
fn check_lengths(dtype: DType, bytes: usize, values: usize) -> Result<(), QuantError> {
    let (block_bytes, block_len) = (dtype.block_bytes(), dtype.block_len());
    if !bytes.is_multiple_of(block_bytes) {
        return Err(QuantError::PartialBlock { dtype, bytes, block_bytes });
    }
    if !values.is_multiple_of(block_len) {
        return Err(QuantError::PartialValues { dtype, values, block_len });
    }
    let expected = bytes / block_bytes * block_len;
    if expected != values {
        return Err(QuantError::LengthMismatch { dtype, bytes, expected, values });
    }
    Ok(())
}

/// Byte offsets of the f16 scale fields inside one block of `dtype` (empty for types whose scale
/// is not an f16: Q8_K's is an f32 at 0, MXFP4's an E8M0 byte at 0, NVFP4's four UE4M3 bytes at
/// 0..4; I8 and F8_E4M3 have none). Tests use it to draw random blocks whose scales are finite.
pub fn f16_scale_offsets(dtype: DType) -> &'static [usize] {
    use DType::*;
    match dtype {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Converts `src`, whole blocks of `dtype`, to f32 in `dst`, bit-exact with ggml's
/// `dequantize_row_*` (and with ggml's fp16/bf16 conversions for the plain types). I8 and
/// F8_E4M3 decode exactly, with no scale.
pub fn dequantize(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(dtype, src.len(), dst.len())?;
    match dtype {
        DType::F32 => float::f32_le_to_f32(src, dst),
        DType::F16 => float::f16_le_to_f32(src, dst),
        DType::BF16 => float::bf16_le_to_f32(src, dst),
        DType::I32 => return Err(QuantError::Unsupported { dtype, op: "dequantization" }),
        DType::Q4_0 => dequantize_row::<BlockQ4_0>(src, dst),
        DType::Q4_1 => dequantize_row::<BlockQ4_1>(src, dst),
        DType::Q5_0 => dequantize_row::<BlockQ5_0>(src, dst),
        DType::Q5_1 => dequantize_row::<BlockQ5_1>(src, dst),
        DType::Q8_0 => dequantize_row::<BlockQ8_0>(src, dst),
        DType::Q8_1 => dequantize_row::<BlockQ8_1>(src, dst),
        DType::Q2_K => dequantize_row::<BlockQ2K>(src, dst),
        DType::Q3_K => dequantize_row::<BlockQ3K>(src, dst),
        DType::Q4_K => dequantize_row::<BlockQ4K>(src, dst),
        DType::Q5_K => dequantize_row::<BlockQ5K>(src, dst),
        DType::Q6_K => dequantize_row::<BlockQ6K>(src, dst),
        DType::Q8_K => dequantize_row::<BlockQ8K>(src, dst),
        DType::MXFP4 => dequantize_row::<BlockMxfp4>(src, dst),
        DType::NVFP4 => dequantize_row::<BlockNvfp4>(src, dst),
        DType::I8 => int8::dequantize_row(src, dst),
        DType::F8_E4M3 => fp8::dequantize_row(src, dst),
    }
    Ok(())
}

/// Dequantizes exactly one block (one element for plain types): the per-block entry point for
/// kernels that walk a row themselves. `block` must be `dtype.block_bytes()` long and `out`
/// `dtype.block_len()` long.
pub fn dequantize_block(dtype: DType, block: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    if block.len() != dtype.block_bytes() {
        return Err(QuantError::PartialBlock { dtype, bytes: block.len(), block_bytes: dtype.block_bytes() });
    }
    dequantize(dtype, block, out)
}

/// Converts `src` to `dtype` in `dst`, bit-exact with ggml's `quantize_row_*_ref` (the
/// reference quantizers ggml uses when no importance matrix is given). I8 rounds half away
/// from zero and F8_E4M3 to nearest even, both saturating ([`int8::i8_from_f32`],
/// [`fp8::e4m3_from_f32`]); neither applies a scale.
pub fn quantize(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(dtype, dst.len(), src.len())?;
    match dtype {
        DType::F32 => float::f32_to_f32_le(src, dst),
        DType::F16 => float::f32_to_f16_le(src, dst),
        DType::BF16 => float::f32_to_bf16_le(src, dst),
        DType::I32 => return Err(QuantError::Unsupported { dtype, op: "quantization" }),
        DType::Q4_0 => quantize_row::<BlockQ4_0>(src, dst),
        DType::Q4_1 => quantize_row::<BlockQ4_1>(src, dst),
        DType::Q5_0 => quantize_row::<BlockQ5_0>(src, dst),
        DType::Q5_1 => quantize_row::<BlockQ5_1>(src, dst),
        DType::Q8_0 => quantize_row::<BlockQ8_0>(src, dst),
        DType::Q8_1 => quantize_row::<BlockQ8_1>(src, dst),
        DType::Q2_K => quantize_row::<BlockQ2K>(src, dst),
        DType::Q3_K => quantize_row::<BlockQ3K>(src, dst),
        DType::Q4_K => quantize_row::<BlockQ4K>(src, dst),
        DType::Q5_K => quantize_row::<BlockQ5K>(src, dst),
        DType::Q6_K => quantize_row::<BlockQ6K>(src, dst),
        DType::Q8_K => quantize_row::<BlockQ8K>(src, dst),
        DType::MXFP4 => quantize_row::<BlockMxfp4>(src, dst),
        DType::NVFP4 => quantize_row::<BlockNvfp4>(src, dst),
        DType::I8 => int8::quantize_row(src, dst),
        DType::F8_E4M3 => fp8::quantize_row(src, dst),
    }
    Ok(())
}

/// Convenience: quantizes `src` into a new byte vector.
pub fn quantize_to_vec(dtype: DType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    if !src.len().is_multiple_of(dtype.block_len()) {
        return Err(QuantError::PartialValues { dtype, values: src.len(), block_len: dtype.block_len() });
    }
    let mut out = vec![0u8; src.len() / dtype.block_len() * dtype.block_bytes()];
    quantize(dtype, src, &mut out)?;
    Ok(out)
}

/// Convenience: dequantizes `src` into a new f32 vector.
pub fn dequantize_to_vec(dtype: DType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    if !src.len().is_multiple_of(dtype.block_bytes()) {
        return Err(QuantError::PartialBlock { dtype, bytes: src.len(), block_bytes: dtype.block_bytes() });
    }
    let mut out = vec![0f32; src.len() / dtype.block_bytes() * dtype.block_len()];
    dequantize(dtype, src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_core() {
        use std::mem::size_of;
        assert_eq!(size_of::<BlockQ4_0>(), DType::Q4_0.block_bytes());
        assert_eq!(size_of::<BlockQ4_1>(), DType::Q4_1.block_bytes());
        assert_eq!(size_of::<BlockQ5_0>(), DType::Q5_0.block_bytes());
        assert_eq!(size_of::<BlockQ5_1>(), DType::Q5_1.block_bytes());
        assert_eq!(size_of::<BlockQ8_0>(), DType::Q8_0.block_bytes());
        assert_eq!(size_of::<BlockQ8_1>(), DType::Q8_1.block_bytes());
        assert_eq!(size_of::<BlockQ2K>(), DType::Q2_K.block_bytes());
        assert_eq!(size_of::<BlockQ3K>(), DType::Q3_K.block_bytes());
        assert_eq!(size_of::<BlockQ4K>(), DType::Q4_K.block_bytes());
        assert_eq!(size_of::<BlockQ5K>(), DType::Q5_K.block_bytes());
        assert_eq!(size_of::<BlockQ6K>(), DType::Q6_K.block_bytes());
        assert_eq!(size_of::<BlockQ8K>(), DType::Q8_K.block_bytes());
        assert_eq!(size_of::<BlockMxfp4>(), DType::MXFP4.block_bytes());
        assert_eq!(size_of::<BlockNvfp4>(), DType::NVFP4.block_bytes());
    }

    #[test]
    fn lengths_are_checked() {
        let mut out = [0f32; 32];
        assert!(matches!(dequantize(DType::Q4_0, &[0; 17], &mut out), Err(QuantError::PartialBlock { .. })));
        assert!(matches!(dequantize(DType::Q4_0, &[0; 36], &mut out), Err(QuantError::LengthMismatch { .. })));
        assert!(matches!(dequantize(DType::Q4_0, &[0; 18], &mut out[..31]), Err(QuantError::PartialValues { .. })));
        assert!(dequantize(DType::Q4_0, &[0; 18], &mut out).is_ok());
        assert!(matches!(dequantize(DType::I32, &[0; 4], &mut out[..1]), Err(QuantError::Unsupported { .. })));
        assert!(matches!(dequantize_block(DType::Q4_0, &[0; 36], &mut out), Err(QuantError::PartialBlock { .. })));
        assert!(matches!(quantize(DType::Q8_0, &out, &mut [0u8; 33]), Err(QuantError::PartialBlock { .. })));
    }

    #[test]
    fn every_type_but_i32_converts_both_ways() {
        for dtype in DType::ALL.into_iter().filter(|&d| d != DType::I32) {
            let src: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let q = quantize_to_vec(dtype, &src).unwrap();
            let back = dequantize_to_vec(dtype, &q).unwrap();
            assert_eq!(back.len(), src.len(), "{dtype}");
            assert!(back.iter().all(|v| v.is_finite()), "{dtype}");
        }
    }
}
