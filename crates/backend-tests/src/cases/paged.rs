//! PagedAttention over block tables (batches mixing decode rows and prefill chunks of sequences
//! of different lengths, shared prefix blocks, random non-contiguous tables, block sizes 1, 16
//! and 5) and StoreRows, alone and writing the rows a PagedAttention then reads, as a model does.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tessera_backend::{Backend, NodeId};
use tessera_core::DType;

use super::attention::encode;
use super::rng;
use crate::data;
use crate::harness::{graph_err, Case, CaseResult};
use crate::report::ConformanceReport;
use crate::tolerance;

/// `(heads, kv_heads, head_dim)`: plain, grouped, multi-query, wide, and an odd head size.
const HEADS: [(usize, usize, usize); 5] = [(4, 4, 64), (4, 2, 32), (6, 1, 64), (2, 1, 128), (3, 3, 20)];

/// Block sizes: one row per block, the usual 16, and an odd one.
const BLOCK_SIZES: [usize; 3] = [1, 16, 5];

/// One sequence of a batch step.
#[derive(Clone, Copy)]
struct Seq {
    /// Positions cached after this step.
    len: usize,
    /// Query rows this step computes: the last `rows` positions (1 when decoding).
    rows: usize,
    /// `(earlier sequence, positions)`: starts with the blocks that hold that many positions of
    /// the earlier sequence's prefix (as many whole blocks as neither sequence writes into).
    shares: Option<(usize, usize)>,
}

const fn seq(len: usize, rows: usize) -> Seq {
    Seq { len, rows, shares: None }
}

/// One decode row.
const DECODE: &[Seq] = &[seq(37, 1)];

/// Decode rows, a prefill chunk in the middle of a prompt, a prompt's first chunk, and a decode
/// row sharing the prefix blocks of the first sequence.
const MIXED: &[Seq] = &[seq(29, 1), seq(20, 7), Seq { len: 35, rows: 1, shares: Some((0, 24)) }, seq(5, 5), seq(41, 1)];

/// `(name, sequences, window)`.
const SCENARIOS: [(&str, &[Seq], Option<usize>); 4] =
    [("decode", DECODE, None), ("decode", DECODE, Some(17)), ("mixed", MIXED, None), ("mixed", MIXED, Some(6))];

/// A batch laid out in a paged cache.
struct Batch {
    block_size: usize,
    /// Rows of the cache: all blocks, used or not.
    cache_rows: usize,
    /// Columns of the block tables.
    width: usize,
    /// Per query row: its position, its sequence's table, and the cache row of its position.
    pos: Vec<i32>,
    tables: Vec<i32>,
    slots: Vec<i32>,
}

/// Lays `seqs` out in a cache of blocks of `block_size` handed out in random order, with three
/// blocks no sequence uses. Table entries no row needs (past a sequence's end, or before every
/// one of its rows' window) are -1.
fn layout(r: &mut StdRng, seqs: &[Seq], block_size: usize, window: Option<usize>) -> Batch {
    let bs = block_size;
    let blocks_of = |s: &Seq| s.len.div_ceil(bs);
    let first_written = |s: &Seq| s.len - s.rows;
    let shared: Vec<usize> = seqs
        .iter()
        .map(|s| {
            s.shares.map_or(0, |(from, positions)| {
                (positions / bs).min(first_written(&seqs[from]) / bs).min(first_written(s) / bs)
            })
        })
        .collect();
    let own: usize = seqs.iter().zip(&shared).map(|(s, m)| blocks_of(s) - m).sum();
    let mut pool: Vec<i32> = (0..(own + 3) as i32).collect();
    pool.shuffle(r);
    let mut free = pool.into_iter();
    let width = seqs.iter().map(blocks_of).max().unwrap_or(0) + 1;
    let mut tables_of: Vec<Vec<i32>> = Vec::new();
    for (s, &m) in seqs.iter().zip(&shared) {
        let mut table = vec![-1; width];
        for (b, entry) in table.iter_mut().enumerate().take(blocks_of(s)) {
            *entry = match s.shares {
                Some((from, _)) if b < m => tables_of[from][b],
                _ => free.next().unwrap_or(0),
            };
        }
        tables_of.push(table);
    }
    let mut batch = Batch {
        block_size: bs,
        cache_rows: (own + 3) * bs,
        width,
        pos: Vec::new(),
        tables: Vec::new(),
        slots: Vec::new(),
    };
    for (s, table) in seqs.iter().zip(&tables_of) {
        let mut table = table.clone();
        // A sliding-window cache may already have given back blocks no row can see.
        if let Some(w) = window {
            let lo = (first_written(s) + 1).saturating_sub(w);
            table[..lo / bs].iter_mut().for_each(|e| *e = -1);
        }
        for p in first_written(s)..s.len {
            batch.pos.push(p as i32);
            batch.tables.extend_from_slice(&table);
            batch.slots.push(table[p / bs] * bs as i32 + (p % bs) as i32);
        }
    }
    batch
}

