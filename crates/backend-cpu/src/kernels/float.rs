//! Scalar kernels over plain float rows: the dot products of F32, F16 and BF16 weights (whose
//! activations were converted to the same type, as ggml does) and of F8_E4M3 weights (decoded
//! exactly, against f32 activations), and the f32-by-f16/f32 helpers attention uses.
//!
//! Eight independent accumulators keep the summation order close to the SIMD kernels' and let
//! the compiler vectorize.

use half::{bf16, f16};

#[inline(always)]
fn sum8(lanes: [f32; 8]) -> f32 {
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

#[inline(always)]
fn dot_by<const B: usize>(w: &[u8], x: &[u8], get: impl Fn(&[u8]) -> f32) -> f32 {
    let n = (w.len() / B).min(x.len() / B);
    let (w, x) = (&w[..n * B], &x[..n * B]);
    let mut acc = [0f32; 8];
    let mut wc = w.chunks_exact(8 * B);
    let mut xc = x.chunks_exact(8 * B);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += get(&wb[l * B..]) * get(&xb[l * B..]);
        }
    }
    let mut tail = 0f32;
    for (wb, xb) in wc.remainder().chunks_exact(B).zip(xc.remainder().chunks_exact(B)) {
        tail += get(wb) * get(xb);
    }
    sum8(acc) + tail
}

pub(crate) fn dot_f32_scalar(w: &[u8], x: &[u8]) -> f32 {
    dot_by::<4>(w, x, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn dot_f16_scalar(w: &[u8], x: &[u8]) -> f32 {
    dot_by::<2>(w, x, |b| f16::from_le_bytes([b[0], b[1]]).to_f32_const())
}

pub(crate) fn dot_bf16_scalar(w: &[u8], x: &[u8]) -> f32 {
    dot_by::<2>(w, x, |b| bf16::from_le_bytes([b[0], b[1]]).to_f32_const())
}

/// F8_E4M3 weights (one byte each) against f32 activations.
pub(crate) fn dot_f8_e4m3_scalar(w: &[u8], x: &[u8]) -> f32 {
    let n = w.len().min(x.len() / 4);
    let (w, x) = (&w[..n], &x[..4 * n]);
    let get = |x: &[u8], at: usize| f32::from_le_bytes([x[at], x[at + 1], x[at + 2], x[at + 3]]);
    let mut acc = [0f32; 8];
    let mut wc = w.chunks_exact(8);
    let mut xc = x.chunks_exact(32);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += tessera_quant::fp8::e4m3_to_f32(wb[l]) * get(xb, 4 * l);
        }
    }
    let mut tail = 0f32;
    for (l, &b) in wc.remainder().iter().enumerate() {
        tail += tessera_quant::fp8::e4m3_to_f32(b) * get(xc.remainder(), 4 * l);
    }
    sum8(acc) + tail
}

/// `q · k` for an f32 query and an f32 key row.
pub(crate) fn dot_f32_f32(q: &[f32], k: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut qc = q.chunks_exact(8);
    let mut kc = k.chunks_exact(8);
    for (a, b) in (&mut qc).zip(&mut kc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
    sum8(acc) + tail
}

/// `q · k` for an f32 query and a key row of little-endian f16 bytes.
pub(crate) fn dot_f32_f16(q: &[f32], k: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let mut qc = q.chunks_exact(8);
    let mut kc = k.chunks_exact(16);
    for (a, b) in (&mut qc).zip(&mut kc) {
        for l in 0..8 {
            acc[l] += a[l] * f16::from_le_bytes([b[2 * l], b[2 * l + 1]]).to_f32_const();
        }
    }
    let tail: f32 = qc
        .remainder()
        .iter()
        .zip(kc.remainder().chunks_exact(2))
        .map(|(a, b)| a * f16::from_le_bytes([b[0], b[1]]).to_f32_const())
        .sum();
    sum8(acc) + tail
}

/// `out += p * v` for an f32 value row.
pub(crate) fn axpy_f32(out: &mut [f32], p: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += p * x;
    }
}

/// `out += p * v` for a value row of little-endian f16 bytes.
pub(crate) fn axpy_f16(out: &mut [f32], p: f32, v: &[u8]) {
    for (o, x) in out.iter_mut().zip(v.chunks_exact(2)) {
        *o += p * f16::from_le_bytes([x[0], x[1]]).to_f32_const();
    }
}

