//! Plain float types (F32, F16, BF16), little-endian as stored in GGUF and safetensors.

use crate::block::{f16_to_f32, f32_to_f16};

pub(crate) fn f32_le_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(4).zip(dst) {
        *out = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(crate) fn f16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(2).zip(dst) {
        *out = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

pub(crate) fn bf16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(2).zip(dst) {
        *out = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}

pub(crate) fn f32_to_f32_le(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
        out.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn f32_to_f16_le(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaNs are made quiet, everything else rounds to nearest
/// even (so large finite values may round to infinity, as in ggml).
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

pub(crate) fn f32_to_bf16_le(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Halfway between 0x3f80 and 0x3f81: ties to even (down).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // Halfway between 0x3f81 and 0x3f82: ties to even (up).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        let mut back = [0f32];
        bf16_le_to_f32(&f32_to_bf16(-2.5).to_le_bytes(), &mut back);
        assert_eq!(back[0], -2.5);
    }

    #[test]
    fn f16_round_trips_exactly_representable_values() {
        let vals = [0.0f32, -0.0, 1.0, -65504.0, 6.1035156e-5, 5.9604645e-8];
        let mut bytes = [0u8; 12];
        f32_to_f16_le(&vals, &mut bytes);
        let mut back = [0f32; 6];
        f16_le_to_f32(&bytes, &mut back);
        for (a, b) in vals.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
