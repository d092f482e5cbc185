//! I8 weights (INT8 W8A8) against activations quantized per row to int8, as `Op::MatMul`
//! defines them: `y = d · Σ q·w`, the sum exact in integers.
//!
//! An activation row of `k` values is stored as `[d: f32][q: k x i8]` (see
//! [`super::activation_bytes`]); the weight row is `k` bytes, with no scale.

use super::f32_at;

/// Bytes before the int8 values of an activation row: its f32 scale.
pub(crate) const ROW_HEADER: usize = 4;

/// Quantizes one activation row (`out` holds `ROW_HEADER + x.len()` bytes) with
/// `tessera_quant::int8::quantize_activation_row`, the contract's definition.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u8]) {
    let Some((head, q)) = out.split_at_mut_checked(ROW_HEADER) else { return };
    let d = tessera_quant::int8::quantize_activation_row(x, bytemuck::cast_slice_mut(q));
    head.copy_from_slice(&d.to_le_bytes());
}

/// The activation row's scale and its int8 values (empty for a row too short to hold a scale).
#[inline(always)]
pub(crate) fn split_row(x: &[u8]) -> (f32, &[u8]) {
    if x.len() < ROW_HEADER {
        return (0.0, &[]);
    }
    (f32_at(x, 0), &x[ROW_HEADER..])
}

/// The exact integer sum, converted to f32 once and scaled, as every I8 kernel finishes.
#[inline(always)]
pub(crate) fn finish(sum: i64, d: f32) -> f32 {
    sum as f32 * d
}

pub(crate) fn dot_i8(w: &[u8], x: &[u8]) -> f32 {
    let (d, q) = split_row(x);
    // i32 partial sums of up to 2^16 products (each below 2^14.1) cannot overflow.
    let sum: i64 = w
        .chunks(1 << 16)
        .zip(q.chunks(1 << 16))
        .map(|(w, q)| w.iter().zip(q).map(|(&a, &b)| a as i8 as i32 * b as i8 as i32).sum::<i32>() as i64)
        .sum();
    finish(sum, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_is_the_scaled_integer_sum() {
        let x = [1.0f32, -0.5, 0.25];
        let mut row = vec![0u8; ROW_HEADER + 3];
        quantize_row(&x, &mut row);
        let (d, q) = split_row(&row);
        assert_eq!(d, 1.0 / 127.0);
        // -0.5 * 127 = -63.5 rounds away from zero; 0.25 * 127 = 31.75.
        assert_eq!(q, [127, (-64i8) as u8, 32]);
        let w = [2u8, 0xFF, 0x80];
        assert_eq!(dot_i8(&w, &row), (254 + 64 - 4096) as f32 * d);
        assert_eq!(dot_i8(&w, &[0, 0]), 0.0);
    }
}