/// PagedAttention over F32 and F16 caches: every head layout, block size and scenario.
pub fn check_paged_attention(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for cache in [DType::F32, DType::F16] {
        let mut r = rng(&format!("paged_attention {cache}"));
        let group = format!("paged_attention {cache}");
        for (heads, kv_heads, hd) in HEADS {
            for bs in BLOCK_SIZES {
                for (scenario, seqs, window) in SCENARIOS {
                    let b = layout(&mut r, seqs, bs, window);
                    let n = b.pos.len();
                    let q = data::values(&mut r, n * heads * hd, 2.0);
                    let k = encode(cache, &data::values(&mut r, b.cache_rows * kv_heads * hd, 2.0));
                    let v = encode(cache, &data::values(&mut r, b.cache_rows * kv_heads * hd, 2.0));
                    let name = format!(
                        "paged_attention {cache} {scenario} q[{n}, {heads}x{hd}] kv[{}, {kv_heads}x{hd}] block {bs} \
                         window {window:?}",
                        b.cache_rows
                    );
                    let scale = 1.0 / (hd as f32).sqrt();
                    Case::new(backend, &group, name, tolerance::attention(cache)).check(report, |c| {
                        let qn = c.f32(&[n, heads * hd], &q)?;
                        let kn = c.leaf(cache, &[b.cache_rows, kv_heads * hd], &k)?;
                        let vn = c.leaf(cache, &[b.cache_rows, kv_heads * hd], &v)?;
                        let y = paged(c, &b, [qn, kn, vn], (heads, kv_heads, hd), scale, window)?;
                        c.subject(y);
                        c.output(y)?;
                        Ok(())
                    });
                }
            }
        }
    }
}

/// Adds `PagedAttention` of `q, k, v` over `batch`'s positions and tables.
fn paged(
    c: &mut Case,
    batch: &Batch,
    [q, k, v]: [NodeId; 3],
    (heads, kv_heads, hd): (usize, usize, usize),
    scale: f32,
    window: Option<usize>,
) -> CaseResult<NodeId> {
    let pos = c.ids(&batch.pos)?;
    let tables = c.leaf(DType::I32, &[batch.pos.len(), batch.width], &data::i32_bytes(&batch.tables))?;
    c.g.paged_attention(q, k, v, pos, tables, heads, kv_heads, hd, scale, window, batch.block_size).map_err(graph_err)
}

/// `n` distinct slots in `0..rows`, in random order.
fn distinct_slots(r: &mut StdRng, rows: usize, n: usize) -> Vec<i32> {
    let mut all: Vec<i32> = (0..rows as i32).collect();
    all.shuffle(r);
    all.truncate(n);
    all
}

/// StoreRows into F32 and F16 destinations at random distinct slots, chained with Store and
/// with itself, and writing the K and V rows of a batch that a PagedAttention then reads.
pub fn check_store_rows(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for dst in [DType::F32, DType::F16] {
        let mut r = rng(&format!("store_rows {dst}"));
        let group = format!("store_rows {dst}");
        for (rows, cols, n) in [(8usize, 64usize, 1usize), (40, 96, 7), (5, 33, 5), (48, 128, 16)] {
            let src = data::values(&mut r, n * cols, 4.0);
            let slots = distinct_slots(&mut r, rows, n);
            let name = format!("store_rows {dst} src[{n}, {cols}] into [{rows}, {cols}] at slots {slots:?}");
            Case::new(backend, &group, name, tolerance::store()).check(report, |c| {
                let s = c.f32(&[n, cols], &src)?;
                let d = c.destination(dst, &[rows, cols])?;
                let sl = c.ids(&slots)?;
                let y = c.g.store_rows(s, d, sl).map_err(graph_err)?;
                c.subject(y);
                Ok(())
            });
        }
        // A Store, then two StoreRows of a computed source over it, each overwriting rows of
        // the one before.
        let (a, b, x) =
            (data::values(&mut r, 4 * 32, 4.0), data::values(&mut r, 3 * 32, 4.0), data::values(&mut r, 2 * 32, 4.0));
        let name = format!("store_rows {dst} after store and store_rows into [9, 32]");
        Case::new(backend, &group, name, tolerance::store()).check(report, |c| {
            let an = c.f32(&[4, 32], &a)?;
            let bn = c.f32(&[3, 32], &b)?;
            let xn = c.f32(&[2, 32], &x)?;
            let d = c.destination(dst, &[9, 32])?;
            let first = c.g.store(an, d, 2).map_err(graph_err)?;
            let slots = c.ids(&[8, 3, 0])?;
            let second = c.g.store_rows(bn, first, slots).map_err(graph_err)?;
            let computed = c.g.scale(xn, -0.5).map_err(graph_err)?;
            let slots = c.ids(&[0, 4])?;
            let third = c.g.store_rows(computed, second, slots).map_err(graph_err)?;
            c.subject(third);
            Ok(())
        });
    }
    check_written_then_read(backend, report);
}

