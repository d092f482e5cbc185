//! The block trait every quantized format implements, and the row loops shared by all of them.

use std::mem::{align_of, size_of};

use bytemuck::Pod;
use tessera_core::DType;

use crate::QuantError;

/// A ggml quantized block: `Self::LEN` values stored in `size_of::<Self>()` bytes.
pub trait QuantBlock: Pod {
    const DTYPE: DType;
    /// Values per block.
    const LEN: usize = Self::DTYPE.block_len();

    /// Writes the block's values to `out[..Self::LEN]`, bit-exact with ggml.
    ///
    /// # Panics
    /// If `out` holds fewer than `Self::LEN` values.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block type with a reference quantizer.
pub trait QuantizeBlock: QuantBlock {
    /// Quantizes `src[..Self::LEN]` as ggml's `quantize_row_*_ref` does.
    ///
    /// # Panics
    /// If `src` holds fewer than `Self::LEN` values.
    fn quantize(src: &[f32]) -> Self;
}

/// Borrows `bytes` as typed blocks without copying; fails when the length is not a whole number
/// of blocks or the address is not aligned for `B` (ggml blocks with f16 fields need 2 bytes).
pub fn blocks<B: QuantBlock>(bytes: &[u8]) -> Result<&[B], QuantError> {
    let block_bytes = size_of::<B>();
    if !bytes.len().is_multiple_of(block_bytes) {
        return Err(QuantError::PartialBlock { dtype: B::DTYPE, bytes: bytes.len(), block_bytes });
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| QuantError::Misaligned { dtype: B::DTYPE, align: align_of::<B>() })
}

/// Dequantizes whole blocks; the caller has checked that the lengths agree.
pub(crate) fn dequantize_row<B: QuantBlock>(src: &[u8], dst: &mut [f32]) {
    for (bytes, out) in src.chunks_exact(size_of::<B>()).zip(dst.chunks_exact_mut(B::LEN)) {
        // An unaligned copy: tensor bytes may sit at any address, and a block is small.
        let block: B = bytemuck::pod_read_unaligned(bytes);
        block.dequantize(out);
    }
}

/// Quantizes whole blocks; the caller has checked that the lengths agree.
pub(crate) fn quantize_row<B: QuantizeBlock>(src: &[f32], dst: &mut [u8]) {
    for (values, out) in src.chunks_exact(B::LEN).zip(dst.chunks_exact_mut(size_of::<B>())) {
        out.copy_from_slice(bytemuck::bytes_of(&B::quantize(values)));
    }
}

/// ggml's `GGML_FP16_TO_FP32`: exact widening of an IEEE half stored as bits.
#[inline]
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// ggml's `GGML_FP32_TO_FP16`: round to nearest even.
#[inline]
pub(crate) fn f32_to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// The value of largest magnitude (the first on ties) and that magnitude, found as ggml's
/// quantizers find them.
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// ggml's `d ? 1.0f/d : 0.0f`.
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Smallest and largest value, as ggml's min/max quantizers scan for them.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the round-trip tests beside each format.
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Deterministic pseudo-random values: mostly Gaussian-ish, some blocks scaled far up or down.
    pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let scale = [1.0f32, 0.01, 100.0, 1.0][(i / 256) % 4];
                let g: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
                g * scale
            })
            .collect()
    }

    /// Quantizes and dequantizes `values`, returning the worst error per block relative to the
    /// block's largest magnitude.
    pub fn worst_relative_error<B: QuantizeBlock>(values: &[f32]) -> f32 {
        let mut worst = 0f32;
        let mut out = vec![0f32; B::LEN];
        for chunk in values.chunks_exact(B::LEN) {
            B::quantize(chunk).dequantize(&mut out);
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                assert!(out.iter().all(|&v| v == 0.0));
                continue;
            }
            let err = chunk.iter().zip(&out).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(err / amax);
        }
        worst
    }

    /// Checks that quantizing a block of zeros gives zeros and that the error on random data is
    /// within `bound` (relative to each block's largest magnitude).
    pub fn check_round_trip<B: QuantizeBlock>(bound: f32) {
        let zeros = vec![0f32; B::LEN];
        let mut out = vec![1f32; B::LEN];
        B::quantize(&zeros).dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0), "{}: zeros do not survive", B::DTYPE);
        let values = random_values(B::LEN * 64, B::DTYPE.ggml_id().unwrap_or(0) as u64);
        let worst = worst_relative_error::<B>(&values);
        assert!(worst <= bound, "{}: worst relative error {worst} > {bound}", B::DTYPE);
    }
}
