//! Causal attention over an F32 or F16 KV cache, with grouped KV heads and an optional sliding
//! window, over a contiguous cache (`Attention`) or one in fixed-size blocks (`PagedAttention`).
//! One task per (query row, head); two passes over the visible cache rows (scores, then the
//! softmax-weighted sum of values), everything accumulated in f32. Both ops share the per-head
//! kernel and differ only in which cache row holds position `j`, so a paged cache whose block
//! table is the identity gives bit for bit what the contiguous one gives, and a row's result
//! never depends on the other rows of the batch or on how the tasks fall on threads.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::kernels::{LaneFns, LaneScratch, LaneTile, VecFns};

/// A K or V cache: f32 values, or the little-endian bytes of f16 values.
pub(crate) enum Kv<'a> {
    F32(Cow<'a, [f32]>),
    F16(&'a [u8]),
}

impl Kv<'_> {
    /// Elements available.
    fn len(&self) -> usize {
        match self {
            Kv::F32(v) => v.len(),
            Kv::F16(b) => b.len() / 2,
        }
    }
}

pub(crate) struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
    /// Rows of the K and V caches.
    pub cache_rows: usize,
}

impl AttentionShape {
    /// The first position a query at position `p` sees (its window's start).
    fn first_visible(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }
}

/// Where position `j` of query row `n` is cached.
#[derive(Clone, Copy)]
pub(crate) enum Layout<'a> {
    /// In cache row `j` (`Attention`).
    Contiguous,
    /// In cache row `tables[n * width + j / block_size] * block_size + j % block_size`
    /// (`PagedAttention`).
    Paged { tables: &'a [i32], width: usize, block_size: usize },
}

/// Per-task scratch: the scores of one head, the cache rows of the visible positions, and where
/// the head's slice of each starts.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    rows: Vec<usize>,
    at: Vec<usize>,
}

/// `q` is `[n, n_heads * head_dim]`; `k` and `v` are `[cache_rows, n_kv_heads * head_dim]`;
/// `layout` says where each row's positions are cached. Positions past the cache (or past a
/// row's block table) and table entries outside the cache are errors, found before any work.
pub(crate) fn attention(
    vf: VecFns,
    q: &[f32],
    k: &Kv<'_>,
    v: &Kv<'_>,
    pos: &[i32],
    s: &AttentionShape,
    layout: Layout<'_>,
) -> Result<Vec<f32>, String> {
    let (hd, heads) = (s.head_dim, s.n_heads);
    check_positions(pos, s, layout)?;
    let kv_width = s.n_kv_heads * hd;
    if k.len() < s.cache_rows * kv_width || v.len() < s.cache_rows * kv_width {
        return Err("the KV cache is smaller than its shape".into());
    }
    let width = heads * hd;
    let mut out = vec![0f32; pos.len() * width];
    if hd == 0 || s.n_kv_heads == 0 || q.len() < out.len() {
        return Ok(out);
    }
    let group = (heads / s.n_kv_heads).max(1);
    let lanes = match (vf.lanes, k, v) {
        (Some(lanes), Kv::F32(_), Kv::F32(_)) | (Some(lanes), Kv::F16(_), Kv::F16(_)) => Some(lanes),
        _ => None,
    };
    if let Some(lanes) = lanes {
        by_lanes(lanes, &Inputs { q, k, v, pos, s, layout }, &mut out);
        return Ok(out);
    }
    let cache = Cache { vf, k, v, kv_width, scale: s.scale };
    out.par_chunks_mut(hd).enumerate().for_each_init(Scratch::default, |scratch, (idx, o)| {
        let (n, head) = (idx / heads, idx % heads);
        let p = pos[n] as usize;
        let lo = s.first_visible(p);
        let qrow = &q[n * width + head * hd..][..hd];
        let kv_off = (head / group) * hd;
        let Scratch { scores, rows, at } = scratch;
        match layout {
            Layout::Contiguous => cache.head(qrow, kv_off, lo..=p, scores, at, o),
            Layout::Paged { tables, width: blocks, block_size: bs } => {
                // The cache rows of positions lo..=p, block by block.
                rows.clear();
                let table = &tables[n * blocks..][..blocks];
                for (b, &block) in table.iter().enumerate().take(p / bs + 1).skip(lo / bs) {
                    let (start, base) = (b * bs, block as usize * bs);
                    rows.extend((lo.max(start)..=p.min(start + bs - 1)).map(|j| base + j - start));
                }
                cache.head(qrow, kv_off, rows.iter().copied(), scores, at, o)
            }
        }
    });
    Ok(out)
}

