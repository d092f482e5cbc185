//! The x86 kernel bodies for block types, written once and instantiated per feature set by
//! `block_kernels!`. Each follows the structure of ggml's AVX2 kernel for the same type: exact
//! integer sums per block, then one f32 fused multiply-add per block.
//!
//! The 32-value types are written as a weight-side part (unpack a block once) and an
//! activation-side part; `sum_blocks!` pairs them for one activation row and `sum_tile!` for
//! four, with the same per-row arithmetic, so a row's result does not depend on how many rows
//! were computed together. NVFP4 (two halves of 32 values, each meeting one Q8_0 block) and I8
//! (one exact integer sum per row) have their own tile functions, generic over the number of
//! weight rows, with the same guarantee.

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

/// `sum(d * q) (+ sum(m * s))` over the blocks of a weight row `$w` and an activation row `$x`:
/// `$prep` unpacks weight block `$wb` into a `Block` `$p`, `$row` gives its eight lane sums
/// against activation block `$xb`, scaled by `d_w * d_x`. When `$mins`, the `m_w * s_x` terms
/// (Q4_1 and Q5_1) are summed too. Two accumulators take alternate blocks, so the loop is not
/// bound by the latency of one chain of FMAs; the result is
/// `hsum(acc_even + acc_odd) + (off_even + off_odd)`.
macro_rules! sum_blocks {
    ($w:expr, $wbytes:expr, $x:expr, $xbytes:expr, $mins:expr,
     |$wb:ident| $prep:expr, |$p:ident, $xb:ident| $row:expr) => {{
        // Fixed-size blocks (`as_chunks`) let the compiler drop every bounds check inside a
        // block, and zipping the rows drops the per-block ones.
        let w = $w.as_chunks::<{ $wbytes }>().0;
        let x = $x.as_chunks::<{ $xbytes }>().0;
        let n = w.len().min(x.len());
        let (w, x) = (&w[..n], &x[..n]);
        // The offsets are scalars kept in all lanes of a vector (see `f16x4b`).
        let mut acc = [(_mm256_setzero_ps(), _mm_setzero_ps()); 2];
        let step = |wb: &[u8; $wbytes], xb: &[u8; $xbytes], (acc, off): (__m256, __m128)| {
            let ($wb, $xb): (&[u8], &[u8]) = (wb, xb);
            let $p = $prep;
            let d = _mm256_mul_ps($p.d, f16x8($xb, 0));
            let acc = _mm256_fmadd_ps(d, $row, acc);
            (acc, if $mins { _mm_add_ps(off, _mm_mul_ps($p.m, f16x4b($xb, 2))) } else { off })
        };
        let (wp, wt) = w.as_chunks::<2>();
        let (xp, xt) = x.as_chunks::<2>();
        for (wp, xp) in wp.iter().zip(xp) {
            acc[0] = step(&wp[0], &xp[0], acc[0]);
            acc[1] = step(&wp[1], &xp[1], acc[1]);
        }
        if let (Some(wb), Some(xb)) = (wt.first(), xt.first()) {
            acc[0] = step(wb, xb, acc[0]);
        }
        let sum = hsum_ps(_mm256_add_ps(acc[0].0, acc[1].0));
        if $mins {
            sum + (_mm_cvtss_f32(acc[0].1) + _mm_cvtss_f32(acc[1].1))
        } else {
            sum
        }
    }};
}

