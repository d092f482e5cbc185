//! The x86 kernel bodies for block types, written once and instantiated per feature set by
//! `block_kernels!`. Each follows the structure of ggml's AVX2 kernel for the same type: exact
//! integer sums per block, then one f32 fused multiply-add per block.
//!
//! The 32-value types are written as a weight-side part (unpack a block once) and an
//! activation-side part; `sum_blocks!` pairs them for one activation row and `sum_blocks4!` for
//! four, with the same per-row arithmetic, so a row's result does not depend on how many rows
//! were computed together.

/// Wraps a `#[target_feature]` kernel in a plain `fn` so it fits a function-pointer slot.
macro_rules! entry {
    ($name:ident, $imp:ident, $($arg:ident : $ty:ty),* => $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: this module's functions are only reachable through `dot`, `dot4` and
            // `vec_fns`, which callers may only use after detecting the module's features.
            unsafe { $imp($($arg),*) }
        }
    };
}

/// `sum(d * q)` over the blocks of a weight row `$w` and an activation row `$x`: `$prep` unpacks
/// weight block `$wb` into `$p`, `$row` computes `(d, q)` (eight lanes each) from `$p` and
/// activation block `$xb`. When `$mins`, the scalar `$off` (Q4_1 and Q5_1's `m * s`) is summed
/// too. Two accumulators take alternate blocks, so the loop is not bound by the latency of one
/// chain of FMAs.
macro_rules! sum_blocks {
    ($w:expr, $wbytes:expr, $x:expr, $xbytes:expr, $mins:expr,
     |$wb:ident| $prep:expr, |$p:ident, $xb:ident| $row:expr, $off:expr) => {{
        let (w, x): (&[u8], &[u8]) = ($w, $x);
        let n = (w.len() / $wbytes).min(x.len() / $xbytes);
        let mut acc = [(_mm256_setzero_ps(), 0f32); 2];
        let step = |i: usize, (acc, off): (__m256, f32)| {
            let ($wb, $xb) = (&w[i * $wbytes..][..$wbytes], &x[i * $xbytes..][..$xbytes]);
            let $p = $prep;
            let (d, q) = $row;
            (_mm256_fmadd_ps(d, q, acc), if $mins { off + $off } else { off })
        };
        let mut i = 0;
        while i + 2 <= n {
            acc[0] = step(i, acc[0]);
            acc[1] = step(i + 1, acc[1]);
            i += 2;
        }
        if i < n {
            acc[0] = step(i, acc[0]);
        }
        let sum = hsum_ps(_mm256_add_ps(acc[0].0, acc[1].0));
        if $mins {
            sum + (acc[0].1 + acc[1].1)
        } else {
            sum
        }
    }};
}

/// [`sum_blocks!`] for four activation rows `$xs` at once: each weight block is unpacked once
/// and used for all four, with the same accumulation per row.
macro_rules! sum_blocks4 {
    ($w:expr, $wbytes:expr, $xs:expr, $xbytes:expr, $mins:expr,
     |$wb:ident| $prep:expr, |$p:ident, $xb:ident| $row:expr, $off:expr) => {{
        let (w, xs): (&[u8], [&[u8]; 4]) = ($w, $xs);
        let n = xs.iter().fold(w.len() / $wbytes, |n, x| n.min(x.len() / $xbytes));
        let mut acc = [[(_mm256_setzero_ps(), 0f32); 4]; 2];
        // A constant-trip inner loop rather than a closure: once unrolled, every accumulator
        // index is a constant and the sixteen accumulators stay in registers.
        for i in (0..n).step_by(2) {
            for (k, acc) in acc.iter_mut().enumerate() {
                if i + k >= n {
                    break;
                }
                let $wb = &w[(i + k) * $wbytes..][..$wbytes];
                let $p = $prep;
                for (x, (a, off)) in xs.iter().zip(acc.iter_mut()) {
                    let $xb = &x[(i + k) * $xbytes..][..$xbytes];
                    let (d, q) = $row;
                    *a = _mm256_fmadd_ps(d, q, *a);
                    if $mins {
                        *off += $off;
                    }
                }
            }
        }
        [0, 1, 2, 3].map(|r| {
            let sum = hsum_ps(_mm256_add_ps(acc[0][r].0, acc[1][r].0));
            if $mins {
                sum + (acc[0][r].1 + acc[1][r].1)
            } else {
                sum
            }
        })
    }};
}

