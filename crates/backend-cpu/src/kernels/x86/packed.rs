//! The AVX-512 VNNI kernel over packed weights (see `kernels::packed`): sixteen weight rows per
//! 512-bit register, up to four activation rows per pass sharing each unpacked block. Every
//! row's arithmetic is the same sequence whatever the number of rows beside it, and the same as
//! `packed::tile_scalar`'s, so results are bit-identical to it and independent of the batch.

use std::arch::x86_64::*;

use super::super::packed::{high_mask, PackKind, PackedRows, PackedWeight, ROWS};
use super::{load16, load32};

/// Rows `rows` of `x` against group `g` of `w`, into `out` (one entry per row).
///
/// # Safety
/// The CPU must support the AVX-512 subset of `has_avx512`.
pub(in crate::kernels) unsafe fn tile(
    w: &PackedWeight,
    g: usize,
    x: &PackedRows,
    rows: &[usize],
    out: &mut [[f32; ROWS]],
) {
    for (rows, out) in rows.chunks(4).zip(out.chunks_mut(4)) {
        // SAFETY: the caller guarantees the CPU features.
        unsafe {
            // One instance per kind and number of rows (1 to 4) in this pass.
            macro_rules! by_rows {
                ($kernel:ident $(, $k:literal)?) => {
                    match rows.len() {
                        4 => $kernel::<4 $(, $k)?>(w, g, x, rows, out),
                        3 => $kernel::<3 $(, $k)?>(w, g, x, rows, out),
                        2 => $kernel::<2 $(, $k)?>(w, g, x, rows, out),
                        _ => $kernel::<1 $(, $k)?>(w, g, x, rows, out),
                    }
                };
            }
            match w.kind {
                PackKind::Q4_0 => by_rows!(tile_n, 0),
                PackKind::Q4_1 => by_rows!(tile_n, 1),
                PackKind::Q8_0 => by_rows!(tile_n, 2),
                PackKind::Q5_0 => by_rows!(tile_n, 3),
                PackKind::Q5_1 => by_rows!(tile_n, 4),
                PackKind::Q4_K => by_rows!(tile_q4_k),
                PackKind::Q6_K => by_rows!(tile_q6_k),
            }
        }
    }
}

