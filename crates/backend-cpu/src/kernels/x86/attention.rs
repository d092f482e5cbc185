//! Attention over sixteen lanes at once with AVX-512 (see [`LaneTile`]): one lane per vector
//! element, so each key row is converted once for every head that reads it, a score needs no
//! horizontal sum, and the causal mask is a lane mask.
//!
//! Per lane the arithmetic is fixed: each score is one chain of fused multiply-adds over the
//! head's elements in order, times the scale; the maximum is exact; `exp` is the polynomial
//! below; the weights are summed and the values accumulated in key order over the lane's own
//! keys (other keys leave its registers untouched). Which lanes share a tile changes nothing.

use std::arch::x86_64::*;

use crate::kernels::float::{LaneFns, LaneScratch, LaneTile};

pub(super) fn lane_fns() -> LaneFns {
    LaneFns { f32: lanes_f32, f16: lanes_f16 }
}

fn lanes_f32(tile: &LaneTile<'_>, k: &[f32], v: &[f32], scratch: &mut LaneScratch, out: &mut [f32]) {
    // SAFETY: only handed out by `avx512_vec_fns`, whose caller vouches for the CPU.
    unsafe { attend::<false>(tile, k, &[], v, &[], scratch, out) }
}

fn lanes_f16(tile: &LaneTile<'_>, k: &[u8], v: &[u8], scratch: &mut LaneScratch, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attend::<true>(tile, &[], k, &[], v, scratch, out) }
}

/// Keys whose scores one pass over the queries computes: eight independent FMA chains.
const KEYS: usize = 8;

/// Sixteen f32 from `v` at `at` (bounds-checked).
#[target_feature(enable = "avx512f")]
#[inline]
fn load(v: &[f32], at: usize) -> __m512 {
    let s = &v[at..at + 16];
    // SAFETY: `s` holds 16 readable f32; the load is unaligned.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn store(v: &mut [f32], at: usize, x: __m512) {
    let s = &mut v[at..at + 16];
    // SAFETY: `s` holds 16 writable f32; the store is unaligned.
    unsafe { _mm512_storeu_ps(s.as_mut_ptr(), x) }
}

/// Up to sixteen elements of a row from element `i`, as f32; those past `n` are zero.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
fn row16<const F16: bool>(r: &[f32], rh: &[u8], a: usize, i: usize, n: usize) -> __m512 {
    let len = (n - i).min(16);
    let mask = ((1u32 << len) - 1) as u16;
    if F16 {
        let s = &rh[2 * (a + i)..2 * (a + i + len)];
        // SAFETY: the masked load reads only the `len` halves of `s`.
        let h = unsafe { _mm256_maskz_loadu_epi16(mask, s.as_ptr().cast()) };
        _mm512_cvtph_ps(h)
    } else {
        let s = &r[a + i..a + i + len];
        // SAFETY: the masked load reads only the `len` f32 of `s`.
        unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr()) }
    }
}

/// `e^x` for sixteen lanes: Cephes' `expf` (range reduction by a two-part ln 2, a degree-6
/// polynomial, the power of two applied exactly), within about one ulp of the true value;
/// below -103 it is 0, as f32 has nothing between.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
fn exp16(x: __m512) -> __m512 {
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-103.0));
    // `min` returns its second operand when either is NaN, so NaN goes through.
    let x = _mm512_min_ps(_mm512_set1_ps(88.72), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    _mm512_maskz_mov_ps(!tiny, _mm512_scalef_ps(y, n))
}

/// The cache rows starting at elements `at` (at most [`KEYS`]) as f32 into
/// `rows`, one every `stride` elements, zero past the head's `hd` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
fn convert_rows<const F16: bool>(rows: &mut [f32], r: &[f32], rh: &[u8], at: &[usize], hd: usize, stride: usize) {
    for (i, &a) in at.iter().enumerate() {
        for c in (0..stride).step_by(16) {
            store(rows, i * stride + c, row16::<F16>(r, rh, a, c, hd));
        }
    }
}

