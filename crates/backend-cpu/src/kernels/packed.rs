//! Weights repacked for sixteen-row integer kernels (AVX-512 VNNI).
//!
//! The block kernels multiply one weight row at a time, and for one activation row (token
//! generation) most of their work is unpacking a block and converting its scales. Here sixteen
//! weight rows are interleaved so that one `vpdpbusd` multiplies four values of each of the
//! sixteen rows by the same four activation values (one broadcast 32-bit word), and the sixteen
//! rows' scales lie side by side so that one conversion serves them all.
//!
//! A packed weight is a series of groups of sixteen rows (the last one padded with zero rows).
//! A group holds, for its `nb` blocks of 32 values: the quants of every block (`nb *
//! quant_bytes`), then the sixteen f16 scales of every block (`nb * 32`), then, for Q4_1, the
//! sixteen f16 mins of every block. Quants are stored as unsigned bytes, four values of one row
//! per 32-bit lane:
//! - Q4_0 and Q4_1: 64-byte word `j` (0..4) holds, in lane `r`, the 4-byte word `j` of row `r`'s
//!   16 quant bytes unchanged: low nibbles are values `4j..4j + 4`, high nibbles `16 + 4j..`.
//! - Q5_0 and Q5_1: the same four words of nibbles, then eight 64-bit masks of the fifth bits:
//!   bit `4r + t` of mask `i` is the fifth bit of value `4i + t` of row `r` (one
//!   `vmovdqu8` with zero-masking turns a mask into the 16s to add to the nibbles).
//! - Q8_0: 64-byte word `j` (0..8) holds, in lane `r`, values `4j..4j + 4` of row `r` plus 128.
//!
//! - Q4_K (super-blocks of 256): 32 words of nibbles, word `8j + w` holding in lane `r` bytes
//!   `32j + 4w..32j + 4w + 4` of row `r`'s 128 quant bytes (low nibbles: sub-block `2j`, high:
//!   `2j + 1`), then the eight 6-bit scales and the eight mins of every row as bytes (`16s + r`);
//!   the super-block scales `d` and `dmin` take the places of Q4_1's `d` and `m`.
//! - Q6_K (super-blocks of 256): the values plus 32 as bytes, word `j` (0..64) holding values
//!   `4j..4j + 4` (22% more than the source's 6 bits: four bit planes would cost the decode more
//!   than the memory), then the sixteen signed 8-bit scales of every row (`16g + r`).
//!
//! Every row's block sum is the same exact integer as the block kernels' (the offset, 8 or 128,
//! is taken back out with the activation block's exact sum); only the order of the f32
//! additions differs from the reference, and it is the same whatever the batch.

use std::ops::Range;

use rayon::prelude::*;
use tessera_core::DType;

use super::kquants::{Q8_K_BSUMS, Q8_K_QS, QK_K};
use super::legacy::QK;
use crate::memory::Line;

/// Weight rows per group.
pub(crate) const ROWS: usize = 16;
/// Source bytes packed between two calls of `release`.
const RELEASE_BYTES: usize = 1 << 20;

/// The weight types that have a packed layout (named as `DType` names them).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PackKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q6_K,
}

impl PackKind {
    #[cfg(test)]
    pub(crate) const ALL: [PackKind; 7] = [
        PackKind::Q4_0,
        PackKind::Q4_1,
        PackKind::Q5_0,
        PackKind::Q5_1,
        PackKind::Q8_0,
        PackKind::Q4_K,
        PackKind::Q6_K,
    ];

    pub(crate) fn of(w: DType) -> Option<PackKind> {
        match w {
            DType::Q4_0 => Some(PackKind::Q4_0),
            DType::Q4_1 => Some(PackKind::Q4_1),
            DType::Q5_0 => Some(PackKind::Q5_0),
            DType::Q5_1 => Some(PackKind::Q5_1),
            DType::Q8_0 => Some(PackKind::Q8_0),
            DType::Q4_K => Some(PackKind::Q4_K),
            DType::Q6_K => Some(PackKind::Q6_K),
            _ => None,
        }
    }

