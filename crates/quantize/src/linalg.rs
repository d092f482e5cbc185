//! The dense linear algebra the calibrated quantizers need: products of a matrix with the
//! transpose of another (Gram matrices, output errors), and Cholesky factorizations in f64.
//!
//! Products run on the rayon pool in tiles of 4 × 2 rows whose eight dot products advance
//! together; on x86-64 with AVX2 and FMA (checked at run time) the tile is written with those
//! instructions, elsewhere as plain dot products the compiler vectorizes.

use rayon::prelude::*;

const TILE_A: usize = 4;
const TILE_B: usize = 2;
/// Rows of `b` whose tiles are computed against every tile of a task's rows of `a` before
/// moving on, so they stay in cache.
const B_BLOCK: usize = 64;

/// `a · b` with eight partial sums (which the compiler vectorizes); `a` and `b` have equal
/// lengths.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn tile_portable(a: [&[f32]; TILE_A], b: [&[f32]; TILE_B]) -> [[f32; TILE_B]; TILE_A] {
    a.map(|ar| b.map(|br| dot(ar, br)))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{TILE_A, TILE_B};

    /// An unaligned load. `lddqu` rather than `loadu`, whose copy through a temporary carries
    /// debug-build checks that halve the kernel's speed in tests.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { _mm256_castsi256_ps(_mm256_lddqu_si256(p.cast())) }
    }

    /// `a · b` in f64 with four 4-lane accumulators; `a` and `b` have equal lengths.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len();
        debug_assert_eq!(n, b.len());
        let whole = n / 16 * 16;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let load = |p: *const f64| -> __m256d {
            // SAFETY: callers below pass offsets with 4 readable doubles.
            unsafe { _mm256_castsi256_pd(_mm256_lddqu_si256(p.cast())) }
        };
        let (mut c0, mut c1, mut c2, mut c3) =
            (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd());
        let mut o = 0;
        while o < whole {
            c0 = _mm256_fmadd_pd(load(pa.wrapping_add(o)), load(pb.wrapping_add(o)), c0);
            c1 = _mm256_fmadd_pd(load(pa.wrapping_add(o + 4)), load(pb.wrapping_add(o + 4)), c1);
            c2 = _mm256_fmadd_pd(load(pa.wrapping_add(o + 8)), load(pb.wrapping_add(o + 8)), c2);
            c3 = _mm256_fmadd_pd(load(pa.wrapping_add(o + 12)), load(pb.wrapping_add(o + 12)), c3);
            o += 16;
        }
        let mut lanes = [0f64; 4];
        // SAFETY: `lanes` holds four doubles.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(_mm256_add_pd(c0, c1), _mm256_add_pd(c2, c3))) };
        lanes.iter().sum::<f64>() + a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum::<f64>()
    }

    /// The eight dot products of a tile with AVX2 and FMA; all rows have the same length.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(a: [&[f32]; TILE_A], b: [&[f32]; TILE_B]) -> [[f32; TILE_B]; TILE_A] {
        let k = a[0].len();
        debug_assert!(a.iter().chain(&b).all(|r| r.len() == k));
        let whole = k / 8 * 8;
        // Named accumulators, so that all eight stay in registers.
        let (mut c00, mut c01, mut c10, mut c11) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut c20, mut c21, mut c30, mut c31) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let (pa, pb) = (a.map(<[f32]>::as_ptr), b.map(<[f32]>::as_ptr));
        let mut o = 0;
        while o < whole {
            // SAFETY: o + 8 <= whole <= k, the length of every row.
            unsafe {
                let b0 = load(pb[0].wrapping_add(o));
                let b1 = load(pb[1].wrapping_add(o));
                let a0 = load(pa[0].wrapping_add(o));
                c00 = _mm256_fmadd_ps(a0, b0, c00);
                c01 = _mm256_fmadd_ps(a0, b1, c01);
                let a1 = load(pa[1].wrapping_add(o));
                c10 = _mm256_fmadd_ps(a1, b0, c10);
                c11 = _mm256_fmadd_ps(a1, b1, c11);
                let a2 = load(pa[2].wrapping_add(o));
                c20 = _mm256_fmadd_ps(a2, b0, c20);
                c21 = _mm256_fmadd_ps(a2, b1, c21);
                let a3 = load(pa[3].wrapping_add(o));
                c30 = _mm256_fmadd_ps(a3, b0, c30);
                c31 = _mm256_fmadd_ps(a3, b1, c31);
            }
            o += 8;
        }
        let acc = [c00, c01, c10, c11, c20, c21, c30, c31];
        let mut out = [[0f32; TILE_B]; TILE_A];
        for i in 0..TILE_A {
            for j in 0..TILE_B {
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds eight f32s.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[TILE_B * i + j]) };
                let tail: f32 = a[i][whole..].iter().zip(&b[j][whole..]).map(|(x, y)| x * y).sum();
                out[i][j] = lanes.iter().sum::<f32>() + tail;
            }
        }
        out
    }
}