/// The sixteen elements of `v` from `at` as an array (one bounds check for all of them).
#[inline(always)]
fn sixteen(v: &[f32], at: usize) -> &[f32; 16] {
    v[at..at + 16].try_into().expect("sixteen elements")
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn attend<const F16: bool>(
    t: &LaneTile<'_>,
    k: &[f32],
    kh: &[u8],
    v: &[f32],
    vh: &[u8],
    scratch: &mut LaneScratch,
    out: &mut [f32],
) {
    let (hd, nk) = (t.head_dim, t.at.len());
    // The head's elements in whole vectors; those past `hd` are zero in every buffer.
    let stride = hd.next_multiple_of(16);
    assert!(t.qt.len() >= 16 * stride && out.len() >= 16 * hd, "lane tile buffers are too small");
    let LaneScratch { scores, rows, masks, sums } = scratch;
    scores.clear();
    scores.resize(16 * nk, 0.0);
    rows.clear();
    rows.resize(KEYS * stride, 0.0);
    // SAFETY: both arrays hold 16 i32; the loads are unaligned.
    let first = unsafe { _mm512_loadu_si512(t.first.as_ptr().cast()) };
    let last = unsafe { _mm512_loadu_si512(t.last.as_ptr().cast()) };
    masks.clear();
    masks.extend((0..nk).map(|j| {
        let j = _mm512_set1_epi32(j as i32);
        _mm512_cmpge_epi32_mask(j, first) & _mm512_cmplt_epi32_mask(j, last)
    }));

    // Scores, KEYS keys against all lanes per pass over the head's elements.
    let scale = _mm512_set1_ps(t.scale);
    for j0 in (0..nk).step_by(KEYS) {
        let count = (nk - j0).min(KEYS);
        convert_rows::<F16>(rows, k, kh, &t.at[j0..j0 + count], hd, stride);
        let mut acc = [_mm512_setzero_ps(); KEYS];
        for c in (0..stride).step_by(16) {
            let q: &[f32; 256] = t.qt[16 * c..16 * c + 256].try_into().expect("256 elements");
            let keys: [&[f32; 16]; KEYS] = std::array::from_fn(|i| sixteen(rows, i * stride + c));
            for e in 0..16 {
                let q = load(q, 16 * e);
                for (key, acc) in keys.iter().zip(&mut acc) {
                    *acc = _mm512_fmadd_ps(q, _mm512_set1_ps(key[e]), *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(count) {
            store(scores, 16 * (j0 + i), _mm512_mul_ps(*acc, scale));
        }
    }

    // Softmax weights over each lane's own keys; other keys' weights are zero.
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for (j, &m) in masks.iter().enumerate() {
        max = _mm512_mask_max_ps(max, m, max, load(scores, 16 * j));
    }
    let mut sum = _mm512_setzero_ps();
    for (j, &m) in masks.iter().enumerate() {
        let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(load(scores, 16 * j), max)));
        store(scores, 16 * j, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    let inv = _mm512_div_ps(_mm512_set1_ps(1.0), sum);

    // Tiles of a few lanes (one decoding row's heads) run lane by lane, the same fused
    // multiply-adds in the same order, without the vector's unused lanes.
    let used = (0..16).rev().find(|&l| t.first[l] < t.last[l]).map_or(0, |l| l + 1);
    let inv_lanes = {
        let mut a = [0f32; 16];
        store(&mut a, 0, inv);
        a
    };
    match used {
        1 => values_by_lane::<F16, 1>(t, v, vh, scores, masks, &inv_lanes, out),
        2 => values_by_lane::<F16, 2>(t, v, vh, scores, masks, &inv_lanes, out),
        3 => values_by_lane::<F16, 3>(t, v, vh, scores, masks, &inv_lanes, out),
        4 => values_by_lane::<F16, 4>(t, v, vh, scores, masks, &inv_lanes, out),
        _ => values_by_element::<F16>(t, v, vh, Parts { scores, rows, masks, sums }, inv, out),
    }
}

/// The buffers [`values_by_element`] works in.
struct Parts<'a> {
    scores: &'a [f32],
    rows: &'a mut [f32],
    masks: &'a [u16],
    sums: &'a mut Vec<f32>,
}

/// `out = (weights · values) * inv`, KEYS value rows at a time into sixteen elements'
/// accumulators of all lanes, each lane's touched only by its own keys.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn values_by_element<const F16: bool>(
    t: &LaneTile<'_>,
    v: &[f32],
    vh: &[u8],
    b: Parts<'_>,
    inv: __m512,
    out: &mut [f32],
) {
    let (hd, nk) = (t.head_dim, t.at.len());
    let stride = hd.next_multiple_of(16);
    let Parts { scores, rows, masks, sums } = b;
    sums.clear();
    sums.resize(16 * stride, 0.0);
    for j0 in (0..nk).step_by(KEYS) {
        let count = (nk - j0).min(KEYS);
        convert_rows::<F16>(rows, v, vh, &t.at[j0..j0 + count], hd, stride);
        for c in (0..stride).step_by(16) {
            let mut acc: [__m512; 16] = std::array::from_fn(|e| load(sums, 16 * (c + e)));
            for (i, &m) in masks[j0..j0 + count].iter().enumerate() {
                if m == 0 {
                    continue;
                }
                let (p, value) = (load(scores, 16 * (j0 + i)), sixteen(rows, i * stride + c));
                for (e, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_mask3_fmadd_ps(p, _mm512_set1_ps(value[e]), *acc, m);
                }
            }
            for (e, acc) in acc.iter().enumerate() {
                store(sums, 16 * (c + e), *acc);
            }
        }
    }
    for d in 0..hd {
        store(out, 16 * d, _mm512_mul_ps(load(sums, 16 * d), inv));
    }
}

/// [`values_by_element`] for a tile whose lanes in use are its first `L`: sixty-four elements of
/// each lane per pass over the keys, one lane's elements per vector. Each output element sees
/// the same fused multiply-adds, in the same order, as there.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn values_by_lane<const F16: bool, const L: usize>(
    t: &LaneTile<'_>,
    v: &[f32],
    vh: &[u8],
    scores: &[f32],
    masks: &[u16],
    inv: &[f32; 16],
    out: &mut [f32],
) {
    let hd = t.head_dim;
    for c0 in (0..hd).step_by(64) {
        let mut acc = [[_mm512_setzero_ps(); 4]; L];
        for (j, (&a, &m)) in t.at.iter().zip(masks).enumerate() {
            if m == 0 {
                continue;
            }
            let vals: [__m512; 4] = std::array::from_fn(|q| {
                let c = c0 + 16 * q;
                if c < hd {
                    row16::<F16>(v, vh, a, c, hd)
                } else {
                    _mm512_setzero_ps()
                }
            });
            let weights = &scores[16 * j..16 * j + 16];
            for (l, acc) in acc.iter_mut().enumerate() {
                let keep: __mmask16 = if m >> l & 1 == 1 { u16::MAX } else { 0 };
                let p = _mm512_set1_ps(weights[l]);
                for (a, &x) in acc.iter_mut().zip(&vals) {
                    *a = _mm512_mask3_fmadd_ps(p, x, *a, keep);
                }
            }
        }
        for (l, acc) in acc.iter().enumerate() {
            let scale = _mm512_set1_ps(inv[l]);
            for (q, a) in acc.iter().enumerate() {
                let mut y = [0f32; 16];
                store(&mut y, 0, _mm512_mul_ps(*a, scale));
                for (e, &y) in y.iter().enumerate() {
                    let d = c0 + 16 * q + e;
                    if d < hd {
                        out[16 * d + l] = y;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp16_is_within_two_ulps_of_exp() {
        if !super::super::has_avx512() {
            return;
        }
        let mut xs: Vec<f32> = (0..20_000).map(|i| -110.0 + i as f32 * 0.0055).collect();
        xs.extend([0.0, -0.0, 1.0, 10.0, 88.0, -87.5, -102.9, -103.1, -1e-8, f32::NEG_INFINITY]);
        for chunk in xs.chunks(16) {
            let mut x = [0f32; 16];
            x[..chunk.len()].copy_from_slice(chunk);
            let mut y = [0f32; 16];
            // SAFETY: the CPU has AVX-512, checked above.
            unsafe { store(&mut y, 0, exp16(load(&x, 0))) };
            for (&x, &y) in x.iter().zip(&y) {
                let want = (x as f64).exp();
                let ulp = if want < f32::MIN_POSITIVE as f64 {
                    1.4e-45
                } else {
                    (want as f32).abs() as f64 * f32::EPSILON as f64
                };
                assert!(((y as f64) - want).abs() <= 2.0 * ulp, "exp({x}) = {y}, not {want}");
            }
        }
        let mut y = [0f32; 16];
        // SAFETY: as above.
        unsafe { store(&mut y, 0, exp16(_mm512_set1_ps(f32::NAN))) };
        assert!(y[0].is_nan());
    }
}
