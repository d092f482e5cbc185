//! The x86 kernels over plain float rows (F32, F16, BF16 and F8_E4M3 weights, attention's
//! f32-by-f16 helpers), instantiated per feature set by `float_kernels!`.

/// Defines `vec_fns()` and the float kernels, compiled with
/// `#[target_feature(enable = $features)]`.
macro_rules! float_kernels {
    ($features:literal) => {
        use crate::kernels::float::VecFns;

        pub(super) fn vec_fns() -> VecFns {
            VecFns { dot_f32: vdot_f32, dot_f16: vdot_f16, axpy_f32: vaxpy_f32, axpy_f16: vaxpy_f16, lanes: None }
        }

        /// Eight elements of a float row at byte `at`: f32 (`K = 4`), f16 (`K = 2`) or bf16 (`K = 3`).
        #[target_feature(enable = $features)]
        #[inline]
        fn load_k<const K: usize>(b: &[u8], at: usize) -> __m256 {
            match K {
                4 => _mm256_castsi256_ps(load32(b, at)),
                2 => load_f16_ps(b, at),
                _ => load_bf16_ps(b, at),
            }
        }

        /// Dot product of two float rows of the kind `K` (see [`load_k`]).
        #[target_feature(enable = $features)]
        #[inline]
        fn float_dot<const K: usize>(w: &[u8], x: &[u8]) -> f32 {
            let size = if K == 4 { 4 } else { 2 };
            let n = (w.len() / size).min(x.len() / size);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let at = (i + 8 * k) * size;
                    *a = _mm256_fmadd_ps(load_k::<K>(w, at), load_k::<K>(x, at), *a);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(load_k::<K>(w, i * size), load_k::<K>(x, i * size), acc[0]);
                i += 8;
            }
            if i < n {
                // Zero-pad the last partial group of eight.
                let (mut wt, mut xt) = ([0u8; 32], [0u8; 32]);
                let len = (n - i) * size;
                wt[..len].copy_from_slice(&w[i * size..n * size]);
                xt[..len].copy_from_slice(&x[i * size..n * size]);
                acc[1] = _mm256_fmadd_ps(load_k::<K>(&wt, 0), load_k::<K>(&xt, 0), acc[1]);
            }
            hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
        }

        #[target_feature(enable = $features)]
        fn f32_dot_impl(w: &[u8], x: &[u8]) -> f32 {
            float_dot::<4>(w, x)
        }
        entry!(f32_dot, f32_dot_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn f16_dot_impl(w: &[u8], x: &[u8]) -> f32 {
            float_dot::<2>(w, x)
        }
        entry!(f16_dot, f16_dot_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn bf16_dot_impl(w: &[u8], x: &[u8]) -> f32 {
            float_dot::<3>(w, x)
        }
        entry!(bf16_dot, bf16_dot_impl, w: &[u8], x: &[u8] => f32);

        /// Eight E4M3 bytes from `b[at..]` as f32, divided by 256: each byte becomes the f16 with
        /// the same sign, exponent and mantissa bits (exact, subnormals included: the exponent
        /// biases, 7 and 15, differ by 8), widened in hardware. Kernels multiply the final sum
        /// by 256, which is exact.
        #[target_feature(enable = $features)]
        #[inline]
        fn e4m3x8(b: &[u8], at: usize) -> __m256 {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&b[at..at + 8]);
            let v = _mm_cvtsi64_si128(i64::from_le_bytes(bytes));
            // Sign-extended and shifted, the sign lands in bits 15 and 14; bit 14 is cleared.
            let h = _mm_slli_epi16::<7>(_mm_cvtepi8_epi16(v));
            _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(0xBF80u16 as i16)))
        }

        /// The eight f32 of 32-value group `g` of an activation chunk.
        #[target_feature(enable = $features)]
        #[inline]
        fn f32x8_group(x: &[u8; 128], g: usize) -> __m256 {
            _mm256_castsi256_ps(load32(x, 32 * g))
        }

        /// F8_E4M3 weights against f32 activations, `C` weight rows by `R` activation rows. Each
        /// output is `256 · hsum((a0 + a1) + (a2 + a3))`, where `a_g` sums chunk by chunk the
        /// products of the `g`-th eight values of every 32 (the last chunk zero-padded). One row
        /// runs the four sums together; a tile runs one `g` at a time so that fewer accumulators
        /// are live. The additions are the same either way, so rows do not depend on their tile.
        #[target_feature(enable = $features)]
        #[inline]
        fn f8_tile<const C: usize, const R: usize>(ws: [&[u8]; C], xs: [&[u8]; R]) -> [[f32; R]; C] {
            let n = ws.iter().map(|w| w.len()).chain(xs.iter().map(|x| x.len() / 4)).min().unwrap_or(0);
            let nc = n / 32;
            let wc = ws.map(|w| &w.as_chunks::<32>().0[..nc]);
            let xc = xs.map(|x| &x.as_chunks::<128>().0[..nc]);
            // The last partial chunk, zero-padded: 0 * 0 adds nothing.
            let wt = ws.map(|w| {
                let mut t = [0u8; 32];
                t[..n - 32 * nc].copy_from_slice(&w[32 * nc..n]);
                t
            });
            let xt = xs.map(|x| {
                let mut t = [0u8; 128];
                t[..4 * (n - 32 * nc)].copy_from_slice(&x[128 * nc..4 * n]);
                t
            });
            let tail = n > 32 * nc;
            let mut acc = [[[_mm256_setzero_ps(); R]; C]; 4];
            if C * R == 1 {
                let mut a = [_mm256_setzero_ps(); 4];
                for j in 0..nc + usize::from(tail) {
                    let (w, x) = if j < nc { (&wc[0][j], &xc[0][j]) } else { (&wt[0], &xt[0]) };
                    for (g, a) in a.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(e4m3x8(w, 8 * g), f32x8_group(x, g), *a);
                    }
                }
                for g in 0..4 {
                    acc[g][0][0] = a[g];
                }
            } else {
                for (g, acc) in acc.iter_mut().enumerate() {
                    let mut a = [[_mm256_setzero_ps(); R]; C];
                    for j in 0..nc + usize::from(tail) {
                        for c in 0..C {
                            let w = if j < nc { &wc[c][j] } else { &wt[c] };
                            let wv = e4m3x8(w, 8 * g);
                            for r in 0..R {
                                let x = if j < nc { &xc[r][j] } else { &xt[r] };
                                a[c][r] = _mm256_fmadd_ps(wv, f32x8_group(x, g), a[c][r]);
                            }
                        }
                    }
                    *acc = a;
                }
            }
            let mut out = [[0f32; R]; C];
            for c in 0..C {
                for r in 0..R {
                    let lo = _mm256_add_ps(acc[0][c][r], acc[1][c][r]);
                    let hi = _mm256_add_ps(acc[2][c][r], acc[3][c][r]);
                    out[c][r] = 256.0 * hsum_ps(_mm256_add_ps(lo, hi));
                }
            }
            out
        }

        #[target_feature(enable = $features)]
        fn f8_dot_impl(w: &[u8], x: &[u8]) -> f32 {
            f8_tile([w], [x])[0][0]
        }
        entry!(f8_dot, f8_dot_impl, w: &[u8], x: &[u8] => f32);

        #[target_feature(enable = $features)]
        fn f8_x4_impl(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
            let [y] = f8_tile([w], x);
            y
        }
        entry!(f8_x4, f8_x4_impl, w: &[u8], x: [&[u8]; 4] => [f32; 4]);

        #[target_feature(enable = $features)]
        fn f8_x4x2_impl(w: [&[u8]; 2], x: [&[u8]; 4]) -> [[f32; 4]; 2] {
            f8_tile(w, x)
        }
        entry!(f8_x4x2, f8_x4x2_impl, w: [&[u8]; 2], x: [&[u8]; 4] => [[f32; 4]; 2]);

        /// Eight elements of an f32 row `k` or an f16 row `kh` from element `i`.
        #[target_feature(enable = $features)]
        #[inline]
        fn load_kv<const F16: bool>(k: &[f32], kh: &[u8], i: usize) -> __m256 {
            if F16 {
                load_f16_ps(kh, 2 * i)
            } else {
                load_ps(k, i)
            }
        }

        /// `q · k` for an f32 query and an f32 (`F16 = false`) or f16 key row.
        #[target_feature(enable = $features)]
        #[inline]
        fn qk_dot<const F16: bool>(q: &[f32], k: &[f32], kh: &[u8]) -> f32 {
            let n = if F16 { q.len().min(kh.len() / 2) } else { q.len().min(k.len()) };
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 16 <= n {
                a0 = _mm256_fmadd_ps(load_ps(q, i), load_kv::<F16>(k, kh, i), a0);
                a1 = _mm256_fmadd_ps(load_ps(q, i + 8), load_kv::<F16>(k, kh, i + 8), a1);
                i += 16;
            }
            while i + 8 <= n {
                a0 = _mm256_fmadd_ps(load_ps(q, i), load_kv::<F16>(k, kh, i), a0);
                i += 8;
            }
            let mut s = hsum_ps(_mm256_add_ps(a0, a1));
            for j in i..n {
                s += q[j] * if F16 { half::f16::from_le_bytes([kh[2 * j], kh[2 * j + 1]]).to_f32() } else { k[j] };
            }
            s
        }

        /// [`qk_dot`] of `q` with each key row at element `at[i]`.
        #[target_feature(enable = $features)]
        #[inline]
        fn dot_rows<const F16: bool>(q: &[f32], k: &[f32], kh: &[u8], at: &[usize], out: &mut [f32]) {
            let n = q.len();
            for (o, &a) in out.iter_mut().zip(at) {
                *o = if F16 { qk_dot::<true>(q, &[], &kh[2 * a..2 * (a + n)]) } else { qk_dot::<false>(q, &k[a..a + n], &[]) };
            }
        }

        #[target_feature(enable = $features)]
        fn vdot_f32_impl(q: &[f32], k: &[f32], at: &[usize], out: &mut [f32]) {
            dot_rows::<false>(q, k, &[], at, out)
        }
        entry!(vdot_f32, vdot_f32_impl, q: &[f32], k: &[f32], at: &[usize], out: &mut [f32] => ());

        #[target_feature(enable = $features)]
        fn vdot_f16_impl(q: &[f32], k: &[u8], at: &[usize], out: &mut [f32]) {
            dot_rows::<true>(q, &[], k, at, out)
        }
        entry!(vdot_f16, vdot_f16_impl, q: &[f32], k: &[u8], at: &[usize], out: &mut [f32] => ());

        /// Eight values of the value row starting at element `a`, from element `i` of it.
        #[target_feature(enable = $features)]
        #[inline]
        fn value8<const F16: bool>(v: &[f32], vh: &[u8], a: usize, i: usize) -> __m256 {
            if F16 {
                load_f16_ps(vh, 2 * (a + i))
            } else {
                load_ps(v, a + i)
            }
        }

        /// `out[c..c + 8L] += p[i] * (row i)[c..c + 8L]` for every row in order, the `L`
        /// accumulators in registers throughout: each element sees the same fused multiply-adds
        /// in the same order as one row at a time.
        #[target_feature(enable = $features)]
        #[inline]
        fn axpy_span<const F16: bool, const L: usize>(
            out: &mut [f32],
            c: usize,
            p: &[f32],
            v: &[f32],
            vh: &[u8],
            at: &[usize],
        ) {
            let mut acc = [_mm256_setzero_ps(); L];
            for (l, a) in acc.iter_mut().enumerate() {
                *a = load_ps(out, c + 8 * l);
            }
            for (&p, &a) in p.iter().zip(at) {
                let pv = _mm256_set1_ps(p);
                for (l, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(pv, value8::<F16>(v, vh, a, c + 8 * l), *acc);
                }
            }
            for (l, a) in acc.iter().enumerate() {
                store_ps(out, c + 8 * l, *a);
            }
        }

        /// `out += p[i] * v[at[i]..]` for every row in order, for f32 (`F16 = false`) or f16
        /// value rows.
        #[target_feature(enable = $features)]
        #[inline]
        fn axpy_rows<const F16: bool>(out: &mut [f32], p: &[f32], v: &[f32], vh: &[u8], at: &[usize]) {
            let n = out.len();
            let mut c = 0;
            while c + 64 <= n {
                axpy_span::<F16, 8>(out, c, p, v, vh, at);
                c += 64;
            }
            while c + 8 <= n {
                axpy_span::<F16, 1>(out, c, p, v, vh, at);
                c += 8;
            }
            for j in c..n {
                for (&p, &a) in p.iter().zip(at) {
                    let x = if F16 { half::f16::from_le_bytes([vh[2 * (a + j)], vh[2 * (a + j) + 1]]).to_f32() } else { v[a + j] };
                    out[j] += p * x;
                }
            }
        }

        #[target_feature(enable = $features)]
        fn vaxpy_f32_impl(out: &mut [f32], p: &[f32], v: &[f32], at: &[usize]) {
            axpy_rows::<false>(out, p, v, &[], at)
        }
        entry!(vaxpy_f32, vaxpy_f32_impl, out: &mut [f32], p: &[f32], v: &[f32], at: &[usize] => ());

        #[target_feature(enable = $features)]
        fn vaxpy_f16_impl(out: &mut [f32], p: &[f32], v: &[u8], at: &[usize]) {
            axpy_rows::<true>(out, p, &[], v, at)
        }
        entry!(vaxpy_f16, vaxpy_f16_impl, out: &mut [f32], p: &[f32], v: &[u8], at: &[usize] => ());
    };
}
