//! Views feeding ops, reads after a Store, host-mapped weights, and a small transformer-block
//! graph (norm → matmul → rope → store → attention → matmul → add).

use std::sync::Arc;

use tessera_backend::{Backend, RopeStyle};
use tessera_core::DType;

use super::attention::encode;
use super::rng;
use crate::data;
use crate::harness::{graph_err, Case};
use crate::report::ConformanceReport;
use crate::tolerance;

/// SliceRows and Reshape of leaves, weights and computed nodes feeding ops; reads after a Store.
pub fn check_views(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("views");
    let tight = tolerance::transcendental();

    let x = data::values(&mut r, 6 * 64, 2.0);
    let w = data::values(&mut r, 64, 1.0);
    Case::new(backend, "views", "slice_rows of a leaf into rms_norm".into(), tight).check(report, |c| {
        let xn = c.f32(&[6, 64], &x)?;
        let wn = c.f32(&[64], &w)?;
        let s = c.g.slice_rows(xn, 2, 3).map_err(graph_err)?;
        let y = c.g.rms_norm(s, wn, 1e-5).map_err(graph_err)?;
        c.subject(y);
        c.output(y)?;
        Ok(())
    });

    for wt in [DType::F16, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::NVFP4, DType::I8, DType::F8_E4M3] {
        let xa = data::values(&mut r, 3 * 256, 1.0);
        let wb = data::weight(&mut r, wt, 40, 256);
        let name = format!("slice_rows of a {wt} weight into mat_mul");
        Case::new(backend, "views", name, tolerance::mat_mul(wt)).check(report, |c| {
            let xn = c.f32(&[3, 256], &xa)?;
            let wn = c.leaf(wt, &[40, 256], &wb)?;
            let s = c.g.slice_rows(wn, 8, 16).map_err(graph_err)?;
            let y = c.g.mat_mul(xn, s).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }

    let (xa, wa, b) =
        (data::values(&mut r, 7 * 64, 1.0), data::values(&mut r, 32 * 64, 1.0), data::values(&mut r, 32, 1.0));
    Case::new(backend, "views", "slice_rows of a computed node into add".into(), tolerance::mat_mul(DType::F32)).check(
        report,
        |c| {
            let xn = c.f32(&[7, 64], &xa)?;
            let wn = c.f32(&[32, 64], &wa)?;
            let bn = c.f32(&[32], &b)?;
            let y = c.g.mat_mul(xn, wn).map_err(graph_err)?;
            let s = c.g.slice_rows(y, 2, 4).map_err(graph_err)?;
            let z = c.g.add(s, bn).map_err(graph_err)?;
            c.subject(z);
            c.output(z)?;
            Ok(())
        },
    );

    let (xa, wa, nw) =
        (data::values(&mut r, 3 * 64, 1.0), data::values(&mut r, 128 * 64, 1.0), data::values(&mut r, 64, 1.0));
    Case::new(backend, "views", "reshape of a computed node into per-head rms_norm".into(), tight).check(report, |c| {
        let xn = c.f32(&[3, 64], &xa)?;
        let wn = c.f32(&[128, 64], &wa)?;
        let nn = c.f32(&[64], &nw)?;
        let y = c.g.mat_mul(xn, wn).map_err(graph_err)?;
        let heads = c.g.reshape(y, [3, 2, 64]).map_err(graph_err)?;
        let z = c.g.rms_norm(heads, nn, 1e-6).map_err(graph_err)?;
        c.subject(z);
        c.output(z)?;
        Ok(())
    });

    let (xa, wb) = (data::values(&mut r, 2 * 3 * 32, 1.0), data::weight(&mut r, DType::Q8_0, 5, 32));
    Case::new(backend, "views", "reshape of a 3-D leaf into mat_mul".into(), tolerance::mat_mul(DType::Q8_0)).check(
        report,
        |c| {
            let xn = c.f32(&[2, 3, 32], &xa)?;
            let flat = c.g.reshape(xn, [6, 32]).map_err(graph_err)?;
            let wn = c.leaf(DType::Q8_0, &[5, 32], &wb)?;
            let y = c.g.mat_mul(flat, wn).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        },
    );

    let table = data::weight(&mut r, DType::Q8_0, 40, 64);
    Case::new(backend, "views", "get_rows from a sliced table".into(), tolerance::get_rows()).check(report, |c| {
        let t = c.leaf(DType::Q8_0, &[40, 64], &table)?;
        let s = c.g.slice_rows(t, 10, 20).map_err(graph_err)?;
        let ids = c.ids(&[0, 19, 5])?;
        let y = c.g.get_rows(s, ids).map_err(graph_err)?;
        c.subject(y);
        c.output(y)?;
        Ok(())
    });

    let (src, old) = (data::values(&mut r, 2 * 64, 2.0), data::values(&mut r, 8 * 64, 2.0));
    Case::new(backend, "views", "read back through a store".into(), tolerance::elementwise()).check(report, |c| {
        let s = c.f32(&[2, 64], &src)?;
        let cache = c.f32(&[8, 64], &old)?;
        let st = c.g.store(s, cache, 3).map_err(graph_err)?;
        let window = c.g.slice_rows(st, 2, 4).map_err(graph_err)?;
        let y = c.g.scale(window, 2.0).map_err(graph_err)?;
        c.subject(y);
        c.output(y)?;
        Ok(())
    });
}

/// Weights read in place from host memory handed over with `map_host`.
pub fn check_map_host(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    match backend.map_host(Arc::new(vec![0u8; 4])) {
        None => return report.unsupported.push("map_host: not offered".into()),
        Some(Ok(id)) => backend.free(id),
        Some(Err(e)) => return report.fail_contract("map_host", format!("map_host failed: {e}")),
    }
    let mut r = rng("map_host");
    let (x, w) = (data::values(&mut r, 3 * 64, 1.0), data::weight(&mut r, DType::Q8_0, 16, 64));
    Case::new(backend, "map_host", "mat_mul with map_host weights".into(), tolerance::mat_mul(DType::Q8_0)).check(
        report,
        |c| {
            let xn = c.f32(&[3, 64], &x)?;
            let Some(wn) = c.mapped_leaf(DType::Q8_0, &[16, 64], &w)? else { return Ok(()) };
            let y = c.g.mat_mul(xn, wn).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        },
    );
}

/// One attention block over a KV cache already holding five earlier positions, for F32 weights
/// and for a mix of quantized ones.
pub fn check_block(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let (heads, kv_heads, hd, d, rows) = (4usize, 2usize, 64usize, 256usize, 16usize);
    for (label, types, tol) in [
        ("f32 weights", [DType::F32; 4], tolerance::rope()),
        ("quantized weights", [DType::Q4_0, DType::Q8_0, DType::Q6_K, DType::Q4_K], tolerance::graph()),
    ] {
        for cache in [DType::F16, DType::F32] {
            let mut r = rng(&format!("block {label} {cache}"));
            let x = data::values(&mut r, 3 * d, 1.0);
            let nw = data::values(&mut r, d, 1.0);
            let shapes = [[heads * hd, d], [kv_heads * hd, d], [kv_heads * hd, d], [d, heads * hd]];
            let ws: Vec<Vec<u8>> =
                types.iter().zip(&shapes).map(|(&t, s)| data::weight(&mut r, t, s[0], s[1])).collect();
            let mut earlier = data::values(&mut r, rows * kv_heads * hd, 1.0);
            earlier[5 * kv_heads * hd..].iter_mut().for_each(|v| *v = 0.0);
            let (kc, vc) = (encode(cache, &earlier), encode(cache, &earlier.iter().map(|v| -v).collect::<Vec<_>>()));
            let name = format!("block with {label}, {cache} cache");
            Case::new(backend, &format!("graph {label}"), name, tol).check(report, |c| {
                let g_err = graph_err;
                let xn = c.f32(&[3, d], &x)?;
                let nn = c.f32(&[d], &nw)?;
                let w: Vec<_> =
                    (0..4).map(|i| c.leaf(types[i], &shapes[i], &ws[i])).collect::<Result<Vec<_>, String>>()?;
                let kcache = c.leaf(cache, &[rows, kv_heads * hd], &kc)?;
                let vcache = c.leaf(cache, &[rows, kv_heads * hd], &vc)?;
                let pos = c.ids(&[5, 6, 7])?;
                let h = c.g.rms_norm(xn, nn, 1e-5).map_err(g_err)?;
                let q = c.g.mat_mul(h, w[0]).map_err(g_err)?;
                let q = c.g.rope(q, pos, hd, hd, 10000.0, 1.0, RopeStyle::Halves).map_err(g_err)?;
                let k = c.g.mat_mul(h, w[1]).map_err(g_err)?;
                let k = c.g.rope(k, pos, hd, hd, 10000.0, 1.0, RopeStyle::Halves).map_err(g_err)?;
                let v = c.g.mat_mul(h, w[2]).map_err(g_err)?;
                let ks = c.g.store(k, kcache, 5).map_err(g_err)?;
                let vs = c.g.store(v, vcache, 5).map_err(g_err)?;
                let a = c.g.attention(q, ks, vs, pos, heads, kv_heads, hd, 0.125, None).map_err(g_err)?;
                let o = c.g.mat_mul(a, w[3]).map_err(g_err)?;
                let y = c.g.add(o, xn).map_err(g_err)?;
                c.subject(a);
                c.output(y)?;
                Ok(())
            });
        }
    }
}