/// [`tile`] for `NR` activation rows and the packed kind `K` (0: Q4_0, 1: Q4_1, 2: Q8_0, 3: Q5_0,
/// 4: Q5_1).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_n<const NR: usize, const K: u8>(
    w: &PackedWeight,
    g: usize,
    x: &PackedRows,
    rows: &[usize],
    out: &mut [[f32; ROWS]],
) {
    let kind = [PackKind::Q4_0, PackKind::Q4_1, PackKind::Q8_0, PackKind::Q5_0, PackKind::Q5_1][K as usize];
    let (mins, bytes8, high) = (K == 1 || K == 4, K == 2, K >= 3);
    let nb = w.nb;
    let group = w.group(g);
    let qb = kind.quant_bytes();
    assert!(group.len() >= kind.group_bytes(nb) && rows.len() == NR && out.len() >= NR && x.nb == nb);
    // Every pointer below stays inside the slices checked here.
    let xq: [*const u8; NR] = std::array::from_fn(|r| {
        let n = rows[r];
        assert!((n + 1) * x.row_bytes <= x.q.len() && (n + 1) * nb <= x.d.len() && (n + 1) * nb <= x.c.len());
        assert!(!mins || (n + 1) * nb <= x.s.len());
        x.q[n * x.row_bytes + x.quants_at..].as_ptr()
    });
    let xd: [&[f32]; NR] = std::array::from_fn(|r| &x.d[rows[r] * nb..(rows[r] + 1) * nb]);
    let xc: [&[i32]; NR] = std::array::from_fn(|r| &x.c[rows[r] * nb..(rows[r] + 1) * nb]);
    let xs: [&[f32]; NR] = std::array::from_fn(|r| if mins { &x.s[rows[r] * nb..(rows[r] + 1) * nb] } else { &[] });
    let (quants, scales) = group.split_at(nb * qb);
    let (ds, ms) = scales.split_at(nb * 32);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); NR];
    let mut off = [_mm512_setzero_ps(); NR];
    for b in 0..nb {
        let q = &quants[b * qb..(b + 1) * qb];
        let mut wv = [_mm512_setzero_si512(); 8];
        if bytes8 {
            for (j, v) in wv.iter_mut().enumerate() {
                *v = load512(q, 64 * j);
            }
        } else {
            for j in 0..4 {
                let v = load512(q, 64 * j);
                wv[j] = _mm512_and_si512(v, low);
                wv[j + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
            }
            if high {
                let sixteen = _mm512_set1_epi8(16);
                for (i, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_or_si512(*v, _mm512_maskz_mov_epi8(high_mask(q, i), sixteen));
                }
            }
        }
        let dw = _mm512_cvtph_ps(load32(ds, b * 32));
        let mw = if mins { _mm512_cvtph_ps(load32(ms, b * 32)) } else { _mm512_setzero_ps() };
        for r in 0..NR {
            // SAFETY: row `rows[r]` holds `nb` blocks (checked above), so the 32 quants of block
            // `b` start `b * block_bytes` past its first block's and lie inside `x.q`.
            let xb = unsafe { xq[r].add(b * x.block_bytes) };
            // SAFETY: `i < 8`, so the four bytes lie inside the block's 32 quants.
            let word = |i: usize| unsafe { broadcast_word(xb, 4 * i) };
            let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], word(0));
            let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[1], word(1));
            s0 = _mm512_dpbusd_epi32(s0, wv[2], word(2));
            s1 = _mm512_dpbusd_epi32(s1, wv[3], word(3));
            s0 = _mm512_dpbusd_epi32(s0, wv[4], word(4));
            s1 = _mm512_dpbusd_epi32(s1, wv[5], word(5));
            s0 = _mm512_dpbusd_epi32(s0, wv[6], word(6));
            s1 = _mm512_dpbusd_epi32(s1, wv[7], word(7));
            let mut s = _mm512_add_epi32(s0, s1);
            if !mins {
                s = _mm512_sub_epi32(s, _mm512_set1_epi32(xc[r][b]));
            }
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(xd[r][b]));
            acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[r]);
            if mins {
                off[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xs[r][b]), off[r]);
            }
        }
    }
    for r in 0..NR {
        let y = if mins { _mm512_add_ps(acc[r], off[r]) } else { acc[r] };
        // SAFETY: `out[r]` holds 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), y) };
    }
}

