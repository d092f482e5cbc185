//! Attention over F16 and F32 caches (grouped heads, windows, several positions) and Store.

use std::sync::Arc;

use rand::Rng;
use tessera_backend::Backend;
use tessera_core::DType;

use super::rng;
use crate::data;
use crate::harness::{graph_err, Case};
use crate::report::ConformanceReport;
use crate::tolerance;

/// `(heads, kv_heads, head_dim)`: plain, grouped, multi-query, wide heads.
const HEADS: [(usize, usize, usize); 4] = [(4, 4, 64), (4, 2, 32), (6, 1, 64), (2, 1, 128)];

/// `(cache rows, window, query rows)`.
const SPANS: [(usize, Option<usize>, usize); 4] = [(16, None, 1), (40, Some(5), 3), (40, None, 7), (64, Some(17), 2)];

/// Attention over F32 and F16 caches: grouped heads, windows, prompt and decode positions.
pub fn check_attention(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for cache in [DType::F32, DType::F16] {
        let mut r = rng(&format!("attention {cache}"));
        let group = format!("attention {cache}");
        for (heads, kv_heads, hd) in HEADS {
            for (i, (rows, window, n)) in SPANS.into_iter().enumerate() {
                // Positions: the first row, the last row, a consecutive run (a prompt), random.
                let pos: Vec<i32> = match i {
                    0 => vec![0],
                    1 => (0..n as i32).map(|j| rows as i32 - n as i32 + j).collect(),
                    2 => (0..n as i32).map(|j| 11 + j).collect(),
                    _ => (0..n).map(|_| r.gen_range(0..rows as i32)).collect(),
                };
                let q = data::values(&mut r, n * heads * hd, 2.0);
                let k = data::values(&mut r, rows * kv_heads * hd, 2.0);
                let v = data::values(&mut r, rows * kv_heads * hd, 2.0);
                let (kb, vb) = (encode(cache, &k), encode(cache, &v));
                let name = format!(
                    "attention {cache} q[{n}, {heads}x{hd}] kv[{rows}, {kv_heads}x{hd}] window {window:?} pos {pos:?}"
                );
                let scale = 1.0 / (hd as f32).sqrt();
                Case::new(backend, &group, name, tolerance::attention(cache)).check(report, |c| {
                    let qn = c.f32(&[n, heads * hd], &q)?;
                    let kn = c.leaf(cache, &[rows, kv_heads * hd], &kb)?;
                    let vn = c.leaf(cache, &[rows, kv_heads * hd], &vb)?;
                    let pn = c.ids(&pos)?;
                    let y = c.g.attention(qn, kn, vn, pn, heads, kv_heads, hd, scale, window).map_err(graph_err)?;
                    c.subject(y);
                    c.output(y)?;
                    Ok(())
                });
            }
        }
    }
}

/// Values as the bytes of an F32 or F16 cache.
pub(crate) fn encode(dtype: DType, v: &[f32]) -> Vec<u8> {
    tessera_quant::quantize_to_vec(dtype, v).unwrap_or_default()
}

/// Store into F32 and F16 destinations, at offsets and chained.
pub fn check_store(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("store");
    for dst in [DType::F32, DType::F16] {
        let group = format!("store {dst}");
        for (rows, cols, n, at) in [(8usize, 64usize, 1usize, 0usize), (8, 64, 3, 5), (40, 96, 7, 13), (5, 33, 5, 0)] {
            let src = data::values(&mut r, n * cols, 4.0);
            let name = format!("store {dst} src[{n}, {cols}] into [{rows}, {cols}] at row {at}");
            Case::new(backend, &group, name, tolerance::store()).check(report, |c| {
                let s = c.f32(&[n, cols], &src)?;
                let d = c.destination(dst, &[rows, cols])?;
                let y = c.g.store(s, d, at).map_err(graph_err)?;
                c.subject(y);
                Ok(())
            });
        }
        // Two stores chained into one destination, the second overlapping the first.
        let (a, b) = (data::values(&mut r, 3 * 32, 4.0), data::values(&mut r, 2 * 32, 4.0));
        let name = format!("store {dst} twice into [6, 32] at rows 1 and 2");
        Case::new(backend, &group, name, tolerance::store()).check(report, |c| {
            let an = c.f32(&[3, 32], &a)?;
            let bn = c.f32(&[2, 32], &b)?;
            let d = c.destination(dst, &[6, 32])?;
            let first = c.g.store(an, d, 1).map_err(graph_err)?;
            let second = c.g.store(bn, first, 2).map_err(graph_err)?;
            c.subject(second);
            Ok(())
        });
    }
}