/// One step of a paged model layer: the batch's new K and V rows go to their slots, and
/// PagedAttention reads them (and everything cached before) through the stores' results.
fn check_written_then_read(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for cache in [DType::F32, DType::F16] {
        let mut r = rng(&format!("store_rows paged_attention {cache}"));
        let group = format!("store_rows+paged_attn {cache}");
        for (heads, kv_heads, hd) in [(4usize, 2usize, 32usize), (6, 1, 64)] {
            for bs in BLOCK_SIZES {
                for window in [None, Some(6)] {
                    let b = layout(&mut r, MIXED, bs, window);
                    let (n, kv_width) = (b.pos.len(), kv_heads * hd);
                    let q = data::values(&mut r, n * heads * hd, 2.0);
                    let (k_new, v_new) =
                        (data::values(&mut r, n * kv_width, 2.0), data::values(&mut r, n * kv_width, 2.0));
                    let kc = encode(cache, &data::values(&mut r, b.cache_rows * kv_width, 2.0));
                    let vc = encode(cache, &data::values(&mut r, b.cache_rows * kv_width, 2.0));
                    let name = format!(
                        "store_rows + paged_attention {cache} q[{n}, {heads}x{hd}] kv[{}, {kv_heads}x{hd}] block {bs} \
                         window {window:?}",
                        b.cache_rows
                    );
                    let scale = 1.0 / (hd as f32).sqrt();
                    Case::new(backend, &group, name, tolerance::attention(cache)).check(report, |c| {
                        let qn = c.f32(&[n, heads * hd], &q)?;
                        let kn = c.f32(&[n, kv_width], &k_new)?;
                        let vn = c.f32(&[n, kv_width], &v_new)?;
                        let k_cache = c.leaf(cache, &[b.cache_rows, kv_width], &kc)?;
                        let v_cache = c.leaf(cache, &[b.cache_rows, kv_width], &vc)?;
                        let slots = c.ids(&b.slots)?;
                        let k_all = c.g.store_rows(kn, k_cache, slots).map_err(graph_err)?;
                        let v_all = c.g.store_rows(vn, v_cache, slots).map_err(graph_err)?;
                        let y = paged(c, &b, [qn, k_all, v_all], (heads, kv_heads, hd), scale, window)?;
                        c.subject(y);
                        c.output(y)?;
                        Ok(())
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_give_distinct_slots_and_share_only_unwritten_blocks() {
        let mut r = rng("layout");
        for bs in BLOCK_SIZES {
            for window in [None, Some(6)] {
                let b = layout(&mut r, MIXED, bs, window);
                assert_eq!(b.pos.len(), 15);
                assert_eq!(b.tables.len(), 15 * b.width);
                let mut slots = b.slots.clone();
                slots.sort_unstable();
                slots.dedup();
                assert_eq!(slots.len(), 15, "block {bs}: two rows write one slot");
                assert!(b.slots.iter().all(|&s| s >= 0 && (s as usize) < b.cache_rows));
                // The decode row of the third sequence shares the first's first block(s).
                let (first, third) = (&b.tables[..b.width], &b.tables[8 * b.width..][..b.width]);
                if window.is_none() {
                    assert_eq!(first[0], third[0], "block {bs}: no shared prefix");
                }
            }
        }
    }
}
