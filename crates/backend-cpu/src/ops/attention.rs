//! Causal attention over an F32 or F16 KV cache, with grouped KV heads and an optional sliding
//! window. One task per (query row, head); two passes over the visible cache rows (scores, then
//! the softmax-weighted sum of values), everything accumulated in f32.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::kernels::VecFns;

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

/// `q` is `[n, n_heads * head_dim]`; `k` and `v` are `[cache_rows, n_kv_heads * head_dim]`.
pub(crate) fn attention(
    vf: VecFns,
    q: &[f32],
    k: &Kv<'_>,
    v: &Kv<'_>,
    pos: &[i32],
    s: &AttentionShape,
) -> Result<Vec<f32>, String> {
    let (hd, heads) = (s.head_dim, s.n_heads);
    if let Some(bad) = pos.iter().find(|&&p| p < 0 || p as usize >= s.cache_rows) {
        return Err(format!("position {bad} is outside the cache of {} rows", s.cache_rows));
    }
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
    out.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (idx, o)| {
        let (n, head) = (idx / heads, idx % heads);
        let p = pos[n] as usize;
        let lo = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
        let qrow = &q[n * width + head * hd..][..hd];
        let at = |j: usize| j * kv_width + (head / group) * hd;
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in lo..=p {
            let dot = match k {
                Kv::F32(k) => (vf.dot_f32)(qrow, &k[at(j)..][..hd]),
                Kv::F16(k) => (vf.dot_f16)(qrow, &k[2 * at(j)..][..2 * hd]),
            };
            let score = s.scale * dot;
            max = max.max(score);
            scores.push(score);
        }
        let mut sum = 0f32;
        for (j, &score) in (lo..=p).zip(scores.iter()) {
            let e = (score - max).exp();
            sum += e;
            match v {
                Kv::F32(v) => (vf.axpy_f32)(o, e, &v[at(j)..][..hd]),
                Kv::F16(v) => (vf.axpy_f16)(o, e, &v[2 * at(j)..][..2 * hd]),
            }
        }
        let inv = 1.0 / sum;
        for x in o.iter_mut() {
            *x *= inv;
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
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
        let y = attention(vf, &q, &k, &v, &[0], &shape(None)).unwrap();
        assert_eq!(y, vec![1.0, 2.0, 1.0, 2.0]);
        // A window of 1 at position 2 sees row 2 only.
        let y = attention(vf, &q, &k, &v, &[2], &shape(Some(1))).unwrap();
        assert_eq!(y, vec![5.0, 6.0, 5.0, 6.0]);
    }

    #[test]
    fn equal_scores_average_values_and_bad_positions_fail() {
        let vf = Kernels::new(Isa::Scalar).unwrap().vec_fns();
        let k = Kv::F32(Cow::Owned(vec![0.0; 6]));
        let v = Kv::F32(Cow::Owned(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let y = attention(vf, &[1.0, 1.0, 1.0, 1.0], &k, &v, &[1], &shape(None)).unwrap();
        assert_eq!(y, vec![2.0, 3.0, 2.0, 3.0]);
        assert!(attention(vf, &[1.0; 4], &k, &v, &[3], &shape(None)).is_err());
        assert!(attention(vf, &[1.0; 4], &k, &v, &[-1], &shape(None)).is_err());
    }
}