/// [`tile`] for `NR` activation rows of Q8_K against packed Q4_K: per sub-block of 32 values an
/// exact sum, times its 6-bit scale, summed per super-block; the mins meet the activation's
/// sub-block sums.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q4_k<const NR: usize>(w: &PackedWeight, g: usize, x: &PackedRows, rows: &[usize], out: &mut [[f32; ROWS]]) {
    let nb = w.nb;
    let group = w.group(g);
    let qb = PackKind::Q4_K.quant_bytes();
    let (xq, xd, xsub) = super_rows::<NR>(w, PackKind::Q4_K, x, rows, out);
    let (quants, scales) = group.split_at(nb * qb);
    let (ds, ms) = scales.split_at(nb * 32);
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); NR];
    let mut off = [_mm512_setzero_ps(); NR];
    for b in 0..nb {
        let q = &quants[b * qb..(b + 1) * qb];
        let mut isum = [_mm512_setzero_si512(); NR];
        for j in 0..4 {
            let mut lo = [_mm512_setzero_si512(); NR];
            let mut hi = [_mm512_setzero_si512(); NR];
            for wd in 0..8 {
                let v = load512(q, (8 * j + wd) * 64);
                let (vl, vh) = (_mm512_and_si512(v, low), _mm512_and_si512(_mm512_srli_epi16::<4>(v), low));
                for r in 0..NR {
                    // SAFETY: row `rows[r]` holds `nb` blocks of 256 quants (checked above), and
                    // `64j + 4wd + 32 + 4 <= 256`.
                    let word = |at: usize| unsafe { broadcast_word(xq[r], b * x.block_bytes + 64 * j + 4 * wd + at) };
                    lo[r] = _mm512_dpbusd_epi32(lo[r], vl, word(0));
                    hi[r] = _mm512_dpbusd_epi32(hi[r], vh, word(32));
                }
            }
            let sc_lo = _mm512_cvtepu8_epi32(load16(q, 2048 + 16 * (2 * j)));
            let sc_hi = _mm512_cvtepu8_epi32(load16(q, 2048 + 16 * (2 * j + 1)));
            for r in 0..NR {
                let scaled = _mm512_add_epi32(_mm512_mullo_epi32(lo[r], sc_lo), _mm512_mullo_epi32(hi[r], sc_hi));
                isum[r] = _mm512_add_epi32(isum[r], scaled);
            }
        }
        let mins: [__m512i; 8] = std::array::from_fn(|sub| _mm512_cvtepu8_epi32(load16(q, 2048 + 128 + 16 * sub)));
        let dw = _mm512_cvtph_ps(load32(ds, b * 32));
        let dmin = _mm512_cvtph_ps(load32(ms, b * 32));
        for r in 0..NR {
            let sums = &xsub[r][8 * b..8 * b + 8];
            let mut summs = _mm512_setzero_si512();
            for (m, &s) in mins.iter().zip(sums) {
                summs = _mm512_add_epi32(summs, _mm512_mullo_epi32(*m, _mm512_set1_epi32(s)));
            }
            let dx = _mm512_set1_ps(xd[r][b]);
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum[r]), acc[r]);
            off[r] = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, dx), _mm512_cvtepi32_ps(summs), off[r]);
        }
    }
    for r in 0..NR {
        // SAFETY: `out[r]` holds 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), _mm512_add_ps(acc[r], off[r])) };
    }
}

/// [`tile`] for `NR` activation rows of Q8_K against packed Q6_K: per group of 16 values an exact
/// sum, less 32 times the activation group's sum, times its signed scale.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q6_k<const NR: usize>(w: &PackedWeight, g: usize, x: &PackedRows, rows: &[usize], out: &mut [[f32; ROWS]]) {
    let nb = w.nb;
    let group = w.group(g);
    let qb = PackKind::Q6_K.quant_bytes();
    let (xq, xd, xsub) = super_rows::<NR>(w, PackKind::Q6_K, x, rows, out);
    let (quants, ds) = group.split_at(nb * qb);
    let mut acc = [_mm512_setzero_ps(); NR];
    for b in 0..nb {
        let q = &quants[b * qb..(b + 1) * qb];
        let mut isum = [_mm512_setzero_si512(); NR];
        for gr in 0..16 {
            let sc = _mm512_cvtepi8_epi32(load16(q, 4096 + 16 * gr));
            let wv: [__m512i; 4] = std::array::from_fn(|t| load512(q, (4 * gr + t) * 64));
            for r in 0..NR {
                // SAFETY: row `rows[r]` holds `nb` blocks of 256 quants (checked above), and
                // `16gr + 4t + 4 <= 256`.
                let word = |t: usize| unsafe { broadcast_word(xq[r], b * x.block_bytes + 16 * gr + 4 * t) };
                let mut s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], word(0));
                s = _mm512_dpbusd_epi32(s, wv[1], word(1));
                s = _mm512_dpbusd_epi32(s, wv[2], word(2));
                s = _mm512_dpbusd_epi32(s, wv[3], word(3));
                s = _mm512_sub_epi32(s, _mm512_set1_epi32(32 * xsub[r][16 * b + gr]));
                isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(s, sc));
            }
        }
        let dw = _mm512_cvtph_ps(load32(ds, b * 32));
        for r in 0..NR {
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(xd[r][b]));
            acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum[r]), acc[r]);
        }
    }
    for r in 0..NR {
        // SAFETY: `out[r]` holds 16 writable f32; the store is unaligned.
        unsafe { _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]) };
    }
}