    pub(crate) fn dtype(self) -> DType {
        match self {
            PackKind::Q4_0 => DType::Q4_0,
            PackKind::Q4_1 => DType::Q4_1,
            PackKind::Q5_0 => DType::Q5_0,
            PackKind::Q5_1 => DType::Q5_1,
            PackKind::Q8_0 => DType::Q8_0,
            PackKind::Q4_K => DType::Q4_K,
            PackKind::Q6_K => DType::Q6_K,
        }
    }

    /// Bytes of one source block (of one row).
    fn block_bytes(self) -> usize {
        self.dtype().block_bytes()
    }

    /// Whether blocks are K-quant super-blocks of 256 values (met by Q8_K activations).
    pub(crate) fn super_blocks(self) -> bool {
        matches!(self, PackKind::Q4_K | PackKind::Q6_K)
    }

    /// Activation sums kept per block: Q4_K's eight 32-value sub-blocks, Q6_K's sixteen
    /// 16-value groups.
    pub(crate) fn sums_per_block(self) -> usize {
        match self {
            PackKind::Q4_K => 8,
            PackKind::Q6_K => 16,
            _ => 0,
        }
    }

    /// Where a source block's f16 scale is.
    fn d_at(self) -> usize {
        if self == PackKind::Q6_K {
            208
        } else {
            0
        }
    }

    /// Values per block.
    pub(crate) fn block_values(self) -> usize {
        self.dtype().block_len()
    }

    /// Bytes of the packed quants of one block of sixteen rows.
    pub(crate) fn quant_bytes(self) -> usize {
        match self {
            PackKind::Q8_0 => 8 * 64,
            PackKind::Q5_0 | PackKind::Q5_1 => 4 * 64 + 8 * 8,
            PackKind::Q4_0 | PackKind::Q4_1 => 4 * 64,
            PackKind::Q4_K => 32 * 64 + 2 * 128,
            PackKind::Q6_K => 64 * 64 + 256,
        }
    }

    /// Whether quants have a fifth bit, stored as masks after the nibbles.
    pub(crate) fn has_high_bits(self) -> bool {
        matches!(self, PackKind::Q5_0 | PackKind::Q5_1)
    }

    /// Where a source block's quant bytes (nibbles or bytes) start.
    fn quants_at(self) -> usize {
        match self {
            PackKind::Q4_0 | PackKind::Q8_0 => 2,
            PackKind::Q4_1 => 4,
            PackKind::Q5_0 => 6,
            PackKind::Q5_1 => 8,
            PackKind::Q4_K => 16,
            PackKind::Q6_K => 0,
        }
    }

    /// Whether blocks carry a min (`m * sum(x)` term) besides their scale.
    pub(crate) fn has_mins(self) -> bool {
        matches!(self, PackKind::Q4_1 | PackKind::Q5_1 | PackKind::Q4_K)
    }

    /// What the stored unsigned quants exceed the values by.
    pub(crate) fn offset(self) -> i32 {
        match self {
            PackKind::Q4_0 => 8,
            PackKind::Q5_0 => 16,
            PackKind::Q4_1 | PackKind::Q5_1 | PackKind::Q4_K => 0,
            PackKind::Q6_K => 32,
            PackKind::Q8_0 => 128,
        }
    }

    /// Bytes of one group of sixteen rows with `nb` blocks each.
    pub(crate) fn group_bytes(self, nb: usize) -> usize {
        nb * (self.quant_bytes() + if self.has_mins() { 64 } else { 32 })
    }
}

/// A weight matrix of `m` rows of `k` values in the packed layout.
pub(crate) struct PackedWeight {
    pub kind: PackKind,
    pub m: usize,
    pub k: usize,
    /// Blocks per row.
    pub nb: usize,
    lines: Vec<Line>,
}