/// Whether the AVX2 tile can run here (checked once).
fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE
            .get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn tile(a: [&[f32]; TILE_A], b: [&[f32]; TILE_B], fast: bool) -> [[f32; TILE_B]; TILE_A] {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` is `use_avx2()`, true only on CPUs with AVX2 and FMA.
        return unsafe { avx2::tile(a, b) };
    }
    let _ = fast;
    tile_portable(a, b)
}

/// Which part of a product is needed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    /// `b` is upper triangular: row `j` is zero before column `j`, which is skipped.
    UpperB,
    /// Only `out[i][j]` with `j <= i` (global row `i`): tiles wholly above the diagonal are
    /// skipped.
    Lower,
}

/// `out[i][j] = a[i] · b[j]` for a block of rows of `a` starting at global row `row0` (`out`
/// holds those rows, `n` wide; `k` is not zero).
fn nt_block(a: &[f32], b: &[f32], n: usize, k: usize, part: Part, row0: usize, out: &mut [f32]) {
    fn row(x: &[f32], i: usize, k: usize) -> &[f32] {
        &x[i * k..(i + 1) * k]
    }
    let fast = use_avx2();
    let m = a.len() / k;
    for j0 in (0..n).step_by(B_BLOCK) {
        for i in (0..m).step_by(TILE_A) {
            if part == Part::Lower && j0 > row0 + i + TILE_A {
                continue;
            }
            // A tile reaching past the last row repeats it; those results are not stored.
            let ar: [&[f32]; TILE_A] = std::array::from_fn(|t| row(a, (i + t).min(m - 1), k));
            for j in (j0..(j0 + B_BLOCK).min(n)).step_by(TILE_B) {
                if part == Part::Lower && j >= row0 + i + TILE_A {
                    break;
                }
                let br: [&[f32]; TILE_B] = std::array::from_fn(|t| row(b, (j + t).min(n - 1), k));
                let s = if part == Part::UpperB { j.min(k) } else { 0 };
                let t = tile(ar.map(|r| &r[s..]), br.map(|r| &r[s..]), fast);
                for (di, t_row) in t.iter().enumerate().take(m - i) {
                    for (dj, &v) in t_row.iter().enumerate().take(n - j) {
                        out[(i + di) * n + j + dj] = v;
                    }
                }
            }
        }
    }
}

/// Rows of `a` per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `a · bᵀ` for row-major `a` (`[m, k]`) and `b` (`[n, k]`): a row-major `[m, n]` matrix.
pub fn matmul_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    debug_assert!(a.len() == m * k && b.len() == n * k);
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    out.par_chunks_mut(ROWS_PER_TASK * n).zip(a.par_chunks(ROWS_PER_TASK * k)).enumerate().for_each(|(t, (o, a))| {
        nt_block(a, b, n, k, Part::All, t * ROWS_PER_TASK, o);
    });
    out
}

/// `a · aᵀ` for row-major `a` (`[m, k]`), computing the lower half and mirroring it.
pub fn gram(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), m * k);
    let mut out = vec![0f32; m * m];
    if m == 0 || k == 0 {
        return out;
    }
    out.par_chunks_mut(ROWS_PER_TASK * m).zip(a.par_chunks(ROWS_PER_TASK * k)).enumerate().for_each(
        |(t, (o, rows))| {
            nt_block(rows, a, m, k, Part::Lower, t * ROWS_PER_TASK, o);
        },
    );
    for i in 0..m {
        for j in i + 1..m {
            out[i * m + j] = out[j * m + i];
        }
    }
    out
}

/// `‖a · bᵀ‖²` (the sum of the squares of [`matmul_nt`]'s result), accumulated in f64,
/// without holding the product. `b_upper` says `b` is upper triangular (`n == k`), whose zeros
/// are skipped.
pub fn sum_sq_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, b_upper: bool) -> f64 {
    debug_assert!(a.len() == m * k && b.len() == n * k);
    if m == 0 || n == 0 || k == 0 {
        return 0.0;
    }
    // Collected in order and summed in one thread: a float sum in rayon's reduction order
    // would depend on how the work was split, and with it the searches' choices.
    let per_task: Vec<f64> = a
        .par_chunks(ROWS_PER_TASK * k)
        .map(|a| {
            let rows = a.len() / k;
            let mut o = vec![0f32; rows * n];
            nt_block(a, b, n, k, if b_upper { Part::UpperB } else { Part::All }, 0, &mut o);
            o.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()
        })
        .collect();
    per_task.iter().sum()
}

/// `Σ a[i] b[i]` in f64 (AVX2 and FMA where available, else eight partial sums the compiler
/// vectorizes).
pub fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: `use_avx2` has checked the CPU.
        return unsafe { avx2::dot_f64(a, b) };
    }
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Cholesky factorization in place: on success the lower triangle of `a` (row-major
/// `[d, d]`, symmetric positive definite) holds `L` with `a = L Lᵀ` and the upper triangle is
/// zero. Fails with the index of the first pivot that is not positive. Column by column; the
/// rows below a pivot are computed on the rayon pool.
pub fn cholesky_lower(a: &mut [f64], d: usize) -> Result<(), usize> {
    debug_assert_eq!(a.len(), d * d);
    for j in 0..d {
        let (head, tail) = a.split_at_mut((j + 1) * d);
        let row_j = &mut head[j * d..];
        let s = row_j[j] - dot_f64(&row_j[..j], &row_j[..j]);
        // Not positive, or NaN: not positive definite.
        if s.is_nan() || s <= 0.0 || s.is_infinite() {
            return Err(j);
        }
        let pivot = s.sqrt();
        row_j[j] = pivot;
        row_j[j + 1..].iter_mut().for_each(|v| *v = 0.0);
        let row_j = &row_j[..j];
        tail.par_chunks_mut(d).with_min_len(16).for_each(|row_i| {
            row_i[j] = (row_i[j] - dot_f64(&row_i[..j], row_j)) / pivot;
        });
    }
    Ok(())
}

/// The inverse of a lower-triangular `l` (row-major `[d, d]`, nonzero diagonal), lower
/// triangular itself. Columns are solved independently on the rayon pool.
pub fn lower_inverse(l: &[f64], d: usize) -> Vec<f64> {
    // Column j of the inverse solves L x = e_j; x is zero above j. Kept as rows of the
    // transpose, each a contiguous vector.
    let columns: Vec<Vec<f64>> = (0..d)
        .into_par_iter()
        .map(|j| {
            let mut x = vec![0f64; d];
            x[j] = 1.0 / l[j * d + j];
            for i in j + 1..d {
                let s = dot_f64(&l[i * d + j..i * d + i], &x[j..i]);
                x[i] = -s / l[i * d + i];
            }
            x
        })
        .collect();
    let mut inv = vec![0f64; d * d];
    for (j, x) in columns.iter().enumerate() {
        for i in j..d {
            inv[i * d + j] = x[i];
        }
    }
    inv
}

/// GPTQ's factor of `h⁻¹`: the upper-triangular `U` with `Uᵀ U = h⁻¹` (what
/// `torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)`
/// gives), without forming the inverse. With `P` the reversal permutation and
/// `P h P = L Lᵀ`, `h = V Vᵀ` for the upper `V = P L P`, so `U = V⁻¹ = P L⁻¹ P`.
/// Fails with the index of a pivot that is not positive.
pub fn inverse_cholesky_upper(h: &[f64], d: usize) -> Result<Vec<f64>, usize> {
    let mut r = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            r[i * d + j] = h[(d - 1 - i) * d + (d - 1 - j)];
        }
    }
    cholesky_lower(&mut r, d).map_err(|i| d - 1 - i)?;
    let li = lower_inverse(&r, d);
    let mut u = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            u[i * d + j] = li[(d - 1 - i) * d + (d - 1 - j)];
        }
    }
    Ok(u)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for test matrices.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }

        pub fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next_f32()).collect()
        }
    }

    fn naive_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * k + l] as f64 * b[j * k + l] as f64).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_the_naive_sum_at_odd_shapes() {
        let mut rng = Rng(7);
        for (m, n, k) in [
            (1, 1, 1),
            (5, 3, 9),
            (17, 7, 33),
            (33, 18, 64),
            (4, 2, 8),
            (2, 5, 0),
            (9, 9, 9),
            (6, 17, 17),
            (70, 150, 100),
            (45, 130, 37),
        ] {
            let a = rng.vec(m * k);
            let b = rng.vec(n * k);
            let got = matmul_nt(&a, &b, m, n, k);
            let want = naive_nt(&a, &b, m, n, k);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k}: {g} vs {w}");
            }
            let sq: f64 = want.iter().map(|v| v * v).sum();
            assert!((sum_sq_nt(&a, &b, m, n, k, false) - sq).abs() < 1e-4 * (1.0 + sq), "{m}x{n}x{k}");
            let g = gram(&a, m, k);
            let want_g = naive_nt(&a, &a, m, m, k);
            for (x, y) in g.iter().zip(&want_g) {
                assert!((*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()), "gram {m}x{k}");
            }
            if n == k {
                let mut upper = b.clone();
                for j in 0..n {
                    for c in 0..j {
                        upper[j * k + c] = 0.0;
                    }
                }
                let want: f64 = naive_nt(&a, &upper, m, n, k).iter().map(|v| v * v).sum();
                assert!((sum_sq_nt(&a, &upper, m, n, k, true) - want).abs() < 1e-4 * (1.0 + want));
            }
        }
    }

    /// A random symmetric positive definite matrix `B Bᵀ + d I`.
    fn spd(rng: &mut Rng, d: usize) -> Vec<f64> {
        let b = rng.vec(d * d);
        let g = naive_nt(&b, &b, d, d, d);
        let mut h = g;
        for i in 0..d {
            h[i * d + i] += d as f64;
        }
        h
    }

    fn mul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
        let mut out = vec![0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] = (0..d).map(|k| a[i * d + k] * b[k * d + j]).sum();
            }
        }
        out
    }

    fn transpose(a: &[f64], d: usize) -> Vec<f64> {
        (0..d * d).map(|x| a[(x % d) * d + x / d]).collect()
    }

    #[test]
    fn cholesky_and_its_inverse_factor_reproduce_the_matrix() {
        let mut rng = Rng(11);
        for d in [1, 2, 7, 20] {
            let h = spd(&mut rng, d);
            let mut l = h.clone();
            cholesky_lower(&mut l, d).unwrap();
            let llt = mul(&l, &transpose(&l, d), d);
            for (x, y) in llt.iter().zip(&h) {
                assert!((x - y).abs() < 1e-9 * (1.0 + y.abs()), "d={d}");
            }
            let li = lower_inverse(&l, d);
            let id = mul(&l, &li, d);
            for i in 0..d {
                for j in 0..d {
                    assert!((id[i * d + j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "d={d}");
                }
            }
            // U is upper triangular and Uᵀ U h = I.
            let u = inverse_cholesky_upper(&h, d).unwrap();
            for i in 0..d {
                assert!(u[i * d + i] > 0.0);
                for j in 0..i {
                    assert_eq!(u[i * d + j], 0.0);
                }
            }
            let id = mul(&mul(&transpose(&u, d), &u, d), &h, d);
            for i in 0..d {
                for j in 0..d {
                    assert!((id[i * d + j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-8, "d={d}");
                }
            }
        }
    }

    #[test]
    fn cholesky_reports_the_failing_pivot() {
        // Positive definite leading 1x1 block, singular 2x2.
        let mut a = vec![1.0, 2.0, 2.0, 4.0];
        assert_eq!(cholesky_lower(&mut a, 2), Err(1));
        assert_eq!(inverse_cholesky_upper(&[1.0, 2.0, 2.0, 4.0], 2), Err(0));
        let mut nan = vec![f64::NAN];
        assert_eq!(cholesky_lower(&mut nan, 1), Err(0));
    }
}
