//! Plain signed 8-bit integers: the I8 weight type of INT8 W8A8 checkpoints (the weight's scale
//! lives beside it), and the dynamic per-row int8 quantization of activations that
//! `tessera_backend::Op::MatMul` defines for I8 weights, written once here so the reference and
//! every backend agree on it bit for bit.

/// f32 to I8: round half away from zero, saturate to `[-128, 127]`; NaN gives 0.
#[inline]
pub fn i8_from_f32(v: f32) -> i8 {
    // `as` saturates and maps NaN to 0.
    v.round() as i8
}

/// Quantizes one activation row for a MatMul with I8 weights and returns its scale `d`:
/// `d = max|x| / 127` and `q[i] = round_half_away(x[i] * (127 / max|x|))`, in f32, clamped to
/// `[-127, 127]`; an all-zero row gives zeros and `d = 0`. `q` must be as long as `x`.
pub fn quantize_activation_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (o, v) in q.iter_mut().zip(x) {
        *o = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    amax / 127.0
}

pub(crate) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.iter().zip(dst) {
        *out = *b as i8 as f32;
    }
}

pub(crate) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (v, out) in src.iter().zip(dst) {
        *out = i8_from_f32(*v) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_half_away_and_saturate() {
        let cases = [(0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (0.49999997, 0), (126.6, 127)];
        for (v, want) in cases {
            assert_eq!(i8_from_f32(v), want, "{v}");
        }
        assert_eq!(i8_from_f32(300.0), 127);
        assert_eq!(i8_from_f32(-300.0), -128);
        assert_eq!(i8_from_f32(f32::NEG_INFINITY), -128);
        assert_eq!(i8_from_f32(f32::NAN), 0);
        let mut back = [0f32; 3];
        dequantize_row(&[0x80, 0x7F, 0xFF], &mut back);
        assert_eq!(back, [-128.0, 127.0, -1.0]);
    }

    #[test]
    fn activation_rows_use_their_own_scale() {
        let x = [0.0f32, 2.0, -4.0, 1.0, -2.0];
        let mut q = [0i8; 5];
        let d = quantize_activation_row(&x, &mut q);
        assert_eq!(d, 4.0 / 127.0);
        // ±2 * 127/4 = ±63.5: halves round away from zero.
        assert_eq!(q, [0, 64, -127, 32, -64]);
        let mut z = [5i8; 2];
        assert_eq!(quantize_activation_row(&[0.0, -0.0], &mut z), 0.0);
        assert_eq!(z, [0, 0]);
    }
}
