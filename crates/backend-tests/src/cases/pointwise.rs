//! Row-wise and element-wise ops: Add, Mul, Scale, SwiGlu, GeGlu, RmsNorm, Rope.

use std::sync::Arc;

use rand::Rng;
use tessera_backend::{Backend, RopeStyle};

use super::rng;
use crate::data;
use crate::harness::{graph_err, Case};
use crate::report::ConformanceReport;
use crate::tolerance;

const SHAPES: [[usize; 2]; 4] = [[1, 7], [3, 33], [7, 256], [2, 576]];

/// Add and Mul, with full and one-row (broadcast) right-hand sides.
pub fn check_binary(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("binary");
    for op in ["add", "mul"] {
        for [rows, cols] in SHAPES {
            // b as a full tensor, as a 1-D row and as a [1, cols] row.
            for b_shape in [vec![rows, cols], vec![cols], vec![1, cols]] {
                let a = data::values(&mut r, rows * cols, 2.0);
                let b = data::values(&mut r, b_shape.iter().product(), 2.0);
                let name = format!("{op} a[{rows}, {cols}] b{b_shape:?}");
                Case::new(backend, op, name, tolerance::elementwise()).check(report, |c| {
                    let an = c.f32(&[rows, cols], &a)?;
                    let bn = c.f32(&b_shape, &b)?;
                    let y = if op == "add" { c.g.add(an, bn) } else { c.g.mul(an, bn) }.map_err(graph_err)?;
                    c.subject(y);
                    c.output(y)?;
                    Ok(())
                });
            }
        }
    }
}

/// Scale by small, large and negative factors.
pub fn check_scale(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("scale");
    for ([rows, cols], factor) in SHAPES.into_iter().zip([0.125f32, -3.0, 1e-3, 30.0]) {
        let x = data::values(&mut r, rows * cols, 2.0);
        let name = format!("scale x[{rows}, {cols}] by {factor}");
        Case::new(backend, "scale", name, tolerance::elementwise()).check(report, |c| {
            let xn = c.f32(&[rows, cols], &x)?;
            let y = c.g.scale(xn, factor).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }
}

/// SwiGlu and GeGlu, with gates reaching the saturated ranges.
pub fn check_gated(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("gated");
    for op in ["swiglu", "geglu"] {
        for [rows, cols] in SHAPES {
            // Gates up to ±8 reach the saturated ends of silu and tanh.
            let gate = data::values(&mut r, rows * cols, 8.0);
            let up = data::values(&mut r, rows * cols, 2.0);
            let name = format!("{op} [{rows}, {cols}]");
            Case::new(backend, op, name, tolerance::transcendental()).check(report, |c| {
                let g = c.f32(&[rows, cols], &gate)?;
                let u = c.f32(&[rows, cols], &up)?;
                let y = if op == "swiglu" { c.g.swiglu(g, u) } else { c.g.geglu(g, u) }.map_err(graph_err)?;
                c.subject(y);
                c.output(y)?;
                Ok(())
            });
        }
    }
}

/// RmsNorm on rows of different magnitudes.
pub fn check_rms_norm(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("rms_norm");
    for ([rows, cols], eps) in SHAPES.into_iter().zip([1e-5f32, 1e-6, 1e-5, 1e-6]) {
        // Rows of very different magnitudes: the normalization must be per row.
        let mut x = data::values(&mut r, rows * cols, 3.0);
        for (i, row) in x.chunks_mut(cols).enumerate() {
            row.iter_mut().for_each(|v| *v *= 10f32.powi(i as i32 % 3 - 1));
        }
        let w = data::values(&mut r, cols, 1.5);
        let name = format!("rms_norm x[{rows}, {cols}] eps {eps:e}");
        Case::new(backend, "rms_norm", name, tolerance::transcendental()).check(report, |c| {
            let xn = c.f32(&[rows, cols], &x)?;
            let wn = c.f32(&[cols], &w)?;
            let y = c.g.rms_norm(xn, wn, eps).map_err(graph_err)?;
            c.subject(y);
            c.output(y)?;
            Ok(())
        });
    }
}

/// `(heads, head_dim, rot_dims, base, freq_scale)`.
const ROPE_SHAPES: [(usize, usize, usize, f32, f32); 4] =
    [(1, 64, 64, 10000.0, 1.0), (3, 64, 32, 10000.0, 1.0), (2, 128, 128, 1_000_000.0, 0.25), (4, 16, 16, 500.0, 1.0)];

/// Rope in both styles, full and partial rotation, positions up to 4095.
pub fn check_rope(backend: &Arc<dyn Backend>, report: &mut ConformanceReport) {
    let mut r = rng("rope");
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        for (heads, hd, rot, base, fs) in ROPE_SHAPES {
            for rows in [1usize, 3, 7] {
                let x = data::values(&mut r, rows * heads * hd, 2.0);
                let mut pos: Vec<i32> = (0..rows).map(|_| r.gen_range(0..4096)).collect();
                pos[0] = if rows == 1 { 4095 } else { 0 };
                let name = format!("rope {style:?} x[{rows}, {heads}x{hd}] rot {rot} base {base} scale {fs}");
                Case::new(backend, "rope", name, tolerance::rope()).check(report, |c| {
                    let xn = c.f32(&[rows, heads * hd], &x)?;
                    let pn = c.ids(&pos)?;
                    let y = c.g.rope(xn, pn, hd, rot, base, fs, style).map_err(graph_err)?;
                    c.subject(y);
                    c.output(y)?;
                    Ok(())
                });
            }
        }
    }
}
