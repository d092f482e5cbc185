//! FP4 E2M1, the element type of MXFP4 and NVFP4: a sign bit (bit 3), two exponent bits and one
//! mantissa bit, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4 and 6. Blocks store 4-bit codes and a scale.

/// The value of every 4-bit code (code 8 is -0).
pub const E2M1_VALUES: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// The values doubled so they are integers (ggml's `kvalues_fp4`); ggml halves block scales to
/// match, so kernels can take integer dot products.
pub const E2M1_DOUBLED: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The code nearest `x` (a value already divided by its scale), ties to the code with an even
/// mantissa bit as round-to-nearest-even gives (and compressed-tensors' `cast_to_fp4`);
/// magnitudes above 6 saturate to ±6. Whatever rounds to zero, NaN included, gives code 0.
pub fn e2m1_nearest(x: f32) -> u8 {
    let a = x.abs();
    if a.is_nan() || a <= 0.25 {
        return 0;
    }
    let magnitude = match a {
        a if a < 0.75 => 1,
        a if a <= 1.25 => 2,
        a if a < 1.75 => 3,
        a if a <= 2.5 => 4,
        a if a < 3.5 => 5,
        a if a <= 5.0 => 6,
        _ => 7,
    };
    magnitude | if x < 0.0 { 8 } else { 0 }
}

/// ggml's `best_index_mxfp4`: the code whose doubled value times `d` is nearest `x`, the first
/// on ties (its reference quantizers for MXFP4 and NVFP4 choose codes this way).
pub(crate) fn ggml_best_index(x: f32, d: f32) -> u8 {
    let mut best = 0;
    let mut best_err = (E2M1_DOUBLED[0] as f32 * d - x).abs();
    for (i, &k) in E2M1_DOUBLED.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i;
            best_err = err;
        }
    }
    best as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_agree() {
        for (v, d) in E2M1_VALUES.iter().zip(E2M1_DOUBLED) {
            assert_eq!(v * 2.0, d as f32);
        }
    }

    #[test]
    fn nearest_rounds_half_to_even_and_saturates() {
        for (code, v) in E2M1_VALUES.iter().enumerate().filter(|&(c, _)| c != 8) {
            assert_eq!(e2m1_nearest(*v) as usize, code, "{v}");
        }
        let ties = [(0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6)];
        for (x, code) in ties {
            assert_eq!(e2m1_nearest(x), code, "{x}");
            assert_eq!(e2m1_nearest(-x), if code == 0 { 0 } else { code | 8 }, "-{x}");
        }
        assert_eq!(e2m1_nearest(0.26), 1);
        assert_eq!(e2m1_nearest(-5.01), 15);
        assert_eq!(e2m1_nearest(1e30), 7);
        assert_eq!(e2m1_nearest(f32::NAN), 0);
        assert_eq!(e2m1_nearest(-0.0), 0);
        assert_eq!(e2m1_nearest(-0.1), 0);
    }

    #[test]
    fn ggml_index_takes_the_first_of_equal_errors() {
        // With a zero scale every code is equally far; ggml keeps code 0.
        assert_eq!(ggml_best_index(1.0, 0.0), 0);
        // Halfway between doubled values 4 and 6 (times 0.5: 2 and 3): the first, 4.
        assert_eq!(ggml_best_index(2.5, 0.5), 4);
        assert_eq!(ggml_best_index(-6.0, 0.5), 15);
    }
}
