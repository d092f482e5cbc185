//! x86-64 kernels: AVX2 (+FMA, F16C) and AVX-512 (F/BW/VL/VNNI).
//!
//! The kernel bodies are written once (`kernels.rs`) and compiled twice, under each feature set;
//! the AVX-512 build differs only in its int8 pair sums (`vpdpbusd` instead of
//! `vpmaddubsw` + `vpmaddwd`) and in what the compiler may use for the rest. Helpers here are
//! `#[target_feature]` functions inlined into both.

#[macro_use]
mod float_kernels;
#[macro_use]
mod kernels;
mod attention;
mod packed;

use std::arch::x86_64::*;

use tessera_core::DType;

use super::float::VecFns;
use super::packed::{PackedRows, PackedWeight, ROWS};
use super::{Dot4Fn, Dot4x2Fn, DotFn, PackedTileFn};

pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

pub(super) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

mod avx2 {
    use super::*;
    block_kernels!("avx2,fma,f16c", mul_sum_us8_avx2);
    float_kernels!("avx2,fma,f16c");
}

mod avx512 {
    use super::*;
    block_kernels!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", mul_sum_us8_vnni);
    float_kernels!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_dot(w: DType) -> Option<DotFn> {
    avx2::dot(w)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_dot4(w: DType) -> Option<Dot4Fn> {
    avx2::dot4(w)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_dot4x2(w: DType) -> Option<Dot4x2Fn> {
    avx2::dot4x2(w)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_vec_fns() -> VecFns {
    avx2::vec_fns()
}

/// Q8_0 (`with_sum = false`) or Q8_1 blocks of `x` into `out`, bit-identical to
/// `quantize::quantize_row` (and to ggml's AVX2 `quantize_row_q8_0`/`_q8_1`).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_quantize_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    quantize_q8(x, out, with_sum)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    use super::legacy::{Q8_0_BYTES, Q8_1_BYTES, QK};
    let bytes = if with_sum { Q8_1_BYTES } else { Q8_0_BYTES };
    let qs_at = bytes - QK;
    let sign = _mm256_set1_ps(-0.0);
    for (v, o) in x.chunks_exact(QK).zip(out.chunks_exact_mut(bytes)) {
        let vs = [load_ps(v, 0), load_ps(v, 8), load_ps(v, 16), load_ps(v, 24)];
        let m01 = _mm256_max_ps(_mm256_andnot_ps(sign, vs[0]), _mm256_andnot_ps(sign, vs[1]));
        let m23 = _mm256_max_ps(_mm256_andnot_ps(sign, vs[2]), _mm256_andnot_ps(sign, vs[3]));
        let m = _mm256_max_ps(m01, m23);
        let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let i = [round_q8(vs[0], id), round_q8(vs[1], id), round_q8(vs[2], id), round_q8(vs[3], id)];
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        // Packing works per 128-bit lane; the permutation restores element order.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        let q = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let dst = &mut o[qs_at..qs_at + QK];
        // SAFETY: `dst` holds 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), q) };
        o[0..2].copy_from_slice(&half::f16::from_f32_const(d).to_le_bytes());
        if with_sum {
            let s = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)));
            o[2..4].copy_from_slice(&half::f16::from_f32_const(d * s as f32).to_le_bytes());
        }
    }
}

/// The per-row int8 activations of I8 weights (`[d: f32][q: i8 x k]` in `out`), bit-identical
/// to `int8::quantize_row` (the contract's definition).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`has_avx2`]).
pub(super) unsafe fn avx2_quantize_i8(x: &[f32], out: &mut [u8]) {
    quantize_i8(x, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_i8(x: &[f32], out: &mut [u8]) {
    use super::int8::ROW_HEADER;
    let Some((head, q)) = out.split_at_mut_checked(ROW_HEADER) else { return };
    let n = x.len().min(q.len());
    let (x, q) = (&x[..n], &mut q[..n]);
    // The largest magnitude: max is exact, so the order does not matter.
    let sign = _mm256_set1_ps(-0.0);
    let (xc, xt) = x.as_chunks::<8>();
    let mut m = _mm256_setzero_ps();
    for c in xc {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, load_ps(c, 0)));
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = xt.iter().fold(_mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))), |a, v| a.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let (xc, xt) = x.as_chunks::<32>();
    let (qc, qt) = q.as_chunks_mut::<32>();
    for (v, o) in xc.iter().zip(qc) {
        let i = [0, 8, 16, 24].map(|at| round_i8(load_ps(v, at), idv));
        // Packing works per 128-bit lane; the permutation restores element order.
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        let packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `o` holds 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), packed) };
    }
    for (v, o) in xt.iter().zip(qt) {
        *o = (v * id).round().clamp(-127.0, 127.0) as i8 as u8;
    }
    head.copy_from_slice(&(amax / 127.0).to_le_bytes());
}