/// Checks a super-block kernel's arguments and gives, per activation row, where its quants
/// start, its block scales and its activation sums. Every pointer a kernel derives from these
/// stays inside the slices checked here.
#[allow(clippy::type_complexity)]
fn super_rows<'a, const NR: usize>(
    w: &PackedWeight,
    kind: PackKind,
    x: &'a PackedRows,
    rows: &[usize],
    out: &[[f32; ROWS]],
) -> ([*const u8; NR], [&'a [f32]; NR], [&'a [i32]; NR]) {
    let (nb, per) = (w.nb, kind.sums_per_block());
    assert!(w.kind == kind && rows.len() == NR && out.len() >= NR && x.nb == nb);
    let xq = std::array::from_fn(|r| {
        let n = rows[r];
        assert!((n + 1) * x.row_bytes <= x.q.len() && (n + 1) * nb <= x.d.len() && (n + 1) * nb * per <= x.sub.len());
        x.q[n * x.row_bytes + x.quants_at..].as_ptr()
    });
    let xd = std::array::from_fn(|r| &x.d[rows[r] * nb..(rows[r] + 1) * nb]);
    let xsub = std::array::from_fn(|r| &x.sub[rows[r] * nb * per..(rows[r] + 1) * nb * per]);
    (xq, xd, xsub)
}

/// The 32-bit word at `p + at`, in all sixteen lanes.
///
/// # Safety
/// The four bytes from `p + at` must be readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn broadcast_word(p: *const u8, at: usize) -> __m512i {
    // SAFETY: the caller vouches for the four bytes; the read is unaligned.
    _mm512_set1_epi32(unsafe { p.add(at).cast::<i32>().read_unaligned() })
}

/// 64 bytes of `b` from `at` (bounds-checked).
#[target_feature(enable = "avx512f")]
#[inline]
fn load512(b: &[u8], at: usize) -> __m512i {
    let s = &b[at..at + 64];
    // SAFETY: `s` holds 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use super::super::super::packed::tile_scalar;
    use super::super::super::testing::{random_f32, random_row};
    use super::super::super::{Isa, Kernels};
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_avx512_packed_kernel_is_bit_identical_to_its_reference() {
        let Some(kernels) = Kernels::new(Isa::Avx512) else {
            eprintln!("no AVX-512 VNNI here: skipped");
            return;
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for kind in PackKind::ALL {
            let tile = kernels.packed(kind.dtype()).unwrap();
            for (m, k, n) in [(1, 32, 1), (19, 96, 7), (40, 288, 5), (16, 64, 4)] {
                let k = k * kind.block_values() / 32;
                let w: Vec<u8> = (0..m).flat_map(|_| random_row(kind.dtype(), k, &mut rng)).collect();
                let x = random_f32(n * k, &mut rng);
                let packed = PackedWeight::pack(kind, &w, m, k, &|_| {}).unwrap();
                let rows = PackedRows::new(kind, &x, k, |vdt, x, o| kernels.quantize(vdt, x, o));
                // Rows in an odd order and an odd count: every split into passes of four.
                let order: Vec<usize> = (0..n).rev().collect();
                for g in 0..packed.groups() {
                    let mut want = vec![[0f32; ROWS]; n];
                    tile_scalar(&packed, g, &rows, &order, &mut want);
                    let mut got = vec![[0f32; ROWS]; n];
                    tile(&packed, g, &rows, &order, &mut got);
                    for i in 0..n {
                        let bits = |v: &[f32; ROWS]| v.map(f32::to_bits);
                        assert_eq!(bits(&got[i]), bits(&want[i]), "{kind:?} m={m} k={k} group {g} row {i}");
                    }
                    for i in 0..n {
                        let mut one = [[0f32; ROWS]];
                        tile(&packed, g, &rows, &order[i..i + 1], &mut one);
                        assert_eq!(one[0].map(f32::to_bits), got[i].map(f32::to_bits), "{kind:?} alone, row {i}");
                    }
                }
            }
        }
    }
}