/// What one attention op reads (the arguments of [`attention`]).
#[derive(Clone, Copy)]
struct Inputs<'a, 'b> {
    q: &'a [f32],
    k: &'a Kv<'b>,
    v: &'a Kv<'b>,
    pos: &'a [i32],
    s: &'a AttentionShape,
    layout: Layout<'a>,
}

/// [`attention`] by a lane kernel: the heads of rows that read the same cache rows (every row of
/// a contiguous cache, rows with equal block tables in a paged one) that share a KV head go
/// sixteen to a tile.
fn by_lanes(lanes: LaneFns, op: &Inputs<'_, '_>, out: &mut [f32]) {
    let Inputs { q, k, v, pos, s, layout } = *op;
    let (hd, heads) = (s.head_dim, s.n_heads);
    let (width, kv_width) = (heads * hd, s.n_kv_heads * hd);
    let group = (heads / s.n_kv_heads).max(1);
    let same_rows = |a: usize, b: usize| match layout {
        Layout::Contiguous => true,
        Layout::Paged { tables, width, .. } => tables[a * width..][..width] == tables[b * width..][..width],
    };
    // Tiles of (row, head) lanes.
    let mut tiles: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut start = 0;
    while start < pos.len() {
        let end = (start + 1..pos.len()).find(|&n| !same_rows(start, n)).unwrap_or(pos.len());
        for kv_head in 0..s.n_kv_heads {
            let run: Vec<(usize, usize)> =
                (start..end).flat_map(|n| (0..group).map(move |g| (n, kv_head * group + g))).collect();
            tiles.extend(run.chunks(16).map(<[_]>::to_vec));
        }
        start = end;
    }
    let results: Vec<Vec<f32>> = tiles
        .par_iter()
        .map_init(LaneScratch::default, |scratch, tile| {
            let (n0, head0) = tile[0];
            let lo = tile.iter().map(|&(n, _)| s.first_visible(pos[n] as usize)).min().unwrap_or(0);
            let hi = tile.iter().map(|&(n, _)| pos[n] as usize).max().unwrap_or(0);
            let kv_off = (head0 / group) * hd;
            let at: Vec<usize> = match layout {
                Layout::Contiguous => (lo..=hi).map(|j| j * kv_width + kv_off).collect(),
                Layout::Paged { tables, width: blocks, block_size: bs } => {
                    let table = &tables[n0 * blocks..][..blocks];
                    (lo..=hi).map(|j| (table[j / bs] as usize * bs + j % bs) * kv_width + kv_off).collect()
                }
            };
            let mut qt = vec![0f32; 16 * hd.next_multiple_of(16)];
            let (mut first, mut last) = ([0i32; 16], [0i32; 16]);
            for (l, &(n, head)) in tile.iter().enumerate() {
                for (d, &x) in q[n * width + head * hd..][..hd].iter().enumerate() {
                    qt[16 * d + l] = x;
                }
                let p = pos[n] as usize;
                (first[l], last[l]) = ((s.first_visible(p) - lo) as i32, (p + 1 - lo) as i32);
            }
            let t = LaneTile { qt: &qt, at: &at, first, last, head_dim: hd, scale: s.scale };
            let mut o = vec![0f32; 16 * hd];
            match (k, v) {
                (Kv::F16(k), Kv::F16(v)) => (lanes.f16)(&t, k, v, scratch, &mut o),
                (Kv::F32(k), Kv::F32(v)) => (lanes.f32)(&t, k, v, scratch, &mut o),
                _ => unreachable!("`attention` takes the lane kernels only for caches of one type"),
            }
            o
        })
        .collect();
    for (tile, o) in tiles.iter().zip(&results) {
        for (l, &(n, head)) in tile.iter().enumerate() {
            for (d, y) in out[n * width + head * hd..][..hd].iter_mut().enumerate() {
                *y = o[16 * d + l];
            }
        }
    }
}

