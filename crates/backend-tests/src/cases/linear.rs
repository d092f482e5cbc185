//! MatMul and GetRows over every weight type.

use std::sync::Arc;

use rand::Rng;
use tessera_backend::Backend;
use tessera_core::DType;

use super::{rng, weight_types, widths};
use crate::data;
use crate::harness::{graph_err, Case, CaseResult};
use crate::report::ConformanceReport;
use crate::tolerance;

/// Activation rows and weight rows (outputs) tried with every row length.
const MATMUL_SHAPES: [(usize, usize); 4] = [(1, 67), (3, 16), (7, 5), (33, 24)];

/// MatMul for every weight type, at several row counts and row lengths.
pub fn check_mat_mul(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for w in weight_types() {
        let mut r = rng(&format!("mat_mul {w}"));
        let group = format!("mat_mul {w}");
        for k in widths(w) {
            for (n, m) in MATMUL_SHAPES {
                let x = data::values(&mut r, n * k, 1.0);
                let wb = data::weight(&mut r, w, m, k);
                let name = format!("mat_mul {w} x[{n}, {k}] w[{m}, {k}]");
                Case::new(backend, &group, name, tolerance::mat_mul(w))
                    .check(report, |c| mat_mul_case(c, &[n, k], &x, w, &[m, k], &wb));
            }
        }
        // Random blocks reach bit patterns the quantizer never produces; a 3-D input checks
        // that leading dimensions are flattened.
        let k = 256.max(w.block_len());
        let x = data::values(&mut r, 2 * 3 * k, 1.0);
        let wb = data::random_blocks(&mut r, w, 16 * k / w.block_len());
        let name = format!("mat_mul {w} x[2, 3, {k}] w[16, {k}] random blocks");
        Case::new(backend, &group, name, tolerance::mat_mul(w))
            .check(report, |c| mat_mul_case(c, &[2, 3, k], &x, w, &[16, k], &wb));
        if w == DType::I8 {
            // Rows whose largest magnitude is 127 scale by exactly 1, so halves are ties: the
            // contract rounds them away from zero (half to even would be off by d per tie).
            let k = 96;
            let mut x: Vec<f32> = (0..4 * k).map(|_| r.gen_range(-254i32..=254) as f32 * 0.5).collect();
            x.iter_mut().step_by(k).for_each(|v| *v = -127.0);
            let wb = data::random_blocks(&mut r, w, 8 * k);
            let name = format!("mat_mul {w} x[4, {k}] w[8, {k}] activations with ties");
            Case::new(backend, &group, name, tolerance::mat_mul(w))
                .check(report, |c| mat_mul_case(c, &[4, k], &x, w, &[8, k], &wb));
        }
    }
}

fn mat_mul_case(case: &mut Case, xs: &[usize], x: &[f32], w: DType, ws: &[usize], wb: &[u8]) -> CaseResult<()> {
    let xn = case.f32(xs, x)?;
    let wn = case.leaf(w, ws, wb)?;
    let y = case.g.mat_mul(xn, wn).map_err(graph_err)?;
    case.subject(y);
    case.output(y)?;
    Ok(())
}

/// GetRows for every table type, with repeated and boundary ids.
pub fn check_get_rows(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    for t in weight_types() {
        let mut r = rng(&format!("get_rows {t}"));
        let group = format!("get_rows {t}");
        for d in widths(t).into_iter().take(3) {
            for (vocab, ids) in [(40usize, vec![3i32]), (40, vec![0, 39, 7, 7, 12, 1, 38]), (5, vec![4, 4, 0])] {
                // The small table holds random blocks, the others quantized random floats.
                let table = if vocab == 5 {
                    data::random_blocks(&mut r, t, vocab * d / t.block_len())
                } else {
                    data::weight(&mut r, t, vocab, d)
                };
                let name = format!("get_rows {t} table[{vocab}, {d}] ids[{}]", ids.len());
                Case::new(backend, &group, name, tolerance::get_rows()).check(report, |c| {
                    let tn = c.leaf(t, &[vocab, d], &table)?;
                    let idn = c.ids(&ids)?;
                    let y = c.g.get_rows(tn, idn).map_err(graph_err)?;
                    c.subject(y);
                    c.output(y)?;
                    Ok(())
                });
            }
        }
    }
}