/// `out[i] = q · k[at[i]..at[i] + q.len()]` for f32 key rows.
fn dot_rows_f32(q: &[f32], k: &[f32], at: &[usize], out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(at) {
        *o = dot_f32_f32(q, &k[a..a + q.len()]);
    }
}

/// [`dot_rows_f32`] for f16 key rows (`at` counts elements, not bytes).
fn dot_rows_f16(q: &[f32], k: &[u8], at: &[usize], out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(at) {
        *o = dot_f32_f16(q, &k[2 * a..2 * (a + q.len())]);
    }
}

/// `out += p[i] * v[at[i]..at[i] + out.len()]`, row after row, for f32 value rows.
fn axpy_rows_f32(out: &mut [f32], p: &[f32], v: &[f32], at: &[usize]) {
    for (&p, &a) in p.iter().zip(at) {
        axpy_f32(out, p, &v[a..a + out.len()]);
    }
}

/// [`axpy_rows_f32`] for f16 value rows (`at` counts elements, not bytes).
fn axpy_rows_f16(out: &mut [f32], p: &[f32], v: &[u8], at: &[usize]) {
    for (&p, &a) in p.iter().zip(at) {
        axpy_f16(out, p, &v[2 * a..2 * (a + out.len())]);
    }
}

/// The float helpers of one instruction set, over many cache rows per call (one head of one
/// query): each row's result is what the one-row helper (`dot_f32_f32`, `axpy_f16`, ...) of the
/// same instruction set computes, and `axpy` adds the rows in the order given.
#[derive(Clone, Copy)]
pub(crate) struct VecFns {
    pub dot_f32: DotRows<f32>,
    pub dot_f16: DotRows<u8>,
    pub axpy_f32: AxpyRows<f32>,
    pub axpy_f16: AxpyRows<u8>,
    /// Whole heads, sixteen at a time, where the instruction set has a kernel for it.
    pub lanes: Option<LaneFns>,
}

/// Up to sixteen attention heads ("lanes": a query row and a head each) that read the same KV
/// head over the same cache rows, computed together: each key row is loaded once for all of
/// them. Lane `l` sees keys `at[first[l]..last[l]]`; a lane with an empty range is unused.
pub(crate) struct LaneTile<'a> {
    /// The lanes' queries, transposed: element `d` of lane `l` at `qt[16 * d + l]`, for `d` up
    /// to `head_dim` rounded up to a multiple of 16 (zero past `head_dim`).
    pub qt: &'a [f32],
    /// Where the head's slice of each key and value row starts, in elements, in position order.
    pub at: &'a [usize],
    pub first: [i32; 16],
    pub last: [i32; 16],
    pub head_dim: usize,
    pub scale: f32,
}

/// Scratch a lane kernel reuses from tile to tile.
#[derive(Default)]
pub(crate) struct LaneScratch {
    pub scores: Vec<f32>,
    pub rows: Vec<f32>,
    pub masks: Vec<u16>,
    pub sums: Vec<f32>,
}

/// `out[16 * d + l] = (softmax(scale * q_l·k) · v)[d]` for every lane `l` of `tile`: each
/// lane's result depends on its own query and keys only, never on the other lanes.
pub(crate) type LaneFn<K> = fn(tile: &LaneTile<'_>, k: &[K], v: &[K], scratch: &mut LaneScratch, out: &mut [f32]);

/// The lane kernels over f32 caches and over the bytes of f16 caches.
#[derive(Clone, Copy)]
pub(crate) struct LaneFns {
    pub f32: LaneFn<f32>,
    pub f16: LaneFn<u8>,
}

/// `out[i] = q · (key row at element at[i])`, over f32 keys or the bytes of f16 keys.
pub(crate) type DotRows<K> = fn(q: &[f32], k: &[K], at: &[usize], out: &mut [f32]);

/// `out += p[i] * (value row at element at[i])` for every row in order.
pub(crate) type AxpyRows<V> = fn(out: &mut [f32], p: &[f32], v: &[V], at: &[usize]);

pub(crate) const SCALAR_VEC_FNS: VecFns = VecFns {
    dot_f32: dot_rows_f32,
    dot_f16: dot_rows_f16,
    axpy_f32: axpy_rows_f32,
    axpy_f16: axpy_rows_f16,
    lanes: None,
};