/// Every position inside the cache (through its row's block table for a paged cache), and every
/// block a row reads inside the cache; entries of blocks no row reads are not looked at.
fn check_positions(pos: &[i32], s: &AttentionShape, layout: Layout<'_>) -> Result<(), String> {
    let (tables, width, bs) = match layout {
        Layout::Contiguous => {
            return match pos.iter().find(|&&p| p < 0 || p as usize >= s.cache_rows) {
                Some(bad) => Err(format!("position {bad} is outside the cache of {} rows", s.cache_rows)),
                None => Ok(()),
            };
        }
        Layout::Paged { tables, width, block_size } => (tables, width, block_size),
    };
    if bs == 0 || tables.len() < pos.len() * width {
        return Err(format!("block tables of {} entries for {} rows of {width}", tables.len(), pos.len()));
    }
    let cache_blocks = s.cache_rows / bs;
    for (n, &p) in pos.iter().enumerate() {
        if p < 0 || p as usize >= width * bs {
            return Err(format!("position {p} of row {n} is outside its table of {width} blocks of {bs}"));
        }
        let p = p as usize;
        let lo = s.first_visible(p);
        let table = &tables[n * width..][..width];
        if let Some(bad) = table[lo / bs..=p / bs].iter().find(|&&b| b < 0 || b as usize >= cache_blocks) {
            return Err(format!("block {bad} in the table of row {n} is outside the cache of {cache_blocks} blocks"));
        }
    }
    Ok(())
}

/// The K and V caches with what every head needs to read them.
struct Cache<'a, 'b> {
    vf: VecFns,
    k: &'a Kv<'b>,
    v: &'a Kv<'b>,
    kv_width: usize,
    scale: f32,
}