/// `v * id` rounded half away from zero (as `f32::round`) and clamped to `[-127, 127]`, as i32.
#[target_feature(enable = "avx2")]
#[inline]
fn round_i8(v: __m256, id: __m256) -> __m256i {
    let p = _mm256_mul_ps(v, id);
    let sign = _mm256_set1_ps(-0.0);
    // `p - trunc(p)` is exact; a fraction of at least one half steps away from zero.
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), _mm256_set1_ps(0.5));
    let step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(p, sign), _mm256_set1_ps(1.0)));
    let r = _mm256_cvtps_epi32(_mm256_add_ps(t, step));
    _mm256_max_epi32(_mm256_min_epi32(r, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127))
}

/// `v * id` rounded half to even, as i32.
#[target_feature(enable = "avx2")]
#[inline]
fn round_q8(v: __m256, id: __m256) -> __m256i {
    _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(v, id)))
}

/// # Safety
/// The CPU must support the AVX-512 subset of [`has_avx512`].
pub(super) unsafe fn avx512_dot(w: DType) -> Option<DotFn> {
    avx512::dot(w)
}

/// # Safety
/// The CPU must support the AVX-512 subset of [`has_avx512`].
pub(super) unsafe fn avx512_dot4(w: DType) -> Option<Dot4Fn> {
    avx512::dot4(w)
}

/// # Safety
/// The CPU must support the AVX-512 subset of [`has_avx512`].
pub(super) unsafe fn avx512_dot4x2(w: DType) -> Option<Dot4x2Fn> {
    avx512::dot4x2(w)
}

/// # Safety
/// The CPU must support the AVX-512 subset of [`has_avx512`].
pub(super) unsafe fn avx512_vec_fns() -> VecFns {
    VecFns { lanes: Some(attention::lane_fns()), ..avx512::vec_fns() }
}

/// The packed-weight kernel (see `kernels::packed`).
///
/// # Safety
/// The CPU must support the AVX-512 subset of [`has_avx512`]; the returned function may only be
/// called while that holds (it is sound to call on such a CPU).
pub(super) unsafe fn avx512_packed_tile() -> PackedTileFn {
    fn entry(w: &PackedWeight, g: usize, x: &PackedRows, rows: &[usize], out: &mut [[f32; ROWS]]) {
        // SAFETY: only handed out by `avx512_packed_tile`, whose caller vouches for the CPU.
        unsafe { packed::tile(w, g, x, rows, out) }
    }
    entry
}

// ---- helpers shared by both builds ----

/// 32 bytes of `b` from `at` (bounds-checked).
#[target_feature(enable = "avx2")]
#[inline]
fn load32(b: &[u8], at: usize) -> __m256i {
    let s = &b[at..at + 32];
    // SAFETY: `s` holds 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// 16 bytes of `b` from `at` (bounds-checked).
#[target_feature(enable = "avx2")]
#[inline]
fn load16(b: &[u8], at: usize) -> __m128i {
    let s = &b[at..at + 16];
    // SAFETY: `s` holds 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// Eight f32 from `v` at `at` (bounds-checked).
#[target_feature(enable = "avx2")]
#[inline]
fn load_ps(v: &[f32], at: usize) -> __m256 {
    let s = &v[at..at + 8];
    // SAFETY: `s` holds 8 readable f32; the load is unaligned.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx2")]
#[inline]
fn store_ps(v: &mut [f32], at: usize, x: __m256) {
    let s = &mut v[at..at + 8];
    // SAFETY: `s` holds 8 writable f32; the store is unaligned.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), x) }
}

/// Eight f16 from the bytes of `b` at `at`, widened to f32.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn load_f16_ps(b: &[u8], at: usize) -> __m256 {
    _mm256_cvtph_ps(load16(b, at))
}

/// Eight bf16 from the bytes of `b` at `at`, widened to f32.
#[target_feature(enable = "avx2")]
#[inline]
fn load_bf16_ps(b: &[u8], at: usize) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load16(b, at))))
}

/// The f16 at `b[at..at + 2]` in all eight lanes, as f32. Broadcasting first keeps the
/// conversion free of a merge into a stale register (a false dependency that serializes loops).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x8(b: &[u8], at: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([b[at], b[at + 1]])))
}

/// The f16 at `b[at..at + 2]` as f32, converted in hardware.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16_hw(b: &[u8], at: usize) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([b[at], b[at + 1]]))))
}

