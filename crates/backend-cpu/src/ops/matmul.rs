//! MatMul: `y = x · wᵀ` with `w` read in its stored type, never dequantized as a whole.
//!
//! Each activation row is converted once to the weight type's vec-dot type (Q8_0, Q8_1, Q8_K,
//! f16, the per-row int8 of I8 weights, ...); then every output is one block-wise dot product. The work is cut into tiles of
//! four activation rows by a run of weight rows: inside a tile each weight block is unpacked once
//! and multiplied with all four rows, two weight rows at a time so that each activation block's
//! scales are converted once for both (the `dot4x2` and `dot4` kernels, where the type has them;
//! otherwise the block is reused from L1); consecutive tiles of one thread share their weight
//! rows, so a weight matrix streams from memory about once per thread even for long prompts. The
//! tile, four-row and one-row kernels compute each element identically, so results do not depend
//! on how rows were grouped.

use rayon::prelude::*;
use tessera_core::DType;

use crate::kernels::packed::{PackedRows, PackedWeight, ROWS};
use crate::kernels::{activation_bytes, Kernels, PackedTileFn};

/// Activation rows per tile.
const TILE_ROWS: usize = 4;
/// Bytes of weight rows a tile aims to keep in a core's L2 cache.
const TILE_WEIGHT_BYTES: usize = 256 * 1024;