/// [`sum_blocks!`] for a tile of four activation rows `$xs` by `C` weight rows `$ws` (an array
/// of `C` rows), each output computed exactly as alone: each weight block is unpacked once for
/// all four activation rows, and each activation block's scales are converted once for all `C`
/// weight rows and multiplied four at a time (lane `r` is row `r`; the same products as one at
/// a time). The even blocks are summed first, then the odd ones: the same two accumulators as
/// [`sum_blocks!`], with half the registers live. Gives `[[f32; 4]; C]`, indexed by weight row,
/// then activation row.
macro_rules! sum_tile {
    ($ws:expr, $wbytes:expr, $xs:expr, $xbytes:expr, $mins:expr,
     |$wb:ident| $prep:expr, |$p:ident, $xb:ident| $row:expr) => {{
        let ws = $ws.map(|w: &[u8]| w.as_chunks::<{ $wbytes }>().0);
        let xs = $xs.map(|x: &[u8]| x.as_chunks::<{ $xbytes }>().0);
        let n = xs.iter().fold(usize::MAX, |n, x| n.min(x.len()));
        let n = ws.iter().fold(n, |n, w| n.min(w.len()));
        let ws = ws.map(|w| &w[..n]);
        let xs = [&xs[0][..n], &xs[1][..n], &xs[2][..n], &xs[3][..n]];
        let pass = |first: usize| {
            // Re-sliced here so that the compiler knows every row's length inside the loop.
            let (ws, xs) = (ws.map(|w| &w[..n]), [&xs[0][..n], &xs[1][..n], &xs[2][..n], &xs[3][..n]]);
            let mut acc = ws.map(|_| [_mm256_setzero_ps(); 4]);
            let mut off = ws.map(|_| _mm_setzero_ps());
            let mut j = first;
            while j < n {
                let xb: [&[u8]; 4] = [&xs[0][j], &xs[1][j], &xs[2][j], &xs[3][j]];
                let dx = f16x4!(xb, 0);
                let sx = if $mins { f16x4!(xb, 2) } else { _mm_setzero_ps() };
                // Constant-trip loops: once unrolled, every accumulator index is a constant and
                // the accumulators stay in registers.
                for c in 0..ws.len() {
                    let $wb: &[u8] = &ws[c][j];
                    let $p = $prep;
                    let d = _mm_mul_ps(_mm256_castps256_ps128($p.d), dx);
                    for r in 0..4 {
                        let $xb = xb[r];
                        let dr = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), _mm256_set1_epi32(r as i32));
                        acc[c][r] = _mm256_fmadd_ps(dr, $row, acc[c][r]);
                    }
                    if $mins {
                        off[c] = _mm_add_ps(off[c], _mm_mul_ps($p.m, sx));
                    }
                }
                j += 2;
            }
            (acc, off)
        };
        let (even, odd) = (pass(0), pass(1));
        let mut out = ws.map(|_| [0f32; 4]);
        for c in 0..ws.len() {
            let offs: [f32; 4] = bytemuck::cast(_mm_add_ps(even.1[c], odd.1[c]));
            out[c] = [0, 1, 2, 3].map(|r| {
                let sum = hsum_ps(_mm256_add_ps(even.0[c][r], odd.0[c][r]));
                if $mins {
                    sum + offs[r]
                } else {
                    sum
                }
            });
        }
        out
    }};
}

/// The f16 at `$at` of each of four blocks `$b`, as four f32 (lane `r` from `$b[r]`). A macro,
/// not a function: the compiler would not always inline it, and a call costs the accumulators
/// their registers.
macro_rules! f16x4 {
    ($b:expr, $at:expr) => {{
        let (b, at): ([&[u8]; 4], usize) = ($b, $at);
        let h = [0, 1, 2, 3].map(|r| i16::from_le_bytes([b[r][at], b[r][at + 1]]));
        _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0))
    }};
}

