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
/// not support the type, random blocks. I8 weights are random bytes: rounding unit-scale floats
/// would leave only -2..2 (a real INT8 weight spans the range, its scale kept beside it).
pub fn weight(rng: &mut StdRng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    if dtype == DType::I8 {
        return random_blocks(rng, dtype, rows * cols);
    }
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
/// Q8_K's f32 scale likewise with consistent `bsums`, MXFP4 exponents near 2^-5, NVFP4 UE4M3
/// scales of 2^-7..2^-2 with a few zero or subnormal ones), exercising bit patterns a quantizer
/// may never produce. F32, F16 and BF16 get random values in [-1, 1]; I8 any byte; F8_E4M3 any
/// byte but the NaN codes (0x7F, 0xFF), so up to ±448.
pub fn random_blocks(rng: &mut StdRng, dtype: DType, blocks: usize) -> Vec<u8> {
    match dtype {
        DType::F32 => f32_bytes(&values(rng, blocks, 1.0)),
        DType::F16 | DType::BF16 => {
            tessera_quant::quantize_to_vec(dtype, &values(rng, blocks, 1.0)).unwrap_or_default()
        }
        DType::I32 => i32_bytes(&(0..blocks).map(|_| rng.gen_range(-100..100)).collect::<Vec<_>>()),
        DType::I8 => (0..blocks).map(|_| rng.gen()).collect(),
        DType::F8_E4M3 => (0..blocks).map(|_| rng.gen_range(0..0x7Fu8) | if rng.gen() { 0x80 } else { 0 }).collect(),
        _ => {
            let mut out: Vec<u8> = (0..blocks * dtype.block_bytes()).map(|_| rng.gen()).collect();
            for block in out.chunks_exact_mut(dtype.block_bytes()) {
                for &at in tessera_quant::f16_scale_offsets(dtype) {
                    let d = f16::from_f32(rng.gen_range(0.002f32..0.02));
                    block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                }
                match dtype {
                    DType::MXFP4 => block[0] = rng.gen_range(118..=127),
                    DType::NVFP4 => {
                        for d in &mut block[..4] {
                            // Exponent fields 1..5 (scale 2^-7 to 2^-2 after ggml's halving);
                            // one sub-block in 16 gets a zero or subnormal scale.
                            *d = if rng.gen_range(0..16) == 0 {
                                rng.gen_range(0..8)
                            } else {
                                rng.gen_range(0x08..=0x2F)
                            };
                        }
                    }
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
