//! The conformance cases, one file per op family. Each public `check_*` runs every case of its
//! op on a backend and records the outcome.

pub(crate) mod attention;
pub(crate) mod graphs;
pub(crate) mod linear;
pub(crate) mod paged;
pub(crate) mod pointwise;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_core::DType;

/// Every type a weight can have: all but the integer type.
pub(crate) fn weight_types() -> impl Iterator<Item = DType> {
    DType::ALL.into_iter().filter(|&d| d != DType::I32)
}

/// A generator seeded from the case family's name, so every run sees the same inputs.
pub(crate) fn rng(name: &str) -> StdRng {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    StdRng::seed_from_u64(seed)
}

/// Row lengths to test for weights of `dtype`: multiples of its block length, plus an odd one
/// for plain types.
pub(crate) fn widths(dtype: DType) -> Vec<usize> {
    let mut w: Vec<usize> = [32, 96, 256, 512, 768].into_iter().filter(|k| k % dtype.block_len() == 0).collect();
    if !dtype.is_quantized() {
        w.push(33);
    }
    w
}