/// Defines a 1-row kernel `$one` and a 4-row kernel `$four` (with `#[target_feature]` bodies
/// `$one_impl` and `$four_impl`) for a 32-value block type from its `$prep` and `$row` parts;
/// `$mins` adds the `m * s` offset term of Q4_1 and Q5_1 (`$off`, given the prepared block `p`
/// and activation block `xb`).
macro_rules! legacy {
    ($features:literal, $one:ident, $one_impl:ident, $four:ident, $four_impl:ident,
     $wbytes:expr, $xbytes:expr, $prep:ident, $row:ident, $mins:expr, |$p:ident, $xb:ident| $off:expr) => {
        #[target_feature(enable = $features)]
        fn $one_impl(w: &[u8], x: &[u8]) -> f32 {
            sum_blocks!(w, $wbytes, x, $xbytes, $mins, |wb| $prep(wb), |$p, $xb| $row($p, $xb), $off)
        }
        entry!($one, $one_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn $four_impl(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
            sum_blocks4!(w, $wbytes, x, $xbytes, $mins, |wb| $prep(wb), |$p, $xb| $row($p, $xb), $off)
        }
        entry!($four, $four_impl, w: &[u8], x: [&[u8]; 4] => [f32; 4]);
    };
}

/// Defines `dot(DType)`, `dot4(DType)` and the block-type kernels behind them, compiled with
/// `#[target_feature(enable = $features)]`; `$us8` multiplies unsigned by signed bytes and sums
/// groups of four into i32.
macro_rules! block_kernels {
    ($features:literal, $us8:ident) => {
        use crate::kernels::kquants::{Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BYTES, Q8_K_QS};
        use crate::kernels::legacy::{
            MXFP4_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, Q8_1_BYTES,
        };
        use crate::kernels::{e8m0_half, f32_at, kquant_scales_mins, Dot4Fn};

        pub(super) fn dot(w: DType) -> Option<DotFn> {
            Some(match w {
                DType::F32 => f32_dot,
                DType::F16 => f16_dot,
                DType::BF16 => bf16_dot,
                DType::Q4_0 => q4_0,
                DType::Q4_1 => q4_1,
                DType::Q5_0 => q5_0,
                DType::Q5_1 => q5_1,
                DType::Q8_0 => q8_0,
                DType::Q8_1 => q8_1,
                DType::MXFP4 => mxfp4,
                DType::Q4_K => q4_k,
                DType::Q5_K => q5_k,
                DType::Q6_K => q6_k,
                _ => return None,
            })
        }

        pub(super) fn dot4(w: DType) -> Option<Dot4Fn> {
            Some(match w {
                DType::Q4_0 => q4_0_x4,
                DType::Q4_1 => q4_1_x4,
                DType::Q5_0 => q5_0_x4,
                DType::Q5_1 => q5_1_x4,
                DType::Q8_0 => q8_0_x4,
                DType::Q8_1 => q8_1_x4,
                DType::MXFP4 => mxfp4_x4,
                _ => return None,
            })
        }

        /// A signed weight block: its values, their absolute values and its scale.
        type Signed = (__m256i, __m256i, __m256);
        /// An unsigned weight block (Q4_1, Q5_1): its values, its scale and its offset `m`.
        type Unsigned = (__m256i, __m256, f32);

        #[target_feature(enable = $features)]
        #[inline]
        fn signed(qx: __m256i, d: __m256) -> Signed {
            (qx, _mm256_sign_epi8(qx, qx), d)
        }

        /// `(d_w * d_x, sum(w * x))` for a signed block against a Q8_0 block; the sign trick
        /// (`|w| * sign(w) x`) as in ggml's `mul_sum_i8_pairs_float`.
        #[target_feature(enable = $features)]
        #[inline]
        fn row_signed(p: Signed, xb: &[u8]) -> (__m256, __m256) {
            let sy = _mm256_sign_epi8(load32(xb, 2), p.0);
            (_mm256_mul_ps(p.2, f16x8(xb, 0)), _mm256_cvtepi32_ps($us8(p.1, sy)))
        }

        /// `(d_w * d_x, sum(w * x))` for an unsigned block against a Q8_1 block.
        #[target_feature(enable = $features)]
        #[inline]
        fn row_unsigned(p: Unsigned, xb: &[u8]) -> (__m256, __m256) {
            (_mm256_mul_ps(p.1, f16x8(xb, 0)), _mm256_cvtepi32_ps($us8(p.0, load32(xb, 4))))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q4_0(wb: &[u8]) -> Signed {
            signed(_mm256_sub_epi8(nibbles32(wb, 2), _mm256_set1_epi8(8)), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q5_0(wb: &[u8]) -> Signed {
            // A clear fifth bit means value - 16: set the byte's high nibble (two's complement).
            let hi = _mm256_andnot_si256(bits32(wb, 2), _mm256_set1_epi8(0xF0u8 as i8));
            signed(_mm256_or_si256(nibbles32(wb, 6), hi), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q8_0(wb: &[u8]) -> Signed {
            signed(load32(wb, 2), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q8_1(wb: &[u8]) -> Signed {
            signed(load32(wb, 4), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_mxfp4(wb: &[u8]) -> Signed {
            let values = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
            let m4 = _mm_set1_epi8(0x0F);
            let q4 = load16(wb, 1);
            let lo = _mm_shuffle_epi8(values, _mm_and_si128(q4, m4));
            let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16::<4>(q4), m4));
            signed(_mm256_set_m128i(hi, lo), _mm256_set1_ps(e8m0_half(wb[0])))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q4_1(wb: &[u8]) -> Unsigned {
            (nibbles32(wb, 4), f16x8(wb, 0), f16_hw(wb, 2))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q5_1(wb: &[u8]) -> Unsigned {
            let hi = _mm256_and_si256(bits32(wb, 4), _mm256_set1_epi8(0x10));
            (_mm256_or_si256(nibbles32(wb, 8), hi), f16x8(wb, 0), f16_hw(wb, 2))
        }

        legacy!($features, q4_0, q4_0_impl, q4_0_x4, q4_0_x4_impl, Q4_0_BYTES, Q8_0_BYTES, prep_q4_0, row_signed, false, |_p, _xb| 0.0);
        legacy!($features, q5_0, q5_0_impl, q5_0_x4, q5_0_x4_impl, Q5_0_BYTES, Q8_0_BYTES, prep_q5_0, row_signed, false, |_p, _xb| 0.0);
        legacy!($features, q8_0, q8_0_impl, q8_0_x4, q8_0_x4_impl, Q8_0_BYTES, Q8_0_BYTES, prep_q8_0, row_signed, false, |_p, _xb| 0.0);
        legacy!($features, q8_1, q8_1_impl, q8_1_x4, q8_1_x4_impl, Q8_1_BYTES, Q8_0_BYTES, prep_q8_1, row_signed, false, |_p, _xb| 0.0);
        legacy!($features, mxfp4, mxfp4_impl, mxfp4_x4, mxfp4_x4_impl, MXFP4_BYTES, Q8_0_BYTES, prep_mxfp4, row_signed, false, |_p, _xb| 0.0);
        legacy!($features, q4_1, q4_1_impl, q4_1_x4, q4_1_x4_impl, Q4_1_BYTES, Q8_1_BYTES, prep_q4_1, row_unsigned, true, |p, xb| p.2 * f16_hw(xb, 2));
        legacy!($features, q5_1, q5_1_impl, q5_1_x4, q5_1_x4_impl, Q5_1_BYTES, Q8_1_BYTES, prep_q5_1, row_unsigned, true, |p, xb| p.2 * f16_hw(xb, 2));

        /// Q4_K and Q5_K: per 64 values, two sub-blocks of 32 with their own 6-bit scale.
        #[target_feature(enable = $features)]
        #[inline]
        fn q45_k_impl(w: &[u8], x: &[u8], wbytes: usize, five_bits: bool) -> f32 {
            let m4 = _mm256_set1_epi8(0x0F);
            let qs_at = if five_bits { 48 } else { 16 };
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = 0f32;
            for (wb, xb) in w.chunks_exact(wbytes).zip(x.chunks_exact(Q8_K_BYTES)) {
                let dy = f32_at(xb, 0);
                let d = dy * f16_hw(wb, 0);
                let dmin = dy * f16_hw(wb, 2);
                let (sc, mn) = kquant_scales_mins(&wb[4..16]);
                acc_m -= dmin * kquant_min_sum(xb, &mn) as f32;
                let hbits = if five_bits { load32(wb, 16) } else { _mm256_setzero_si256() };
                let mut sumi = _mm256_setzero_si256();
                for j in 0..4 {
                    let q4bits = load32(wb, qs_at + 32 * j);
                    let mut lo = _mm256_and_si256(q4bits, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
                    if five_bits {
                        let m0 = _mm256_set1_epi8(1 << (2 * j));
                        let m1 = _mm256_set1_epi8(1 << (2 * j + 1));
                        let sixteen = _mm256_set1_epi8(16);
                        let h0 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, m0), m0);
                        let h1 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, m1), m1);
                        lo = _mm256_or_si256(lo, _mm256_and_si256(h0, sixteen));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(h1, sixteen));
                    }
                    let p_lo = _mm256_maddubs_epi16(lo, load32(xb, Q8_K_QS + 64 * j));
                    let p_hi = _mm256_maddubs_epi16(hi, load32(xb, Q8_K_QS + 64 * j + 32));
                    let p_lo = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j] as i16), p_lo);
                    let p_hi = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j + 1] as i16), p_hi);
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_ps(acc) + acc_m
        }

        #[target_feature(enable = $features)]
        fn q4_k_impl(w: &[u8], x: &[u8]) -> f32 {
            q45_k_impl(w, x, Q4_K_BYTES, false)
        }
        entry!(q4_k, q4_k_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn q5_k_impl(w: &[u8], x: &[u8]) -> f32 {
            q45_k_impl(w, x, Q5_K_BYTES, true)
        }
        entry!(q5_k, q5_k_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn q6_k_impl(w: &[u8], x: &[u8]) -> f32 {
            let m3 = _mm256_set1_epi8(3);
            let m15 = _mm256_set1_epi8(15);
            let mut acc = _mm256_setzero_ps();
            for (wb, xb) in w.chunks_exact(Q6_K_BYTES).zip(x.chunks_exact(Q8_K_BYTES)) {
                let d = f32_at(xb, 0) * f16_hw(wb, 208);
                let scales = load16(wb, 192);
                // Values are stored plus 32: subtract 32 * sum(q8) per 16-value group.
                let q8sums = load32(xb, crate::kernels::kquants::Q8_K_BSUMS);
                let bias = _mm256_slli_epi32::<5>(_mm256_madd_epi16(q8sums, _mm256_cvtepi8_epi16(scales)));
                let sc = |g: usize| wb[192 + g] as i8 as i16;
                let mut sumi = _mm256_setzero_si256();
                for j in 0..2 {
                    let b1 = load32(wb, 64 * j);
                    let b2 = load32(wb, 64 * j + 32);
                    let h = load32(wb, 128 + 32 * j);
                    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(h, m3));
                    let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(12)));
                    let h2 = _mm256_and_si256(h, _mm256_set1_epi8(48));
                    let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(-64)));
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(b1, m15), h0),
                        _mm256_or_si256(_mm256_and_si256(b2, m15), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b1), m15), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b2), m15), h3),
                    ];
                    for (k, qk) in q.iter().enumerate() {
                        let p = _mm256_maddubs_epi16(*qk, load32(xb, Q8_K_QS + 128 * j + 32 * k));
                        let g = 8 * j + 2 * k;
                        let s = _mm256_set_m128i(_mm_set1_epi16(sc(g + 1)), _mm_set1_epi16(sc(g)));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, p));
                    }
                }
                let sumi = _mm256_sub_epi32(sumi, bias);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_ps(acc)
        }
        entry!(q6_k, q6_k_impl, w: &[u8], x: &[u8] => f32);

    };
}