impl PackedWeight {
    /// Packs `m` rows of `k` values of `kind`'s type from `w`; `None` when `k` is not whole
    /// blocks, `w` is too short, or the memory cannot be had. `release` is told each range of `w`
    /// once it is copied (in runs of about a megabyte, so that a mapped source can give its pages
    /// back while a large weight is packed), then the whole of it once more at the end.
    pub(crate) fn pack(
        kind: PackKind,
        w: &[u8],
        m: usize,
        k: usize,
        release: &(dyn Fn(Range<usize>) + Sync),
    ) -> Option<PackedWeight> {
        if k == 0 || !k.is_multiple_of(kind.block_values()) || m == 0 {
            return None;
        }
        let nb = k / kind.block_values();
        let wrow = nb * kind.block_bytes();
        if w.len() < m.checked_mul(wrow)? {
            return None;
        }
        let gbytes = kind.group_bytes(nb);
        let groups = m.div_ceil(ROWS);
        let total = groups.checked_mul(gbytes)?;
        let mut lines = Vec::new();
        lines.try_reserve_exact(total.div_ceil(64)).ok()?;
        lines.resize(total.div_ceil(64), Line([0; 64]));
        let bytes = &mut bytemuck::cast_slice_mut::<Line, u8>(&mut lines)[..total];
        let per_run = (RELEASE_BYTES / (ROWS * wrow)).max(1);
        bytes.par_chunks_mut(per_run * gbytes).enumerate().for_each(|(run, out)| {
            for (i, out) in out.chunks_mut(gbytes).enumerate() {
                let g = run * per_run + i;
                let rows = (g * ROWS..((g + 1) * ROWS).min(m)).map(|row| &w[row * wrow..(row + 1) * wrow]);
                pack_group(kind, nb, rows, out);
            }
            release(run * per_run * ROWS * wrow..((run + 1) * per_run * ROWS).min(m) * wrow);
        });
        // Page faults map neighbouring pages too, some in runs already released: once more, all.
        release(0..m * wrow);
        Some(PackedWeight { kind, m, k, nb, lines })
    }

    pub(crate) fn groups(&self) -> usize {
        self.m.div_ceil(ROWS)
    }

    /// The bytes of group `g`.
    pub(crate) fn group(&self, g: usize) -> &[u8] {
        let gbytes = self.kind.group_bytes(self.nb);
        &bytemuck::cast_slice::<Line, u8>(&self.lines)[g * gbytes..(g + 1) * gbytes]
    }