/// [`f16x8`] in four lanes. Hot loops use these rather than [`f16_hw`]: when only one lane is
/// used, the compiler inserts the value into whatever register is free, often an accumulator,
/// which chains every block's conversion to the previous block's sum.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x4b(b: &[u8], at: usize) -> __m128 {
    _mm_cvtph_ps(_mm_set1_epi16(i16::from_le_bytes([b[at], b[at + 1]])))
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum_ps(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// 32 nibbles (16 bytes at `b[at..]`) as 32 bytes: low nibbles first, then high nibbles.
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles32(b: &[u8], at: usize) -> __m256i {
    let t = load16(b, at);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// 32 bits (4 bytes at `b[at..]`) spread to 32 bytes of 0x00 or 0xFF.
#[target_feature(enable = "avx2")]
#[inline]
fn bits32(b: &[u8], at: usize) -> __m256i {
    let x = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let shuf = _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Sums of four adjacent products of unsigned bytes `ax` and signed bytes `sy`, as eight i32.
#[target_feature(enable = "avx2")]
#[inline]
fn mul_sum_us8_avx2(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// [`mul_sum_us8_avx2`] in one VNNI instruction.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
fn mul_sum_us8_vnni(ax: __m256i, sy: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
}

/// The 16 i16 `bsums` of a Q8_K block and the eight 6-bit mins of a Q4_K/Q5_K block:
/// `sum(bsums[j] * mins[j / 2])`.
#[target_feature(enable = "avx2")]
#[inline]
fn kquant_min_sum(xb: &[u8], mins: &[u8; 8]) -> i32 {
    let q8sums = load32(xb, super::kquants::Q8_K_BSUMS);
    let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256::<1>(q8sums));
    let m = _mm_cvtepu8_epi16(_mm_set_epi64x(0, u64::from_le_bytes(*mins) as i64));
    let prod = _mm_madd_epi16(m, pairs);
    let s = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_against_scalar, check_four_rows, check_tile};
    use super::*;

    #[test]
    fn avx2_kernels_match_scalar() {
        if !has_avx2() {
            eprintln!("no AVX2 here: skipped");
            return;
        }
        for d in DType::ALL {
            // SAFETY: AVX2, FMA and F16C were detected above.
            if let Some(f) = unsafe { avx2_dot(d) } {
                check_against_scalar(d, f, "avx2");
                // SAFETY: as above.
                if let Some(f4) = unsafe { avx2_dot4(d) } {
                    check_four_rows(d, f, f4);
                }
                // SAFETY: as above.
                if let Some(t) = unsafe { avx2_dot4x2(d) } {
                    check_tile(d, f, t);
                }
            }
        }
        // SAFETY: as above.
        super::super::testing::check_vec_fns(unsafe { avx2_vec_fns() });
    }

    #[test]
    fn avx2_quantizer_is_bit_identical_to_scalar() {
        if !has_avx2() {
            return;
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for vdt in [DType::Q8_0, DType::Q8_1] {
            for case in 0..50 {
                let mut x: Vec<f32> = (0..96).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                match case {
                    // An all-zero block, exact halves (ties), a single spike.
                    0 => x[..32].fill(0.0),
                    1 => x.iter_mut().enumerate().for_each(|(i, v)| *v = (i as f32 - 48.0) * 0.5),
                    2 => x[40] = 1e4,
                    _ => {}
                }
                let n = vdt.bytes_for(x.len()).unwrap();
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                super::super::quantize::quantize_row(vdt, &x, &mut a);
                // SAFETY: AVX2, FMA and F16C were detected above.
                unsafe { avx2_quantize_q8(&x, &mut b, vdt == DType::Q8_1) };
                assert_eq!(a, b, "{vdt} case {case}");
            }
        }
    }

    #[test]
    fn avx2_int8_rows_are_bit_identical_to_scalar() {
        if !has_avx2() {
            return;
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for case in 0..40 {
            let len = [1usize, 7, 32, 33, 100, 576][case % 6];
            let mut x: Vec<f32> = (0..len).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            match case {
                // All zeros; exact halves (ties) after scaling by 127 / 63.5 = 2; one spike.
                0..=5 => x.fill(0.0),
                6..=11 => x.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 128) as f32 * 0.25 - 15.75),
                12..=17 => x[len / 2] = -1e4,
                _ => {}
            }
            if (6..=11).contains(&case) {
                x[0] = 63.5;
            }
            let n = super::super::activation_bytes(DType::I8, len).unwrap();
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            super::super::quantize::quantize_row(DType::I8, &x, &mut a);
            // SAFETY: AVX2, FMA and F16C were detected above.
            unsafe { avx2_quantize_i8(&x, &mut b) };
            assert_eq!(a, b, "case {case} ({len} values)");
        }
    }

    #[test]
    fn avx512_kernels_match_scalar() {
        if !has_avx512() {
            eprintln!("no AVX-512 VNNI here: skipped");
            return;
        }
        for d in DType::ALL {
            // SAFETY: the AVX-512 subset was detected above.
            if let Some(f) = unsafe { avx512_dot(d) } {
                check_against_scalar(d, f, "avx512");
                // SAFETY: as above.
                if let Some(f4) = unsafe { avx512_dot4(d) } {
                    check_four_rows(d, f, f4);
                }
                // SAFETY: as above.
                if let Some(t) = unsafe { avx512_dot4x2(d) } {
                    check_tile(d, f, t);
                }
            }
        }
        // SAFETY: as above.
        super::super::testing::check_vec_fns(unsafe { avx512_vec_fns() });
    }
}
