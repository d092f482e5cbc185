//! OCP FP8 E4M3 (`float8_e4m3fn`): a sign, four exponent bits (bias 7) and three mantissa bits,
//! no infinities; `S.1111.111` is NaN and the largest finite magnitude is 448. The F8_E4M3
//! weight type stores one such byte per value, with no scale inside the tensor.

/// The largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// The value of every code, indexed by the byte: exact, NaN for 0x7F and 0xFF.
pub const E4M3_VALUES: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = decode(b as u8);
        b += 1;
    }
    t
};

const fn decode(b: u8) -> f32 {
    let sign = ((b & 0x80) as u32) << 24;
    let (e, m) = (((b >> 3) & 0x0F) as u32, (b & 0x07) as u32);
    if e == 15 && m == 7 {
        // The NaN torch gives for these codes: the mantissa bits moved into place.
        return f32::from_bits(sign | 0x7FF0_0000);
    }
    let magnitude = if e == 0 {
        // Subnormal: m * 2^-9, a normal f32.
        m as f32 * (1.0 / 512.0)
    } else {
        f32::from_bits(((e + 120) << 23) | (m << 20))
    };
    f32::from_bits(sign | magnitude.to_bits())
}

/// The exact value of an E4M3 byte (NaN for 0x7F and 0xFF).
#[inline]
pub fn e4m3_to_f32(b: u8) -> f32 {
    E4M3_VALUES[b as usize]
}

/// The E4M3 byte nearest `v`, ties to even; magnitudes beyond 448 (infinities included)
/// saturate to ±448, as quantizers that clamp first get, and any NaN gives 0x7F. Values that
/// round to zero keep their sign (0x80 for negative ones), as torch's conversion does.
pub fn e4m3_from_f32(v: f32) -> u8 {
    if v.is_nan() {
        return 0x7F;
    }
    let sign = ((v.to_bits() >> 24) & 0x80) as u8;
    let a = v.abs();
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    if a < 1.0 / 64.0 {
        // Below the smallest normal (2^-6) the step is 2^-9; scaling by 512 is exact and a
        // result of 8 is the code of 2^-6 itself.
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let bits = a.to_bits();
    let exponent = (bits >> 23) + 7 - 127;
    let mantissa = bits & 0x007F_FFFF;
    let mut code = (exponent << 3) | (mantissa >> 20);
    let (rest, half) = (mantissa & 0x000F_FFFF, 0x0008_0000);
    if rest > half || (rest == half && code & 1 == 1) {
        // A carry out of the mantissa moves to the next exponent, as it should; below 448 it
        // never reaches the NaN code.
        code += 1;
    }
    sign | code as u8
}

pub(crate) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.iter().zip(dst) {
        *out = e4m3_to_f32(*b);
    }
}

pub(crate) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst) {
        *out = e4m3_from_f32(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_to_the_documented_values() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
    }

    #[test]
    fn every_finite_code_round_trips() {
        for b in 0..=255u8 {
            if b & 0x7F != 0x7F {
                assert_eq!(e4m3_from_f32(e4m3_to_f32(b)), b, "code {b:#04x}");
            }
        }
    }

    #[test]
    fn encoding_rounds_to_nearest_even_and_saturates() {
        // Halfway between 1.0 (0x38) and 1.125 (0x39): to the even code.
        assert_eq!(e4m3_from_f32(1.0625), 0x38);
        // Halfway between 1.125 and 1.25 (0x3A): up to the even code.
        assert_eq!(e4m3_from_f32(1.1875), 0x3A);
        // 2^-10 is halfway between 0 and the smallest subnormal.
        assert_eq!(e4m3_from_f32(2f32.powi(-10)), 0x00);
        assert_eq!(e4m3_from_f32(-1e-12), 0x80);
        // Just below 2^-6 rounds up into the normal range.
        assert_eq!(e4m3_from_f32(0.0156), 0x08);
        for big in [449.0, 464.0, 1e9, f32::INFINITY] {
            assert_eq!(e4m3_from_f32(big), 0x7E);
            assert_eq!(e4m3_from_f32(-big), 0xFE);
        }
        assert_eq!(e4m3_from_f32(f32::NAN), 0x7F);
        assert_eq!(e4m3_from_f32(-f32::NAN), 0x7F);
    }
}
