//! Random inputs: activations in realistic ranges (never all zeros) and weights of every type,
//! either quantized from random floats with the reference quantizer or as random blocks.

use half::f16;
use rand::rngs::StdRng;
use rand::Rng;
use tessera_core::DType;

/// `n` values uniform in `[-range, range]`, with at least one clearly non-zero.
pub fn values(rng: &mut StdRng, n: usize, range: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.gen_range(-range..=range)).collect();
    if let Some(first) = v.first_mut() {
        if first.abs() < range * 0.1 {
            *first = range * 0.5;
        }
    }
    v
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of i32 values.
pub fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A `[rows, cols]` weight of `dtype`: random floats (roughly unit scale, with a few larger
/// values as real weights have) converted by `tessera_quant::quantize`; when the quantizer does
/// not support the type, random blocks.
pub fn weight(rng: &mut StdRng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let mut v = values(rng, rows * cols, 0.5);
    for x in v.iter_mut().step_by(37) {
        *x *= 4.0;
    }
    match tessera_quant::quantize_to_vec(dtype, &v) {
        Ok(bytes) => bytes,
        Err(_) => random_blocks(rng, dtype, rows * cols / dtype.block_len().max(1)),
    }
}

/// `blocks` blocks of `dtype` with random quants and sane scales (f16 scales in [0.002, 0.02],
/// Q8_K's f32 scale likewise with consistent `bsums`, MXFP4 exponents near 2^-5), exercising bit
/// patterns a quantizer may never produce. Plain types get random values in [-1, 1].
pub fn random_blocks(rng: &mut StdRng, dtype: DType, blocks: usize) -> Vec<u8> {
    match dtype {
        DType::F32 => f32_bytes(&values(rng, blocks, 1.0)),
        DType::F16 | DType::BF16 => {
            tessera_quant::quantize_to_vec(dtype, &values(rng, blocks, 1.0)).unwrap_or_default()
        }
        DType::I32 => i32_bytes(&(0..blocks).map(|_| rng.gen_range(-100..100)).collect::<Vec<_>>()),
        _ => {
            let mut out: Vec<u8> = (0..blocks * dtype.block_bytes()).map(|_| rng.gen()).collect();
            for block in out.chunks_exact_mut(dtype.block_bytes()) {
                for &at in tessera_quant::f16_scale_offsets(dtype) {
                    let d = f16::from_f32(rng.gen_range(0.002f32..0.02));
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
                match dtype {
                    DType::MXFP4 => block[0] = rng.gen_range(118..=127),
                    DType::Q8_K => {
                        block[0..4].copy_from_slice(&rng.gen_range(0.002f32..0.02).to_le_bytes());
                        for g in 0..16 {
                            let s: i32 = block[4 + 16 * g..4 + 16 * g + 16].iter().map(|&q| q as i8 as i32).sum();
                            block[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
                        }
                    }
                    _ => {}
                }
            }
            out
        }
    }
}