/// Defines a 1-row kernel `$one`, a 4-row kernel `$four` and a 4-by-2 tile kernel `$tile` (with
/// `#[target_feature]` bodies `$one_impl`, `$four_impl` and `$tile_impl`) for a 32-value block type from its `$prep` and `$row` parts;
/// `$mins` adds the `m * s` offset term of Q4_1 and Q5_1.
macro_rules! legacy {
    ($features:literal, $one:ident, $one_impl:ident, $four:ident, $four_impl:ident, $tile:ident, $tile_impl:ident,
     $wbytes:expr, $xbytes:expr, $prep:ident, $row:ident, $mins:expr) => {
        #[target_feature(enable = $features)]
        fn $one_impl(w: &[u8], x: &[u8]) -> f32 {
            sum_blocks!(w, $wbytes, x, $xbytes, $mins, |wb| $prep(wb), |p, xb| $row(&p, xb))
        }
        entry!($one, $one_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn $four_impl(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
            let [y] = sum_tile!([w], $wbytes, x, $xbytes, $mins, |wb| $prep(wb), |p, xb| $row(&p, xb));
            y
        }
        entry!($four, $four_impl, w: &[u8], x: [&[u8]; 4] => [f32; 4]);

        #[target_feature(enable = $features)]
        fn $tile_impl(w: [&[u8]; 2], x: [&[u8]; 4]) -> [[f32; 4]; 2] {
            sum_tile!(w, $wbytes, x, $xbytes, $mins, |wb| $prep(wb), |p, xb| $row(&p, xb))
        }
        entry!($tile, $tile_impl, w: [&[u8]; 2], x: [&[u8]; 4] => [[f32; 4]; 2]);
    };
}

/// Defines `dot(DType)`, `dot4(DType)` and the block-type kernels behind them, compiled with
/// `#[target_feature(enable = $features)]`; `$us8` multiplies unsigned by signed bytes and sums
/// groups of four into i32.
macro_rules! block_kernels {
    ($features:literal, $us8:ident) => {
        use crate::kernels::kquants::{Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BYTES, Q8_K_QS};
        use crate::kernels::int8::{finish, split_row};
        use crate::kernels::legacy::{
            MXFP4_BYTES, NVFP4_BYTES, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, Q8_1_BYTES,
        };
        use crate::kernels::{e8m0_half, f32_at, kquant_scales_mins, Dot4Fn, Dot4x2Fn};
        use tessera_quant::UE4M3_HALF;

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
                DType::NVFP4 => nvfp4,
                DType::I8 => i8_dot,
                DType::F8_E4M3 => f8_dot,
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
                DType::NVFP4 => nvfp4_x4,
                DType::I8 => i8_x4,
                DType::F8_E4M3 => f8_x4,
                _ => return None,
            })
        }

        pub(super) fn dot4x2(w: DType) -> Option<Dot4x2Fn> {
            Some(match w {
                DType::Q4_0 => q4_0_x4x2,
                DType::Q4_1 => q4_1_x4x2,
                DType::Q5_0 => q5_0_x4x2,
                DType::Q5_1 => q5_1_x4x2,
                DType::Q8_0 => q8_0_x4x2,
                DType::Q8_1 => q8_1_x4x2,
                DType::MXFP4 => mxfp4_x4x2,
                DType::NVFP4 => nvfp4_x4x2,
                DType::I8 => i8_x4x2,
                DType::F8_E4M3 => f8_x4x2,
                _ => return None,
            })
        }

        /// An unpacked weight block: its 32 values `q` (signed, or unsigned for Q4_1/Q5_1),
        /// their absolute values `a` (signed types only), its scale `d` and offset `m` (Q4_1,
        /// Q5_1; else 0) in every lane.
        #[derive(Clone, Copy)]
        struct Block {
            q: __m256i,
            a: __m256i,
            d: __m256,
            m: __m128,
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn signed(q: __m256i, d: __m256) -> Block {
            Block { q, a: _mm256_sign_epi8(q, q), d, m: _mm_setzero_ps() }
        }

        /// The eight lane sums of a signed block times a Q8_0 block; the sign trick
        /// (`|w| * sign(w) x`) as in ggml's `mul_sum_i8_pairs_float`.
        #[target_feature(enable = $features)]
        #[inline]
        fn row_signed(p: &Block, xb: &[u8]) -> __m256 {
            let sy = _mm256_sign_epi8(load32(xb, 2), p.q);
            _mm256_cvtepi32_ps($us8(p.a, sy))
        }

        /// The eight lane sums of an unsigned block times a Q8_1 block.
        #[target_feature(enable = $features)]
        #[inline]
        fn row_unsigned(p: &Block, xb: &[u8]) -> __m256 {
            _mm256_cvtepi32_ps($us8(p.q, load32(xb, 4)))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q4_0(wb: &[u8]) -> Block {
            signed(_mm256_sub_epi8(nibbles32(wb, 2), _mm256_set1_epi8(8)), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q5_0(wb: &[u8]) -> Block {
            // A clear fifth bit means value - 16: set the byte's high nibble (two's complement).
            let hi = _mm256_andnot_si256(bits32(wb, 2), _mm256_set1_epi8(0xF0u8 as i8));
            signed(_mm256_or_si256(nibbles32(wb, 6), hi), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q8_0(wb: &[u8]) -> Block {
            signed(load32(wb, 2), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q8_1(wb: &[u8]) -> Block {
            signed(load32(wb, 4), f16x8(wb, 0))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_mxfp4(wb: &[u8]) -> Block {
            let values = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
            let m4 = _mm_set1_epi8(0x0F);
            let q4 = load16(wb, 1);
            let lo = _mm_shuffle_epi8(values, _mm_and_si128(q4, m4));
            let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16::<4>(q4), m4));
            signed(_mm256_set_m128i(hi, lo), _mm256_set1_ps(e8m0_half(wb[0])))
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q4_1(wb: &[u8]) -> Block {
            Block { q: nibbles32(wb, 4), a: _mm256_setzero_si256(), d: f16x8(wb, 0), m: f16x4b(wb, 2) }
        }

        #[target_feature(enable = $features)]
        #[inline]
        fn prep_q5_1(wb: &[u8]) -> Block {
            let hi = _mm256_and_si256(bits32(wb, 4), _mm256_set1_epi8(0x10));
            let q = _mm256_or_si256(nibbles32(wb, 8), hi);
            Block { q, a: _mm256_setzero_si256(), d: f16x8(wb, 0), m: f16x4b(wb, 2) }
        }

        legacy!($features, q4_0, q4_0_impl, q4_0_x4, q4_0_x4_impl, q4_0_x4x2, q4_0_x4x2_impl, Q4_0_BYTES, Q8_0_BYTES, prep_q4_0, row_signed, false);
        legacy!($features, q5_0, q5_0_impl, q5_0_x4, q5_0_x4_impl, q5_0_x4x2, q5_0_x4x2_impl, Q5_0_BYTES, Q8_0_BYTES, prep_q5_0, row_signed, false);
        legacy!($features, q8_0, q8_0_impl, q8_0_x4, q8_0_x4_impl, q8_0_x4x2, q8_0_x4x2_impl, Q8_0_BYTES, Q8_0_BYTES, prep_q8_0, row_signed, false);
        legacy!($features, q8_1, q8_1_impl, q8_1_x4, q8_1_x4_impl, q8_1_x4x2, q8_1_x4x2_impl, Q8_1_BYTES, Q8_0_BYTES, prep_q8_1, row_signed, false);
        legacy!($features, mxfp4, mxfp4_impl, mxfp4_x4, mxfp4_x4_impl, mxfp4_x4x2, mxfp4_x4x2_impl, MXFP4_BYTES, Q8_0_BYTES, prep_mxfp4, row_signed, false);
        legacy!($features, q4_1, q4_1_impl, q4_1_x4, q4_1_x4_impl, q4_1_x4x2, q4_1_x4x2_impl, Q4_1_BYTES, Q8_1_BYTES, prep_q4_1, row_unsigned, true);
        legacy!($features, q5_1, q5_1_impl, q5_1_x4, q5_1_x4_impl, q5_1_x4x2, q5_1_x4x2_impl, Q5_1_BYTES, Q8_1_BYTES, prep_q5_1, row_unsigned, true);

        /// Half `h` of an NVFP4 block: sub-blocks `2h` and `2h + 1`, the 32 values that meet Q8_0
        /// block `2i + h` of the activations. Its values in order (ggml's reordering of the
        /// nibbles), and each sub-block's halved UE4M3 scale in the four lanes its sums land in.
        #[target_feature(enable = $features)]
        #[inline]
        fn prep_nvfp4_half(wb: &[u8], h: usize) -> Block {
            let values = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
            let m4 = _mm_set1_epi8(0x0F);
            let q4 = load16(wb, 4 + 16 * h);
            let lo = _mm_shuffle_epi8(values, _mm_and_si128(q4, m4));
            let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16::<4>(q4), m4));
            let q = _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
            let d0 = _mm_set1_ps(UE4M3_HALF[wb[2 * h] as usize]);
            let d1 = _mm_set1_ps(UE4M3_HALF[wb[2 * h + 1] as usize]);
            signed(q, _mm256_set_m128(d1, d0))
        }

        /// NVFP4 weights against Q8_0 activations: one accumulator per block half, so every
        /// output is `hsum(Σ first halves + Σ second halves)`, each sum in block order.
        #[target_feature(enable = $features)]
        fn nvfp4_impl(w: &[u8], x: &[u8]) -> f32 {
            let w = w.as_chunks::<NVFP4_BYTES>().0;
            let x = x.as_chunks::<{ 2 * Q8_0_BYTES }>().0;
            let mut acc = [_mm256_setzero_ps(); 2];
            for (wb, xb) in w.iter().zip(x) {
                for (h, acc) in acc.iter_mut().enumerate() {
                    let p = prep_nvfp4_half(wb, h);
                    let xh = &xb[h * Q8_0_BYTES..];
                    *acc = _mm256_fmadd_ps(_mm256_mul_ps(p.d, f16x8(xh, 0)), row_signed(&p, xh), *acc);
                }
            }
            hsum_ps(_mm256_add_ps(acc[0], acc[1]))
        }
        entry!(nvfp4, nvfp4_impl, w: &[u8], x: &[u8] => f32);

        /// [`nvfp4_impl`] for `C` weight rows and four activation rows: the first halves of
        /// every block, then the second halves, so half the accumulators are live at a time.
        #[target_feature(enable = $features)]
        #[inline]
        fn nvfp4_tile<const C: usize>(ws: [&[u8]; C], xs: [&[u8]; 4]) -> [[f32; 4]; C] {
            let ws = ws.map(|w| w.as_chunks::<NVFP4_BYTES>().0);
            let xs = xs.map(|x| x.as_chunks::<{ 2 * Q8_0_BYTES }>().0);
            let n = xs.iter().map(|x| x.len()).chain(ws.iter().map(|w| w.len())).min().unwrap_or(0);
            let pass = |h: usize| {
                // Re-sliced here so that the compiler knows every row's length inside the loop.
                let (ws, xs) = (ws.map(|w| &w[..n]), xs.map(|x| &x[..n]));
                let mut acc = [[_mm256_setzero_ps(); 4]; C];
                for j in 0..n {
                    let xh: [&[u8]; 4] = [&xs[0][j][h * Q8_0_BYTES..], &xs[1][j][h * Q8_0_BYTES..],
                        &xs[2][j][h * Q8_0_BYTES..], &xs[3][j][h * Q8_0_BYTES..]];
                    let dx = _mm256_castps128_ps256(f16x4!(xh, 0));
                    for c in 0..C {
                        let p = prep_nvfp4_half(&ws[c][j], h);
                        for r in 0..4 {
                            let dr = _mm256_permutevar8x32_ps(dx, _mm256_set1_epi32(r as i32));
                            let d = _mm256_mul_ps(p.d, dr);
                            acc[c][r] = _mm256_fmadd_ps(d, row_signed(&p, xh[r]), acc[c][r]);
                        }
                    }
                }
                acc
            };
            let (first, second) = (pass(0), pass(1));
            let mut out = [[0f32; 4]; C];
            for c in 0..C {
                out[c] = [0, 1, 2, 3].map(|r| hsum_ps(_mm256_add_ps(first[c][r], second[c][r])));
            }
            out
        }

        #[target_feature(enable = $features)]
        fn nvfp4_x4_impl(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
            let [y] = nvfp4_tile([w], x);
            y
        }
        entry!(nvfp4_x4, nvfp4_x4_impl, w: &[u8], x: [&[u8]; 4] => [f32; 4]);

        #[target_feature(enable = $features)]
        fn nvfp4_x4x2_impl(w: [&[u8]; 2], x: [&[u8]; 4]) -> [[f32; 4]; 2] {
            nvfp4_tile(w, x)
        }
        entry!(nvfp4_x4x2, nvfp4_x4x2_impl, w: [&[u8]; 2], x: [&[u8]; 4] => [[f32; 4]; 2]);

        /// The i32 lane sums of 32 I8 weights `wv` (with absolute values `aw`) times 32 int8
        /// activations `xv`: the sign trick, so the unsigned-by-signed multiply fits.
        #[target_feature(enable = $features)]
        #[inline]
        fn i8_sums(wv: __m256i, aw: __m256i, xv: __m256i) -> __m256i {
            $us8(aw, _mm256_sign_epi8(xv, wv))
        }

        /// The exact sum of the eight i32 lanes.
        #[target_feature(enable = $features)]
        #[inline]
        fn hsum_i64(v: __m256i) -> i64 {
            let lanes: [i32; 8] = bytemuck::cast(v);
            lanes.iter().map(|&l| l as i64).sum()
        }

        /// I8 weights against per-row int8 activations, `C` weight rows by `R` activation rows:
        /// whole chunks of 32 in SIMD, the rest in scalar code. The sums are exact integers, so
        /// any grouping of rows gives the same bits. A lane adds `k / 8` products below 2^14,
        /// exact for rows of up to 2^20 values.
        #[target_feature(enable = $features)]
        #[inline]
        fn i8_tile<const C: usize, const R: usize>(ws: [&[u8]; C], xs: [&[u8]; R]) -> [[f32; R]; C] {
            let rows = xs.map(split_row);
            let n = rows.iter().map(|r| r.1.len()).chain(ws.iter().map(|w| w.len())).min().unwrap_or(0);
            let nc = n / 32;
            let wc = ws.map(|w| &w.as_chunks::<32>().0[..nc]);
            let qc = rows.map(|r| &r.1.as_chunks::<32>().0[..nc]);
            let mut acc = [[_mm256_setzero_si256(); R]; C];
            for j in 0..nc {
                let wv: [__m256i; C] = std::array::from_fn(|c| load32(&wc[c][j], 0));
                let aw = wv.map(|v| _mm256_sign_epi8(v, v));
                for r in 0..R {
                    let xv = load32(&qc[r][j], 0);
                    for c in 0..C {
                        acc[c][r] = _mm256_add_epi32(acc[c][r], i8_sums(wv[c], aw[c], xv));
                    }
                }
            }
            let mut out = [[0f32; R]; C];
            for c in 0..C {
                for r in 0..R {
                    let tail: i64 = ws[c][32 * nc..n]
                        .iter()
                        .zip(&rows[r].1[32 * nc..n])
                        .map(|(&a, &b)| (a as i8 as i32 * b as i8 as i32) as i64)
                        .sum();
                    out[c][r] = finish(hsum_i64(acc[c][r]) + tail, rows[r].0);
                }
            }
            out
        }

        #[target_feature(enable = $features)]
        fn i8_dot_impl(w: &[u8], x: &[u8]) -> f32 {
            i8_tile([w], [x])[0][0]
        }
        entry!(i8_dot, i8_dot_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn i8_x4_impl(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
            let [y] = i8_tile([w], x);
            y
        }
        entry!(i8_x4, i8_x4_impl, w: &[u8], x: [&[u8]; 4] => [f32; 4]);

        #[target_feature(enable = $features)]
        fn i8_x4x2_impl(w: [&[u8]; 2], x: [&[u8]; 4]) -> [[f32; 4]; 2] {
            i8_tile(w, x)
        }
        entry!(i8_x4x2, i8_x4x2_impl, w: [&[u8]; 2], x: [&[u8]; 4] => [[f32; 4]; 2]);

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