impl Cache<'_, '_> {
    /// One head of one query row over the cache rows `rows` (its visible positions in order):
    /// `o = softmax(scale * q·k) · v`, summed in the order of `rows` whatever the batch.
    #[inline(always)]
    fn head(
        &self,
        qrow: &[f32],
        kv_off: usize,
        rows: impl Iterator<Item = usize>,
        scores: &mut Vec<f32>,
        at: &mut Vec<usize>,
        o: &mut [f32],
    ) {
        let vf = self.vf;
        // Where each visible row's slice of this head starts, in elements.
        at.clear();
        at.extend(rows.map(|j| j * self.kv_width + kv_off));
        scores.clear();
        scores.resize(at.len(), 0.0);
        match self.k {
            Kv::F32(k) => (vf.dot_f32)(qrow, k, at, scores),
            Kv::F16(k) => (vf.dot_f16)(qrow, k, at, scores),
        }
        for s in scores.iter_mut() {
            *s *= self.scale;
        }
        // The maximum is exact in any order: eight running maxima, not one serial chain.
        let mut lanes = [f32::NEG_INFINITY; 8];
        for chunk in scores.chunks(8) {
            for (m, &s) in lanes.iter_mut().zip(chunk) {
                *m = m.max(s);
            }
        }
        let max = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        match self.v {
            Kv::F32(v) => (vf.axpy_f32)(o, scores, v, at),
            Kv::F16(v) => (vf.axpy_f16)(o, scores, v, at),
        }
        let inv = 1.0 / sum;
        for x in o.iter_mut() {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kernels::{Isa, Kernels};

    fn shape(window: Option<usize>) -> AttentionShape {
        AttentionShape { n_heads: 2, n_kv_heads: 1, head_dim: 2, scale: 1.0, window, cache_rows: 3 }
    }

    #[test]
    fn one_visible_row_returns_its_value() {
        let vf = Kernels::new(Isa::detect()).unwrap().vec_fns();
        let k = Kv::F32(Cow::Owned(vec![1.0, 0.0, 0.0, 1.0, 5.0, 5.0]));
        let v = Kv::F32(Cow::Owned(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let q = [1.0, 1.0, -1.0, 0.5];
        let y = attention(vf, &q, &k, &v, &[0], &shape(None), Layout::Contiguous).unwrap();
        assert_eq!(y, vec![1.0, 2.0, 1.0, 2.0]);
        // A window of 1 at position 2 sees row 2 only.
        let y = attention(vf, &q, &k, &v, &[2], &shape(Some(1)), Layout::Contiguous).unwrap();
        assert_eq!(y, vec![5.0, 6.0, 5.0, 6.0]);
    }

    #[test]
    fn equal_scores_average_values_and_bad_positions_fail() {
        let vf = Kernels::new(Isa::Scalar).unwrap().vec_fns();
        let k = Kv::F32(Cow::Owned(vec![0.0; 6]));
        let v = Kv::F32(Cow::Owned(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let y = attention(vf, &[1.0, 1.0, 1.0, 1.0], &k, &v, &[1], &shape(None), Layout::Contiguous).unwrap();
        assert_eq!(y, vec![2.0, 3.0, 2.0, 3.0]);
        assert!(attention(vf, &[1.0; 4], &k, &v, &[3], &shape(None), Layout::Contiguous).is_err());
        assert!(attention(vf, &[1.0; 4], &k, &v, &[-1], &shape(None), Layout::Contiguous).is_err());
    }

    #[test]
    fn paged_reads_the_blocks_its_table_names() {
        // Blocks of 2 rows; equal scores average the values of the visible positions.
        let vf = Kernels::new(Isa::detect()).unwrap().vec_fns();
        let s = AttentionShape { n_heads: 1, n_kv_heads: 1, head_dim: 1, scale: 1.0, window: None, cache_rows: 6 };
        let k = Kv::F32(Cow::Owned(vec![0.0; 6]));
        let v = Kv::F32(Cow::Owned(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]));
        let paged = |tables: &[i32], pos: &[i32], window: Option<usize>| {
            let s = AttentionShape { window, ..s };
            let layout = Layout::Paged { tables, width: tables.len() / pos.len(), block_size: 2 };
            attention(vf, &[1.0; 2][..pos.len()], &k, &v, pos, &s, layout)
        };
        // Positions 0 and 1 in block 2 (rows 4, 5), position 2 in block 0 (row 0).
        assert_eq!(paged(&[2, 0], &[2], None).unwrap(), vec![(16.0 + 32.0 + 1.0) / 3.0]);
        // Two rows, two tables, one batch; the second row's table is padded with -1.
        assert_eq!(paged(&[2, 0, 1, -1], &[2, 1], None).unwrap(), vec![49.0 / 3.0, 6.0]);
        // Past the table, a block outside the cache, a negative position: errors.
        assert!(paged(&[2, 0], &[4], None).is_err());
        assert!(paged(&[2, 3], &[3], None).is_err());
        assert!(paged(&[-1, 0], &[2], None).is_err());
        assert!(paged(&[2, 0], &[-1], None).is_err());
        // A block the window hides is not needed, so its entry is not looked at.
        assert_eq!(paged(&[-1, 1], &[3], Some(2)).unwrap(), vec![6.0]);
    }

    /// `n` values in [-2, 2] from `rng`.
    fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
    }

    /// A K or V cache of random values, F16 or F32.
    enum Stored {
        F32(Vec<f32>),
        F16(Vec<u8>),
    }

    impl Stored {
        fn random(rng: &mut StdRng, n: usize, f16: bool) -> Stored {
            let v = values(rng, n);
            if f16 {
                Stored::F16(v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())
            } else {
                Stored::F32(v)
            }
        }

        fn kv(&self) -> Kv<'_> {
            match self {
                Stored::F32(v) => Kv::F32(Cow::Borrowed(v)),
                Stored::F16(b) => Kv::F16(b),
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A paged cache whose table is the identity is the contiguous cache, bit for bit.
        #[test]
        fn paged_on_identity_tables_is_attention(
            kv_heads in 1usize..=3, group in 1usize..=3, hd in 1usize..=40, bs in 1usize..=6,
            blocks in 1usize..=6, n in 1usize..=4, window in proptest::option::of(1usize..=10),
            f16 in any::<bool>(), scalar in any::<bool>(), seed in any::<u64>(),
        ) {
            let vf = Kernels::new(if scalar { Isa::Scalar } else { Isa::detect() }).unwrap().vec_fns();
            let mut rng = StdRng::seed_from_u64(seed);
            let (heads, rows) = (kv_heads * group, blocks * bs);
            let s = AttentionShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, scale: 0.4, window, cache_rows: rows };
            let q = values(&mut rng, n * heads * hd);
            let (ks, vs) = (Stored::random(&mut rng, rows * kv_heads * hd, f16), Stored::random(&mut rng, rows * kv_heads * hd, f16));
            let (k, v) = (ks.kv(), vs.kv());
            let pos: Vec<i32> = (0..n).map(|_| rng.gen_range(0..rows as i32)).collect();
            let tables: Vec<i32> = (0..n).flat_map(|_| 0..blocks as i32).collect();
            let want = attention(vf, &q, &k, &v, &pos, &s, Layout::Contiguous).unwrap();
            let layout = Layout::Paged { tables: &tables, width: blocks, block_size: bs };
            let got = attention(vf, &q, &k, &v, &pos, &s, layout).unwrap();
            prop_assert_eq!(bits(&got), bits(&want));
        }

        /// The detected kernels (sixteen-head tiles, where the CPU has them) agree with the
        /// scalar ones, and each row gives the same bits alone as in a batch whose rows share
        /// its cache (and so its tiles).
        #[test]
        fn detected_kernels_match_scalar_and_rows_stand_alone(
            kv_heads in 1usize..=3, group in 1usize..=7, hd in 1usize..=80, rows in 1usize..=40,
            n in 1usize..=12, window in proptest::option::of(1usize..=12), f16 in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let fast = Kernels::new(Isa::detect()).unwrap().vec_fns();
            let scalar = Kernels::new(Isa::Scalar).unwrap().vec_fns();
            let mut rng = StdRng::seed_from_u64(seed);
            let heads = kv_heads * group;
            let s = AttentionShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, scale: 0.35, window, cache_rows: rows };
            let width = hd * heads;
            let q = values(&mut rng, n * width);
            let (ks, vs) = (Stored::random(&mut rng, rows * kv_heads * hd, f16), Stored::random(&mut rng, rows * kv_heads * hd, f16));
            let (k, v) = (ks.kv(), vs.kv());
            // A prompt's consecutive positions, then a few anywhere in the cache.
            let start = rng.gen_range(0..rows);
            let pos: Vec<i32> = (0..n).map(|i| if i < n / 2 { (start + i).min(rows - 1) } else { rng.gen_range(0..rows) } as i32).collect();
            let got = attention(fast, &q, &k, &v, &pos, &s, Layout::Contiguous).unwrap();
            let want = attention(scalar, &q, &k, &v, &pos, &s, Layout::Contiguous).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                prop_assert!((a - b).abs() <= 1e-4, "element {}: {} against {}", i, a, b);
            }
            for r in 0..n {
                let alone = attention(fast, &q[r * width..][..width], &k, &v, &pos[r..=r], &s, Layout::Contiguous).unwrap();
                prop_assert_eq!(bits(&alone), bits(&got[r * width..][..width]));
            }
        }

        /// Each row gives the same bits alone, in a batch, and in a batch in another order.
        #[test]
        fn paged_rows_do_not_depend_on_the_batch(
            kv_heads in 1usize..=2, group in 1usize..=4, hd in 1usize..=72, bs in 1usize..=5,
            cache_blocks in 1usize..=8, n in 1usize..=9, window in proptest::option::of(1usize..=12),
            f16 in any::<bool>(), seed in any::<u64>(),
        ) {
            let vf = Kernels::new(Isa::detect()).unwrap().vec_fns();
            let mut rng = StdRng::seed_from_u64(seed);
            let (heads, rows) = (kv_heads * group, cache_blocks * bs);
            let s = AttentionShape { n_heads: heads, n_kv_heads: kv_heads, head_dim: hd, scale: 0.3, window, cache_rows: rows };
            let width = hd * heads;
            let q = values(&mut rng, n * width);
            let (ks, vs) = (Stored::random(&mut rng, rows * kv_heads * hd, f16), Stored::random(&mut rng, rows * kv_heads * hd, f16));
            let (k, v) = (ks.kv(), vs.kv());
            // Every row its own random, non-contiguous table over the cache's blocks.
            let mut tables = Vec::new();
            for _ in 0..n {
                let mut blocks: Vec<i32> = (0..cache_blocks as i32).collect();
                blocks.shuffle(&mut rng);
                tables.extend(blocks);
            }
            let pos: Vec<i32> = (0..n).map(|_| rng.gen_range(0..rows as i32)).collect();
            fn paged(tables: &[i32], width: usize, block_size: usize) -> Layout<'_> {
                Layout::Paged { tables, width, block_size }
            }
            let batch = attention(vf, &q, &k, &v, &pos, &s, paged(&tables, cache_blocks, bs)).unwrap();
            for r in 0..n {
                let alone = attention(
                    vf, &q[r * width..][..width], &k, &v, &pos[r..=r], &s,
                    paged(&tables[r * cache_blocks..][..cache_blocks], cache_blocks, bs),
                ).unwrap();
                prop_assert_eq!(bits(&alone), bits(&batch[r * width..][..width]));
            }
            let order: Vec<usize> = (0..n).rev().collect();
            let pick = |v: &[f32], w: usize| order.iter().flat_map(|&r| v[r * w..][..w].to_vec()).collect::<Vec<f32>>();
            let rev_tables: Vec<i32> = order.iter().flat_map(|&r| tables[r * cache_blocks..][..cache_blocks].to_vec()).collect();
            let rev_pos: Vec<i32> = order.iter().map(|&r| pos[r]).collect();
            let reversed = attention(vf, &pick(&q, width), &k, &v, &rev_pos, &s, paged(&rev_tables, cache_blocks, bs)).unwrap();
            prop_assert_eq!(bits(&reversed), bits(&pick(&batch, width)));
        }
    }
}
