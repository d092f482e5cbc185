//! FP4 (E2M1) weights in compressed-tensors' two layouts, computed as compressed-tensors and
//! llm-compressor compute them:
//!
//! - NVFP4 (`nvfp4-pack-quantized`, strategy `tensor_group`): a per-tensor f32 global scale
//!   `448 * 6 / max|W|` (`generate_gparam`), and per 16 values an FP8 E4M3 scale
//!   `e4m3(global * max|group| / 6)`, zero replaced by 0.125 (E4M3's epsilon in
//!   compressed-tensors); a value's code is the E2M1 nearest `w / (scale / global)`.
//! - MXFP4 (`mxfp4-pack-quantized`, strategy `group` of 32): an E8M0 scale per 32 values from
//!   the group maximum rounded to a power of two (up when its mantissa is at least 0.75,
//!   `round_to_power_2`), divided by 4 (E2M1's largest power of two), stored as the biased
//!   exponent byte; a value's code is the E2M1 nearest `w / scale`.
//!
//! Codes are packed two to a byte, the first in the low nibble (`pack_fp4_to_uint8`); a
//! negative value that rounds to zero keeps its sign bit (code 8), as `cast_to_fp4` gives.

use tessera_quant::fp4::e2m1_nearest;
use tessera_quant::fp8::{e4m3_from_f32, e4m3_to_f32, E4M3_MAX};

use crate::integer::amax;

/// Values per NVFP4 scale.
pub const NVFP4_GROUP: usize = 16;
/// Values per MXFP4 scale.
pub const MXFP4_GROUP: usize = 32;
/// E2M1's largest magnitude.
const E2M1_MAX: f32 = 6.0;
/// What compressed-tensors puts in place of a zero FP8 scale (`_get_dtype_eps`).
const E4M3_EPS: f32 = 0.125;

/// The E2M1 code of `x` (a value already divided by its scale), as compressed-tensors
/// rounds and packs it.
#[inline]
fn code(x: f32) -> u8 {
    let c = e2m1_nearest(x.clamp(-E2M1_MAX, E2M1_MAX));
    if x < 0.0 {
        c | 8
    } else {
        c
    }
}

/// Packs codes two to a byte, first in the low nibble.
fn pack(codes: &[u8]) -> Vec<u8> {
    codes.chunks_exact(2).map(|p| (p[0] & 0xF) | ((p[1] & 0xF) << 4)).collect()
}

/// The codes of packed bytes, in order.
#[cfg(test)]
pub fn unpack(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|b| [b & 0xF, b >> 4]).collect()
}

/// An FP4 matrix: packed codes (`[rows, cols / 2]`) and one scale byte per group.
#[derive(Clone, Debug, PartialEq)]
pub struct Fp4Quantized {
    pub group: usize,
    pub packed: Vec<u8>,
    /// E4M3 bytes (NVFP4) or E8M0 biased exponents (MXFP4), row-major `[rows, cols / group]`.
    pub scales: Vec<u8>,
    /// NVFP4's per-tensor global scale; `None` for MXFP4.
    pub global_scale: Option<f32>,
}

#[cfg(test)]
impl Fp4Quantized {
    /// The effective (divided) scale of scale byte `b`.
    fn scale_value(&self, b: u8) -> f32 {
        match self.global_scale {
            Some(g) => e4m3_to_f32(b) / g,
            None => e8m0_to_f32(b),
        }
    }

    pub fn dequantize(&self) -> Vec<f32> {
        let codes = unpack(&self.packed);
        codes
            .chunks_exact(self.group)
            .zip(&self.scales)
            .flat_map(|(g, &s)| {
                let s = self.scale_value(s);
                g.iter().map(move |&c| tessera_quant::fp4::E2M1_VALUES[c as usize] * s)
            })
            .collect()
    }
}

/// `generate_gparam`: the global scale that maps the tensor's largest magnitude to
/// 448 * 6; 1 where that is not finite.
pub fn nvfp4_global_scale(w: &[f32]) -> f32 {
    let g = E4M3_MAX * E2M1_MAX / amax(w).max(f32::MIN_POSITIVE);
    if g.is_finite() {
        g
    } else {
        1.0
    }
}

/// NVFP4 of a row-major matrix whose rows are a multiple of 16 values.
pub fn quantize_nvfp4(w: &[f32]) -> Fp4Quantized {
    debug_assert!(w.len().is_multiple_of(NVFP4_GROUP));
    let global = nvfp4_global_scale(w);
    let mut scales = Vec::with_capacity(w.len() / NVFP4_GROUP);
    let mut codes = Vec::with_capacity(w.len());
    for g in w.chunks_exact(NVFP4_GROUP) {
        let mut s = e4m3_from_f32((global * (amax(g) / E2M1_MAX)).clamp(-E4M3_MAX, E4M3_MAX));
        if e4m3_to_f32(s) == 0.0 {
            s = e4m3_from_f32(E4M3_EPS);
        }
        let eff = e4m3_to_f32(s) / global;
        codes.extend(g.iter().map(|&v| code(v / eff)));
        scales.push(s);
    }
    Fp4Quantized { group: NVFP4_GROUP, packed: pack(&codes), scales, global_scale: Some(global) }
}

