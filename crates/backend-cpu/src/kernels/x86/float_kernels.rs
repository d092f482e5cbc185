//! The x86 kernels over plain float rows (F32, F16 and BF16 weights, attention's f32-by-f16
//! helpers), instantiated per feature set by `float_kernels!`.

/// Defines `vec_fns()` and the float kernels, compiled with
/// `#[target_feature(enable = $features)]`.
macro_rules! float_kernels {
    ($features:literal) => {
        use crate::kernels::float::VecFns;

        pub(super) fn vec_fns() -> VecFns {
            VecFns { dot_f32: vdot_f32, dot_f16: vdot_f16, axpy_f32: vaxpy_f32, axpy_f16: vaxpy_f16 }
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

        #[target_feature(enable = $features)]
        fn vdot_f32_impl(q: &[f32], k: &[f32]) -> f32 {
            qk_dot::<false>(q, k, &[])
        }
        entry!(vdot_f32, vdot_f32_impl, q: &[f32], k: &[f32] => f32);

        #[target_feature(enable = $features)]
        fn vdot_f16_impl(q: &[f32], k: &[u8]) -> f32 {
            qk_dot::<true>(q, &[], k)
        }
        entry!(vdot_f16, vdot_f16_impl, q: &[f32], k: &[u8] => f32);

        /// `out += p * v` for an f32 (`F16 = false`) or f16 value row.
        #[target_feature(enable = $features)]
        #[inline]
        fn axpy<const F16: bool>(out: &mut [f32], p: f32, v: &[f32], vh: &[u8]) {
            let n = if F16 { out.len().min(vh.len() / 2) } else { out.len().min(v.len()) };
            let pv = _mm256_set1_ps(p);
            let mut i = 0;
            while i + 8 <= n {
                let x = load_kv::<F16>(v, vh, i);
                store_ps(out, i, _mm256_fmadd_ps(pv, x, load_ps(out, i)));
                i += 8;
            }
            for j in i..n {
                out[j] += p * if F16 { half::f16::from_le_bytes([vh[2 * j], vh[2 * j + 1]]).to_f32() } else { v[j] };
            }
        }

        #[target_feature(enable = $features)]
        fn vaxpy_f32_impl(out: &mut [f32], p: f32, v: &[f32]) {
            axpy::<false>(out, p, v, &[])
        }
        entry!(vaxpy_f32, vaxpy_f32_impl, out: &mut [f32], p: f32, v: &[f32] => ());

        #[target_feature(enable = $features)]
        fn vaxpy_f16_impl(out: &mut [f32], p: f32, v: &[u8]) {
            axpy::<true>(out, p, &[], v)
        }
        entry!(vaxpy_f16, vaxpy_f16_impl, out: &mut [f32], p: f32, v: &[u8] => ());
    };
}