    /// Row `row` in its original block layout (`None` past the last row): lets a table read
    /// by both `GetRows` and `MatMul` (a tied embedding) be served from the packed copy alone.
    pub(crate) fn row(&self, row: usize) -> Option<Vec<u8>> {
        if row >= self.m {
            return None;
        }
        let (kind, nb) = (self.kind, self.nb);
        let (group, r) = (self.group(row / ROWS), row % ROWS);
        let qb = kind.quant_bytes();
        let (quants, scales) = group.split_at(nb * qb);
        let (ds, ms) = scales.split_at(nb * 32);
        let mut out = Vec::with_capacity(nb * kind.block_bytes());
        for b in 0..nb {
            let q = &quants[b * qb..(b + 1) * qb];
            if kind == PackKind::Q6_K {
                let u: [u8; QK_K] = std::array::from_fn(|i| q[(i / 4) * 64 + 4 * r + i % 4]);
                let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
                for c in 0..2 {
                    for l in 0..32 {
                        let v = [0, 32, 64, 96].map(|o| u[128 * c + l + o]);
                        ql[64 * c + l] = (v[0] & 0x0F) | ((v[2] & 0x0F) << 4);
                        ql[64 * c + l + 32] = (v[1] & 0x0F) | ((v[3] & 0x0F) << 4);
                        qh[32 * c + l] = (v[0] >> 4) | ((v[1] >> 4) << 2) | ((v[2] >> 4) << 4) | ((v[3] >> 4) << 6);
                    }
                }
                out.extend_from_slice(&ql);
                out.extend_from_slice(&qh);
                out.extend((0..16).map(|g| q[4096 + 16 * g + r]));
                out.extend_from_slice(&ds[b * 32 + 2 * r..b * 32 + 2 * r + 2]);
                continue;
            }
            out.extend_from_slice(&ds[b * 32 + 2 * r..b * 32 + 2 * r + 2]);
            if kind.has_mins() {
                out.extend_from_slice(&ms[b * 32 + 2 * r..b * 32 + 2 * r + 2]);
            }
            if kind == PackKind::Q4_K {
                let sc: [u8; 8] = std::array::from_fn(|sub| q[2048 + 16 * sub + r]);
                let mn: [u8; 8] = std::array::from_fn(|sub| q[2048 + 128 + 16 * sub + r]);
                let mut scales = [0u8; 12];
                for j in 0..4 {
                    scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    scales[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
                    scales[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
                }
                out.extend_from_slice(&scales);
                (0..32).for_each(|w| out.extend_from_slice(&q[w * 64 + 4 * r..w * 64 + 4 * r + 4]));
                continue;
            }
            if kind == PackKind::Q8_0 {
                (0..8).for_each(|j| out.extend(q[j * 64 + 4 * r..j * 64 + 4 * r + 4].iter().map(|v| v ^ 0x80)));
                continue;
            }
            if kind.has_high_bits() {
                let qh = (0..8).fold(0u32, |qh, i| qh | (((high_mask(q, i) >> (4 * r)) & 0xF) as u32) << (4 * i));
                out.extend_from_slice(&qh.to_le_bytes());
            }
            (0..4).for_each(|j| out.extend_from_slice(&q[j * 64 + 4 * r..j * 64 + 4 * r + 4]));
        }
        Some(out)
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lines.len() * 64
    }
}

/// Writes up to sixteen rows (`rows`) into one group `out` (zero-filled: missing rows stay zero,
/// with zero scales).
fn pack_group<'a>(kind: PackKind, nb: usize, rows: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) {
    let qb = kind.quant_bytes();
    let (quants, scales) = out.split_at_mut(nb * qb);
    let (ds, ms) = scales.split_at_mut(nb * 32);
    for (r, row) in rows.enumerate() {
        for (b, block) in row.chunks_exact(kind.block_bytes()).enumerate() {
            let d = kind.d_at();
            ds[b * 32 + 2 * r..b * 32 + 2 * r + 2].copy_from_slice(&block[d..d + 2]);
            let q = &mut quants[b * qb..(b + 1) * qb];
            if kind == PackKind::Q6_K {
                for (i, u) in q6_k_values(block).into_iter().enumerate() {
                    q[(i / 4) * 64 + 4 * r + i % 4] = u;
                }
                for g in 0..16 {
                    q[4096 + 16 * g + r] = block[192 + g];
                }
                continue;
            }
            if kind.has_mins() {
                ms[b * 32 + 2 * r..b * 32 + 2 * r + 2].copy_from_slice(&block[2..4]);
            }
            let qs = &block[kind.quants_at()..];
            if kind == PackKind::Q4_K {
                for (w, word) in qs[..128].chunks_exact(4).enumerate() {
                    q[w * 64 + 4 * r..w * 64 + 4 * r + 4].copy_from_slice(word);
                }
                let (sc, mn) = super::kquant_scales_mins(&block[4..16]);
                for sub in 0..8 {
                    q[2048 + 16 * sub + r] = sc[sub];
                    q[2048 + 128 + 16 * sub + r] = mn[sub];
                }
                continue;
            }
            if kind == PackKind::Q8_0 {
                for j in 0..8 {
                    for t in 0..4 {
                        q[j * 64 + 4 * r + t] = qs[4 * j + t] ^ 0x80;
                    }
                }
                continue;
            }
            for j in 0..4 {
                q[j * 64 + 4 * r..j * 64 + 4 * r + 4].copy_from_slice(&qs[4 * j..4 * j + 4]);
            }
            if kind.has_high_bits() {
                let h = qs_at_high(kind);
                let qh = u32::from_le_bytes([block[h], block[h + 1], block[h + 2], block[h + 3]]);
                for i in 0..8 {
                    let mask = high_mask(q, i) | (((qh >> (4 * i)) & 0xF) as u64) << (4 * r);
                    q[256 + 8 * i..256 + 8 * i + 8].copy_from_slice(&mask.to_le_bytes());
                }
            }
        }
    }
}

/// The 256 values of a Q6_K block plus 32 (0..64), in order.
fn q6_k_values(block: &[u8]) -> [u8; QK_K] {
    let mut u = [0u8; QK_K];
    for c in 0..2 {
        let (ql, qh) = (&block[64 * c..64 * c + 64], &block[128 + 32 * c..128 + 32 * c + 32]);
        for l in 0..32 {
            let o = 128 * c + l;
            u[o] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            u[o + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            u[o + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            u[o + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    u
}

/// Mask `i` of a packed Q5 block's fifth bits.
pub(crate) fn high_mask(q: &[u8], i: usize) -> u64 {
    let at = 256 + 8 * i;
    u64::from_le_bytes([q[at], q[at + 1], q[at + 2], q[at + 3], q[at + 4], q[at + 5], q[at + 6], q[at + 7]])
}

/// Where a Q5 source block's 32 fifth bits start.
fn qs_at_high(kind: PackKind) -> usize {
    kind.quants_at() - 4
}

/// Activation rows converted for the packed kernels: the vec-dot type's blocks (Q8_0, Q8_1 for
/// types with mins, Q8_K for K-quants) and, per block, the scale as f32, the Q8_1 sum term as
/// f32, the offset times the exact sum of the quants (Q4_0, Q5_0, Q8_0) and the K-quants'
/// partial sums.
pub(crate) struct PackedRows {
    pub q: Vec<u8>,
    /// Bytes of one row in `q`.
    pub row_bytes: usize,
    /// Bytes of one block in `q`, and where its 32 quants start.
    pub block_bytes: usize,
    pub quants_at: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub c: Vec<i32>,
    /// Q8_K: the sums of the quants of each 32-value sub-block (Q4_K, eight per block) or of each
    /// 16-value group (Q6_K, sixteen per block).
    pub sub: Vec<i32>,
    pub nb: usize,
}

impl PackedRows {
    /// `x` is `[n, k]`; `quantize` converts one row to the vec-dot type `vdt`.
    pub(crate) fn new(
        kind: PackKind,
        x: &[f32],
        k: usize,
        quantize: impl Fn(DType, &[f32], &mut [u8]) + Sync,
    ) -> PackedRows {
        let super_blocks = kind.super_blocks();
        let vdt = super::vec_dot_type(kind.dtype()).expect("every packed type has a vec-dot type");
        let block_bytes = vdt.block_bytes();
        // Q8_0 and Q8_1 end with their quants; Q8_K's come after its f32 scale.
        let quants_at = if super_blocks { Q8_K_QS } else { block_bytes - QK };
        let nb = k / kind.block_values();
        let row_bytes = nb * block_bytes;
        let n = x.len() / k.max(1);
        let mut q = vec![0u8; n * row_bytes];
        q.par_chunks_mut(row_bytes.max(1))
            .zip(x.par_chunks(k.max(1)))
            .with_min_len(8)
            .for_each(|(o, x)| quantize(vdt, x, o));
        let blocks = q.chunks_exact(block_bytes);
        if super_blocks {
            let d = blocks.clone().map(|b| super::f32_at(b, 0)).collect();
            let bsum =
                |b: &[u8], i: usize| i16::from_le_bytes([b[Q8_K_BSUMS + 2 * i], b[Q8_K_BSUMS + 2 * i + 1]]) as i32;
            // Q8_K keeps a sum per 16 values; a sum covers `width` of them.
            let per = kind.sums_per_block();
            let width = 16 / per;
            let sub =
                blocks.flat_map(|b| (0..per).map(move |i| (0..width).map(|t| bsum(b, width * i + t)).sum())).collect();
            let c = vec![0; n * nb];
            return PackedRows { q, row_bytes, block_bytes, quants_at, d, s: Vec::new(), c, sub, nb };
        }
        let off = kind.offset();
        let c = blocks.clone().map(|b| off * b[quants_at..quants_at + QK].iter().map(|&v| v as i8 as i32).sum::<i32>());
        let c = c.collect();
        let d = blocks.clone().map(|b| super::f16_at(b, 0)).collect();
        let s = if kind.has_mins() { blocks.map(|b| super::f16_at(b, 2)).collect() } else { Vec::new() };
        PackedRows { q, row_bytes, block_bytes, quants_at, d, s, c, sub: Vec::new(), nb }
    }
}

/// The packed kernel's arithmetic in portable Rust, lane by lane: the reference the SIMD kernels
/// must match exactly (the same integer sums, f32 operations in the same order).
#[cfg(test)]
pub(crate) fn tile_scalar(w: &PackedWeight, g: usize, x: &PackedRows, rows: &[usize], out: &mut [[f32; ROWS]]) {
    let (kind, nb) = (w.kind, w.nb);
    let group = w.group(g);
    let qb = kind.quant_bytes();
    let (quants, scales) = group.split_at(nb * qb);
    let (ds, ms) = scales.split_at(nb * 32);
    for (o, &n) in out.iter_mut().zip(rows) {
        let mut acc = [0f32; ROWS];
        let mut off = [0f32; ROWS];
        for b in 0..nb {
            let xb = &x.q[n * x.row_bytes + b * x.block_bytes + x.quants_at..][..kind.block_values()];
            let q = &quants[b * qb..(b + 1) * qb];
            let (dx, c) = (x.d[n * nb + b], x.c[n * nb + b]);
            if kind == PackKind::Q6_K {
                for r in 0..ROWS {
                    let mut isum = 0i32;
                    for g in 0..16 {
                        let mut dot = 0i32;
                        for (l, &xv) in xb[16 * g..16 * g + 16].iter().enumerate() {
                            let i = 16 * g + l;
                            dot += q[(i / 4) * 64 + 4 * r + i % 4] as i32 * xv as i8 as i32;
                        }
                        let sc = q[4096 + 16 * g + r] as i8 as i32;
                        isum += sc * (dot - 32 * x.sub[(n * nb + b) * 16 + g]);
                    }
                    let dw = super::f16_at(ds, b * 32 + 2 * r);
                    acc[r] = (dw * dx).mul_add(isum as f32, acc[r]);
                }
                continue;
            }
            if kind == PackKind::Q4_K {
                for r in 0..ROWS {
                    let (mut isum, mut summs) = (0i32, 0i32);
                    for sub in 0..8 {
                        let mut dot = 0i32;
                        for (l, &xv) in xb[32 * sub..32 * sub + 32].iter().enumerate() {
                            let byte = q[((sub / 2) * 8 + l / 4) * 64 + 4 * r + l % 4];
                            let nibble = if sub % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                            dot += nibble as i32 * xv as i8 as i32;
                        }
                        isum += q[2048 + 16 * sub + r] as i32 * dot;
                        summs += q[2048 + 128 + 16 * sub + r] as i32 * x.sub[(n * nb + b) * 8 + sub];
                    }
                    let (dw, dmin) = (super::f16_at(ds, b * 32 + 2 * r), super::f16_at(ms, b * 32 + 2 * r));
                    acc[r] = (dw * dx).mul_add(isum as f32, acc[r]);
                    off[r] = (-(dmin * dx)).mul_add(summs as f32, off[r]);
                }
                continue;
            }
            for r in 0..ROWS {
                let mut sum = 0i32;
                for (i, &xv) in xb.iter().enumerate() {
                    let wq = match kind {
                        PackKind::Q8_0 => q[(i / 4) * 64 + 4 * r + i % 4] as i32,
                        _ => {
                            let byte = q[((i % 16) / 4) * 64 + 4 * r + i % 4];
                            let nibble = (if i < 16 { byte & 0x0F } else { byte >> 4 }) as i32;
                            let high = kind.has_high_bits() && (high_mask(q, i / 4) >> (4 * r + i % 4)) & 1 == 1;
                            nibble | if high { 16 } else { 0 }
                        }
                    };
                    sum += wq * xv as i8 as i32;
                }
                let dw = super::f16_at(ds, b * 32 + 2 * r);
                acc[r] = (dw * dx).mul_add((sum - c) as f32, acc[r]);
                if kind.has_mins() {
                    off[r] = super::f16_at(ms, b * 32 + 2 * r).mul_add(x.s[n * nb + b], off[r]);
                }
            }
        }
        for r in 0..ROWS {
            o[r] = if kind.has_mins() { acc[r] + off[r] } else { acc[r] };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{random_f32, random_row};
    use crate::kernels::{quantize_row, scalar_dot};
    use rand::SeedableRng;

    #[test]
    fn packed_reference_matches_the_block_kernels_at_odd_shapes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for kind in PackKind::ALL {
            let wtype = kind.dtype();
            for (m, k, n) in [(1, 32, 1), (17, 96, 3), (33, 256, 2), (16, 64, 5)] {
                let k = k * kind.block_values() / 32;
                let w: Vec<u8> = (0..m).flat_map(|_| random_row(wtype, k, &mut rng)).collect();
                let x = random_f32(n * k, &mut rng);
                let packed = PackedWeight::pack(kind, &w, m, k, &|_| {}).unwrap();
                let rows = PackedRows::new(kind, &x, k, quantize_row);
                let dot = scalar_dot(wtype).unwrap();
                let wrow = wtype.bytes_for(k).unwrap();
                for g in 0..packed.groups() {
                    let mut out = vec![[0f32; ROWS]; n];
                    tile_scalar(&packed, g, &rows, &(0..n).collect::<Vec<_>>(), &mut out);
                    for (i, o) in out.iter().enumerate() {
                        let xr = &rows.q[i * rows.row_bytes..(i + 1) * rows.row_bytes];
                        for (r, &got) in o.iter().enumerate() {
                            let row = g * ROWS + r;
                            if row >= m {
                                assert_eq!(got, 0.0, "{wtype} padding row {row}");
                                continue;
                            }
                            let want = dot(&w[row * wrow..(row + 1) * wrow], xr);
                            let tol = 1e-4 * want.abs().max(1.0);
                            assert!((got - want).abs() <= tol, "{wtype} m={m} k={k} ({i},{row}): {got} vs {want}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rows_read_back_from_a_packed_weight_are_the_original_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for kind in PackKind::ALL {
            let (m, k) = (35, 3 * kind.block_values());
            let w: Vec<u8> = (0..m).flat_map(|_| random_row(kind.dtype(), k, &mut rng)).collect();
            let released = std::sync::Mutex::new(Vec::new());
            let packed = PackedWeight::pack(kind, &w, m, k, &|r| released.lock().unwrap().push(r)).unwrap();
            let wrow = w.len() / m;
            for row in 0..m {
                assert_eq!(packed.row(row).unwrap(), &w[row * wrow..(row + 1) * wrow], "{kind:?} row {row}");
            }
            assert!(packed.row(m).is_none());
            // Every source byte is released once copied, and all of it again at the end.
            assert_eq!(*released.lock().unwrap(), vec![0..w.len(), 0..w.len()]);
        }
    }

    #[test]
    fn packing_refuses_what_it_cannot_hold() {
        let none = &|_| {};
        assert!(PackedWeight::pack(PackKind::Q4_0, &[0; 18], 1, 31, none).is_none());
        assert!(PackedWeight::pack(PackKind::Q4_0, &[0; 17], 1, 32, none).is_none());
        assert!(PackedWeight::pack(PackKind::Q8_0, &[], 0, 32, none).is_none());
        let p = PackedWeight::pack(PackKind::Q4_1, &[0; 40], 2, 32, none).unwrap();
        assert_eq!((p.groups(), p.group(0).len()), (1, 256 + 64));
    }
}