/// The `[n, m]` output, written by tasks that each own a disjoint set of elements.
struct Output {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only write through `Output::write`, each to elements no other task writes, and
// the vector it points into outlives them all (it is only read after the parallel loop).
unsafe impl Sync for Output {}

impl Output {
    /// # Safety
    /// No other thread may access element `i` while this call runs.
    unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "output index {i} out of {}", self.len);
        // SAFETY: `i` is in bounds (checked above) and exclusively this caller's (the contract).
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// Weight units (rows, or packed groups of rows) per task: as many as fit `TILE_WEIGHT_BYTES`
/// (at least `min`), but few enough that `row_tiles` tiles of activation rows give every thread
/// about four tasks.
fn units_per_task(units: usize, unit_bytes: usize, min: usize, row_tiles: usize, threads: usize) -> usize {
    let want_chunks = (4 * threads.max(1)).div_ceil(row_tiles);
    (TILE_WEIGHT_BYTES / unit_bytes).max(min).min(units.div_ceil(want_chunks)).max(1)
}

/// `x` is `[n, k]` f32 and `w` holds `m` rows of `k` values of `wtype`; returns `[n, m]`.
pub(crate) fn mat_mul(
    kernels: &Kernels,
    threads: usize,
    x: &[f32],
    k: usize,
    w: &[u8],
    wtype: DType,
    m: usize,
) -> Result<Vec<f32>, String> {
    let (vdt, dot) = kernels.dot(wtype).ok_or_else(|| format!("no kernel for {wtype} weights"))?;
    let dot4 = kernels.dot4(wtype);
    let tile = kernels.dot4x2(wtype);
    let n = x.len().checked_div(k).unwrap_or(0);
    let mut out = vec![0f32; n * m];
    if n == 0 || m == 0 {
        return Ok(out);
    }
    let wrow = wtype.bytes_for(k).map_err(|e| e.to_string())?;
    let xrow = activation_bytes(vdt, k)?;
    if w.len() < m * wrow {
        return Err(format!("weight holds {} bytes, {m} rows of {k} {wtype} need {}", w.len(), m * wrow));
    }

    let mut xq = vec![0u8; n * xrow];
    xq.par_chunks_mut(xrow).zip(x.par_chunks(k)).with_min_len(8).for_each(|(o, x)| kernels.quantize(vdt, x, o));

    let groups = n.div_ceil(TILE_ROWS);
    let cols = units_per_task(m, wrow, 8, groups, threads);
    let chunks = m.div_ceil(cols);
    let output = Output { ptr: out.as_mut_ptr(), len: out.len() };
    let output = &output;
    let (w, xq) = (&w[..m * wrow], &xq[..]);
    // Task t covers column chunk t / groups and row group t % groups, so the contiguous task
    // ranges rayon hands each thread reuse the same weight rows.
    (0..groups * chunks).into_par_iter().for_each(|t| {
        let (c, g) = (t / groups, t % groups);
        let (m0, m1) = (c * cols, ((c + 1) * cols).min(m));
        let (n0, n1) = (g * TILE_ROWS, ((g + 1) * TILE_ROWS).min(n));
        let xs = &xq[n0 * xrow..n1 * xrow];
        let row = |i: usize| &xs[i * xrow..(i + 1) * xrow];
        let rows4 = (n1 - n0 == 4).then(|| [row(0), row(1), row(2), row(3)]);
        let put = |i: usize, j: usize, y: f32| {
            // SAFETY: element ((n0 + i), (m0 + j)) belongs to tile (c, g) alone.
            unsafe { output.write((n0 + i) * m + m0 + j, y) };
        };
        let ws = &w[m0 * wrow..m1 * wrow];
        // Pairs of weight rows through the tile kernel, then what is left one weight row at a
        // time: every kernel computes an element identically, so the split does not matter.
        let mut done = 0;
        if let (Some(tile), Some(rows)) = (tile, rows4) {
            for (p, pair) in ws.chunks_exact(2 * wrow).enumerate() {
                let y = tile([&pair[..wrow], &pair[wrow..]], rows);
                for (c, yc) in y.iter().enumerate() {
                    yc.iter().enumerate().for_each(|(i, &v)| put(i, 2 * p + c, v));
                }
                done = 2 * p + 2;
            }
        }
        for (j, wr) in ws.chunks_exact(wrow).enumerate().skip(done) {
            match (dot4, rows4) {
                (Some(dot4), Some(rows)) => dot4(wr, rows).into_iter().enumerate().for_each(|(i, y)| put(i, j, y)),
                _ => xs.chunks_exact(xrow).enumerate().for_each(|(i, xr)| put(i, j, dot(wr, xr))),
            }
        }
    });
    Ok(out)
}

/// [`mat_mul`] over a packed weight (see `kernels::packed`) with its tile kernel: tasks cover
/// a run of sixteen-row groups by up to four activation rows, and each row's arithmetic is the
/// same whatever tile it falls in.
pub(crate) fn mat_mul_packed(
    kernels: &Kernels,
    threads: usize,
    x: &[f32],
    w: &PackedWeight,
    tile: PackedTileFn,
) -> Result<Vec<f32>, String> {
    let (m, k) = (w.m, w.k);
    if !x.len().is_multiple_of(k) {
        return Err(format!("activations hold {} values, not rows of {k}", x.len()));
    }
    let n = x.len() / k;
    let mut out = vec![0f32; n * m];
    if n == 0 {
        return Ok(out);
    }
    let rows = PackedRows::new(w.kind, x, k, |vdt, x, o| kernels.quantize(vdt, x, o));
    let row_tiles = n.div_ceil(TILE_ROWS);
    let groups = w.groups();
    let per = units_per_task(groups, w.kind.group_bytes(w.nb), 1, row_tiles, threads);
    let chunks = groups.div_ceil(per);
    let output = Output { ptr: out.as_mut_ptr(), len: out.len() };
    let (output, rows) = (&output, &rows);
    // As in `mat_mul`: consecutive tasks share their weight groups.
    (0..chunks * row_tiles).into_par_iter().for_each(|t| {
        let (c, rt) = (t / row_tiles, t % row_tiles);
        let (n0, n1) = (rt * TILE_ROWS, ((rt + 1) * TILE_ROWS).min(n));
        let ids: [usize; TILE_ROWS] = std::array::from_fn(|i| n0 + i);
        let ids = &ids[..n1 - n0];
        let mut y = [[0f32; ROWS]; TILE_ROWS];
        for g in c * per..((c + 1) * per).min(groups) {
            tile(w, g, rows, ids, &mut y[..ids.len()]);
            for (i, yr) in y[..ids.len()].iter().enumerate() {
                for (r, &v) in yr.iter().enumerate().take(m.saturating_sub(g * ROWS)) {
                    // SAFETY: element (n0 + i, g * ROWS + r) belongs to this task alone.
                    unsafe { output.write((n0 + i) * m + g * ROWS + r, v) };
                }
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    #[test]
    fn f32_matmul_matches_hand_computation() {
        let x = [1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0];
        let w: Vec<u8> = [1.0f32, 0.0, 0.0, 0.0, 1.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for isa in [Isa::Scalar, Isa::detect()] {
            let k = Kernels::new(isa).unwrap();
            let y = mat_mul(&k, 2, &x, 3, &w, DType::F32, 2).unwrap();
            assert_eq!(y, vec![1.0, 5.0, -1.0, 2.5]);
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_batch() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let k = Kernels::new(Isa::detect()).unwrap();
        let types = [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K,
            DType::F16,
            DType::NVFP4,
            DType::I8,
            DType::F8_E4M3,
        ];
        for wtype in types {
            // Plain types get a row length that leaves partial SIMD chunks.
            let (m, cols, n) = (19, if wtype.is_quantized() { 256 } else { 261 }, 9);
            let w: Vec<u8> = (0..m).flat_map(|_| crate::kernels::testing::random_row(wtype, cols, &mut rng)).collect();
            let x = crate::kernels::testing::random_f32(n * cols, &mut rng);
            let all = mat_mul(&k, 2, &x, cols, &w, wtype, m).unwrap();
            for (r, xr) in x.chunks(cols).enumerate() {
                let one = mat_mul(&k, 2, xr, cols, &w, wtype, m).unwrap();
                assert_eq!(one, all[r * m..(r + 1) * m], "{wtype} row {r}");
            }
        }
    }

    #[test]
    fn packed_rows_do_not_depend_on_their_batch_and_match_the_block_kernels() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let k = Kernels::new(Isa::detect()).unwrap();
        for wtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
            let Some(tile) = k.packed(wtype) else {
                eprintln!("no packed kernel for {wtype} here: skipped");
                continue;
            };
            let kind = crate::kernels::packed::PackKind::of(wtype).unwrap();
            let (m, cols, n) = (37, if matches!(wtype, DType::Q4_K | DType::Q6_K) { 512 } else { 288 }, 9);
            let w: Vec<u8> = (0..m).flat_map(|_| crate::kernels::testing::random_row(wtype, cols, &mut rng)).collect();
            let x = crate::kernels::testing::random_f32(n * cols, &mut rng);
            let packed = PackedWeight::pack(kind, &w, m, cols, &|_| {}).unwrap();
            let all = mat_mul_packed(&k, 3, &x, &packed, tile).unwrap();
            let blocks = mat_mul(&k, 3, &x, cols, &w, wtype, m).unwrap();
            for (r, xr) in x.chunks(cols).enumerate() {
                let one = mat_mul_packed(&k, 2, xr, &packed, tile).unwrap();
                assert_eq!(one, all[r * m..(r + 1) * m], "{wtype} row {r}");
            }
            for (i, (a, b)) in all.iter().zip(&blocks).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{wtype} element {i}: {a} vs {b}");
            }
            assert!(mat_mul_packed(&k, 1, &x[..cols + 1], &packed, tile).is_err());
        }
    }

    #[test]
    fn every_tile_shape_covers_the_output() {
        let k = Kernels::new(Isa::detect()).unwrap();
        for (n, m) in [(1, 1), (1, 100), (3, 7), (9, 33), (17, 5)] {
            let x = vec![1.0f32; n * 32];
            let w: Vec<u8> = (0..m * 32).flat_map(|i| ((i / 32) as f32).to_le_bytes()).collect();
            let y = mat_mul(&k, 3, &x, 32, &w, DType::F32, m).unwrap();
            for r in 0..n {
                for c in 0..m {
                    assert_eq!(y[r * m + c], 32.0 * c as f32, "n={n} m={m} ({r},{c})");
                }
            }
        }
    }
}