/// `round_to_power_2` for f32 with E2M1's one mantissa bit: adds half of the mantissa's
/// second bit and keeps sign and exponent, so `1.75 * 2^e` and above round up to `2^(e+1)`.
fn round_to_power_2(x: f32) -> f32 {
    f32::from_bits(x.to_bits().wrapping_add(1 << 21) & 0xFF80_0000)
}

/// The E8M0 byte of a group's largest magnitude: `127 + floor(log2(power of two)) - 2`,
/// clamped to 0..=255 (a zero group gets 0).
pub fn mxfp4_scale_byte(amax: f32) -> u8 {
    let p = round_to_power_2(amax);
    if p == 0.0 {
        return 0;
    }
    let biased = if p.is_subnormal() {
        // floor(log2) of a subnormal power of two, biased: at most 0.
        (p.log2().floor() as i32) + 127
    } else {
        ((p.to_bits() >> 23) & 0xFF) as i32
    };
    (biased - 2).clamp(0, 255) as u8
}

/// `2^(b - 127)`, the scale an E8M0 byte stands for (a subnormal f32 for 0).
pub fn e8m0_to_f32(b: u8) -> f32 {
    if b == 0 {
        f32::from_bits(0x0040_0000)
    } else if b == 255 {
        f32::NAN
    } else {
        f32::from_bits((b as u32) << 23)
    }
}

/// MXFP4 of a row-major matrix whose rows are a multiple of 32 values.
pub fn quantize_mxfp4(w: &[f32]) -> Fp4Quantized {
    debug_assert!(w.len().is_multiple_of(MXFP4_GROUP));
    let mut scales = Vec::with_capacity(w.len() / MXFP4_GROUP);
    let mut codes = Vec::with_capacity(w.len());
    for g in w.chunks_exact(MXFP4_GROUP) {
        let b = mxfp4_scale_byte(amax(g));
        let s = e8m0_to_f32(b);
        codes.extend(g.iter().map(|&v| code(v / s)));
        scales.push(b);
    }
    Fp4Quantized { group: MXFP4_GROUP, packed: pack(&codes), scales, global_scale: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_the_sign_of_small_negatives_and_saturate() {
        assert_eq!(code(-0.1), 8);
        assert_eq!(code(-0.0), 0);
        assert_eq!(code(0.1), 0);
        assert_eq!(code(7.0), 7);
        assert_eq!(code(-100.0), 15);
        assert_eq!(code(2.5), 4);
        assert_eq!(pack(&[1, 15, 0, 7]), [0xF1, 0x70]);
        assert_eq!(unpack(&[0xF1, 0x70]), [1, 15, 0, 7]);
    }

    #[test]
    fn nvfp4_maps_the_tensor_maximum_to_448_times_6() {
        // The group holding the tensor maximum gets scale 448, which divided by the global
        // scale is max/6: the maximum lands on code 7 (6.0).
        let mut w = vec![0.0f32; 32];
        w[0] = 3.0;
        w[1] = -1.5;
        w[16] = 0.01;
        let q = quantize_nvfp4(&w);
        assert_eq!(q.global_scale, Some(448.0 * 6.0 / 3.0));
        assert_eq!(q.scales[0], 0x7E);
        let d = q.dequantize();
        assert_eq!(d[0], 3.0);
        assert_eq!(d[1], -1.5);
        // The second group: scale e4m3(896 * 0.01 / 6) = e4m3(1.4933) = 1.5.
        assert_eq!(e4m3_to_f32(q.scales[1]), 1.5);
        assert!((d[16] - 0.01).abs() < 0.002, "{}", d[16]);
    }

    #[test]
    fn nvfp4_zero_groups_get_the_epsilon_scale() {
        let q = quantize_nvfp4(&[0.0; 16]);
        // 2688 / f32::MIN_POSITIVE overflows: the global scale falls back to 1.
        assert_eq!(q.global_scale, Some(1.0));
        assert_eq!(e4m3_to_f32(q.scales[0]), 0.125);
        assert!(q.dequantize().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn mxfp4_scales_are_powers_of_two_from_the_rounded_maximum() {
        // 6.0 = 1.5 * 4: stays at 4, scale 4/4 = 1, 6 is code 7.
        assert_eq!(mxfp4_scale_byte(6.0), 127);
        // 7.0 = 1.75 * 4 rounds up to 8: scale 2.
        assert_eq!(mxfp4_scale_byte(7.0), 128);
        assert_eq!(mxfp4_scale_byte(1.0), 125);
        assert_eq!(mxfp4_scale_byte(0.0), 0);
        assert_eq!(mxfp4_scale_byte(1e-40), 0);
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        let mut w = vec![0.0f32; 32];
        w[0] = 6.0;
        w[1] = -0.75;
        w[2] = 5.5;
        let q = quantize_mxfp4(&w);
        assert_eq!(q.scales, [127]);
        let d = q.dequantize();
        assert_eq!(&d[..3], &[6.0, -1.0, 6.0]);
    }
}
