//! Conversion of f32 activation rows into the vec-dot types, bit for bit as llama.cpp's x86 build
//! does it: Q8_0 and Q8_1 scale by `127 / amax` and round half to even (AVX `_mm256_round_ps`),
//! Q8_K uses ggml's reference quantizer (`-127 / max`, round half to even), f16 and bf16 round to
//! nearest even. Greedy decoding compared against llama.cpp depends on these matching exactly.
//! I8 weights take the contract's per-row int8 activations instead (see [`super::int8`]).

use half::{bf16, f16};
use tessera_core::DType;

use super::kquants::{Q8_K_BSUMS, Q8_K_BYTES, Q8_K_QS, QK_K};
use super::legacy::{Q8_0_BYTES, Q8_1_BYTES, QK};

/// Rounds to the nearest integer, ties to even, for |v| < 2^22 (ggml's `nearest_int`).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// Writes `x` (a whole number of blocks of `vdt`) into `out` (exactly
/// `activation_bytes(vdt, x.len())`).
pub(crate) fn quantize_row(vdt: DType, x: &[f32], out: &mut [u8]) {
    match vdt {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32_const(*v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32_const(*v).to_le_bytes());
            }
        }
        DType::Q8_0 => {
            for (o, v) in out.chunks_exact_mut(Q8_0_BYTES).zip(x.chunks_exact(QK)) {
                quantize_q8(v, o, false);
            }
        }
        DType::Q8_1 => {
            for (o, v) in out.chunks_exact_mut(Q8_1_BYTES).zip(x.chunks_exact(QK)) {
                quantize_q8(v, o, true);
            }
        }
        DType::Q8_K => {
            for (o, v) in out.chunks_exact_mut(Q8_K_BYTES).zip(x.chunks_exact(QK_K)) {
                quantize_q8_k(v, o);
            }
        }
        DType::I8 => super::int8::quantize_row(x, out),
        // Not a vec-dot type: `vec_dot_type` never returns anything else.
        _ => out.fill(0),
    }
}

/// One Q8_0 block, or a Q8_1 block (with its `s = d * sum(qs)` field) when `with_sum`.
#[inline(always)]
fn quantize_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let qs_at = if with_sum { 4 } else { 2 };
    let mut sum = 0i32;
    for (o, v) in out[qs_at..qs_at + QK].iter_mut().zip(x) {
        let q = nearest_int(v * id).clamp(-128, 127);
        sum += q;
        *o = q as i8 as u8;
    }
    out[0..2].copy_from_slice(&f16::from_f32_const(d).to_le_bytes());
    if with_sum {
        out[2..4].copy_from_slice(&f16::from_f32_const(d * sum as f32).to_le_bytes());
    }
}

fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for (o, v) in out[Q8_K_QS..Q8_K_QS + QK_K].iter_mut().zip(x) {
        *o = nearest_int(iscale * v).min(127) as i8 as u8;
    }
    for g in 0..QK_K / 16 {
        let s: i32 = out[Q8_K_QS + 16 * g..Q8_K_QS + 16 * g + 16].iter().map(|&q| q as i8 as i32).sum();
        out[Q8_K_BSUMS + 2 * g..Q8_K_BSUMS + 2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
    }
    out[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (v, want) in [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (126.6, 127), (-3.2, -3)] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn q8_0_block_matches_hand_computation() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut out = [0u8; Q8_0_BYTES];
        quantize_row(DType::Q8_0, &x, &mut out);
        let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
        assert_eq!(d, f16::from_f32(16.0 / 127.0).to_f32());
        assert_eq!(out[2] as i8, -127);
        assert_eq!(out[2 + 16] as i8, 0);
        // 1 * 127/16 = 7.9375 -> 8
        assert_eq!(out[2 + 17] as i8, 8);
    }

    #[test]
    fn q8_k_keeps_bsums_consistent() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0).collect();
        let mut out = vec![0u8; Q8_K_BYTES];
        quantize_row(DType::Q8_K, &x, &mut out);
        let d = f32::from_le_bytes([out[0], out[1], out[2], out[3]]);
        for (i, v) in x.iter().enumerate() {
            let q = out[Q8_K_QS + i] as i8 as f32;
            assert!((q * d - v).abs() <= d.abs() * 0.5 + 1e-6, "value {i}");
        }
        let s0: i32 = (0..16).map(|i| out[Q8_K_QS + i] as i8 as i32).sum();
        assert_eq!(i16::from_le_bytes([out[Q8_K_BSUMS], out[Q8_K_BSUMS + 1]]) as i32, s0);
    }
}
