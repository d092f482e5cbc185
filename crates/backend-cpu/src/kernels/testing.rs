//! Test helpers: random blocks of every type, and the SIMD-against-scalar comparison every SIMD
//! kernel goes through.

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_core::DType;

use super::float::{VecFns, SCALAR_VEC_FNS};
use super::{activation_bytes, quantize_row, scalar_dot, vec_dot_type, Dot4Fn, Dot4x2Fn, DotFn};

/// A row of `cols` values of type `d`: random floats for plain float types, any byte for I8,
/// any non-NaN byte for F8_E4M3, random bytes with sane scales for block types.
pub(crate) fn random_row(d: DType, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    match d {
        DType::F32 => (0..cols).flat_map(|_| rng.gen_range(-1.0f32..1.0).to_le_bytes()).collect(),
        DType::F16 => (0..cols).flat_map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes()).collect(),
        DType::BF16 => (0..cols).flat_map(|_| bf16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes()).collect(),
        DType::I8 => (0..cols).map(|_| rng.gen()).collect(),
        DType::F8_E4M3 => (0..cols).map(|_| rng.gen_range(0..0x7Fu8) | if rng.gen() { 0x80 } else { 0 }).collect(),
        _ => {
            let bytes = d.bytes_for(cols).unwrap_or(0);
            let mut row: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
            for block in row.chunks_exact_mut(d.block_bytes()) {
                for &at in tessera_quant::f16_scale_offsets(d) {
                    let v = f16::from_f32(rng.gen_range(0.002f32..0.02));
                    block[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
                match d {
                    DType::Q8_K => block[0..4].copy_from_slice(&rng.gen_range(0.002f32..0.02).to_le_bytes()),
                    DType::MXFP4 => block[0] = rng.gen_range(118..=127),
                    // UE4M3 scales of 2^-7..2^-3 (halved), now and then zero or subnormal.
                    DType::NVFP4 => block[..4].iter_mut().for_each(|s| {
                        *s = if rng.gen_range(0..8) == 0 { rng.gen_range(0..8) } else { rng.gen_range(0x08..0x28) }
                    }),
                    _ => {}
                }
            }
            row
        }
    }
}

pub(crate) fn random_f32(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

/// An activation row of `cols` values converted to `vdt`.
pub(crate) fn activation_row(vdt: DType, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut xq = vec![0u8; activation_bytes(vdt, cols).unwrap_or(0)];
    quantize_row(vdt, &random_f32(cols, rng), &mut xq);
    xq
}

/// The values an activation row of `vdt` stands for.
pub(crate) fn decode_activations(vdt: DType, xq: &[u8]) -> Vec<f32> {
    if vdt == DType::I8 {
        let (d, q) = super::int8::split_row(xq);
        return q.iter().map(|&v| v as i8 as f32 * d).collect();
    }
    tessera_quant::dequantize_to_vec(vdt, xq).unwrap_or_default()
}

/// A row length of `blocks` blocks (both weight and activation blocks whole); for plain types
/// `13 * blocks` values, which leaves partial SIMD chunks.
fn row_length(w: DType, vdt: DType, blocks: usize) -> usize {
    let bl = w.block_len().max(vdt.block_len());
    if bl == 1 {
        blocks * 13
    } else {
        blocks * bl
    }
}

/// Checks `f` against the scalar kernel for `w` on random rows of several lengths.
pub(crate) fn check_against_scalar(w: DType, f: DotFn, label: &str) {
    let mut rng = StdRng::seed_from_u64(7 + w as u64);
    let (Some(vdt), Some(scalar)) = (vec_dot_type(w), scalar_dot(w)) else { return };
    for blocks in [1usize, 2, 3, 5, 8, 17] {
        let cols = row_length(w, vdt, blocks);
        for _ in 0..4 {
            let wr = random_row(w, cols, &mut rng);
            let xq = activation_row(vdt, cols, &mut rng);
            let (got, want) = (f(&wr, &xq), scalar(&wr, &xq));
            let tol = 1e-5 * (want.abs() + 1.0) * (blocks as f32).sqrt();
            assert!((got - want).abs() <= tol, "{label} {w} x {cols}: {got} vs scalar {want}");
        }
    }
}

/// Checks that `f4` gives exactly what `f` gives, row by row.
pub(crate) fn check_four_rows(w: DType, f: DotFn, f4: Dot4Fn) {
    let mut rng = StdRng::seed_from_u64(11 + w as u64);
    let Some(vdt) = vec_dot_type(w) else { return };
    for blocks in [1usize, 2, 3, 8, 17] {
        let cols = row_length(w, vdt, blocks);
        let wr = random_row(w, cols, &mut rng);
        let xs: Vec<Vec<u8>> = (0..4).map(|_| activation_row(vdt, cols, &mut rng)).collect();
        let got = f4(&wr, [&xs[0], &xs[1], &xs[2], &xs[3]]);
        for (r, x) in xs.iter().enumerate() {
            assert_eq!(got[r].to_bits(), f(&wr, x).to_bits(), "{w} x {cols}, row {r}");
        }
    }
}

/// Checks that `tile` gives exactly what `f` gives, element by element.
pub(crate) fn check_tile(w: DType, f: DotFn, tile: Dot4x2Fn) {
    let mut rng = StdRng::seed_from_u64(13 + w as u64);
    let Some(vdt) = vec_dot_type(w) else { return };
    for blocks in [1usize, 2, 3, 8, 17] {
        let cols = row_length(w, vdt, blocks);
        let ws = [random_row(w, cols, &mut rng), random_row(w, cols, &mut rng)];
        let xs: Vec<Vec<u8>> = (0..4).map(|_| activation_row(vdt, cols, &mut rng)).collect();
        let got = tile([&ws[0], &ws[1]], [&xs[0], &xs[1], &xs[2], &xs[3]]);
        for (c, wr) in ws.iter().enumerate() {
            for (r, x) in xs.iter().enumerate() {
                assert_eq!(got[c][r].to_bits(), f(wr, x).to_bits(), "{w} x {cols}, weight row {c}, row {r}");
            }
        }
    }
}

/// Checks the attention helpers of an instruction set against the scalar ones.
pub(crate) fn check_vec_fns(v: VecFns) {
    let mut rng = StdRng::seed_from_u64(99);
    for n in [1usize, 7, 8, 16, 33, 64, 100, 136] {
        // Three rows of a cache of five, out of order, with a repeat.
        let q = random_f32(n, &mut rng);
        let k = random_f32(5 * n, &mut rng);
        let kh: Vec<u8> = k.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
        let at = [3 * n, 0, 3 * n, n];
        let p = random_f32(at.len(), &mut rng);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (b.abs() + n as f32);
        let (mut a, mut b) = (vec![0f32; at.len()], vec![0f32; at.len()]);
        (v.dot_f32)(&q, &k, &at, &mut a);
        (SCALAR_VEC_FNS.dot_f32)(&q, &k, &at, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| close(*x, *y)), "dot_f32 n={n}");
        (v.dot_f16)(&q, &kh, &at, &mut a);
        (SCALAR_VEC_FNS.dot_f16)(&q, &kh, &at, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| close(*x, *y)), "dot_f16 n={n}");
        // Each row's result is the one-row call's: a row computed alone gives the same bits.
        let mut one = [0f32];
        (v.dot_f16)(&q, &kh, &at[1..2], &mut one);
        assert_eq!(one[0].to_bits(), a[1].to_bits(), "dot_f16 alone n={n}");
        let (mut a, mut b) = (q.clone(), q.clone());
        (v.axpy_f32)(&mut a, &p, &k, &at);
        (SCALAR_VEC_FNS.axpy_f32)(&mut b, &p, &k, &at);
        assert!(a.iter().zip(&b).all(|(x, y)| close(*x, *y)), "axpy_f32 n={n}");
        let (mut a, mut b) = (q.clone(), q.clone());
        (v.axpy_f16)(&mut a, &p, &kh, &at);
        (SCALAR_VEC_FNS.axpy_f16)(&mut b, &p, &kh, &at);
        assert!(a.iter().zip(&b).all(|(x, y)| close(*x, *y)), "axpy_f16 n={n}");
        // Rows added one call at a time give the same bits as all at once.
        let mut c = q.clone();
        for i in 0..at.len() {
            (v.axpy_f16)(&mut c, &p[i..i + 1], &kh, &at[i..i + 1]);
        }
        assert_eq!(
            c.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "axpy_f16 split n={n}"
        );
    }
}
