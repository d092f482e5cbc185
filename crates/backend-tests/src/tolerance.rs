//! How far a backend may stray from the reference, per op and weight type.
//!
//! Errors are measured on every buffer a graph stores into, as the largest absolute difference
//! divided by the largest magnitude in the reference's copy of that buffer ("relative to the
//! output's scale"): a per-element relative error is meaningless for values that cancel to near
//! zero, while the output's scale is what the next op sees.

use tessera_core::DType;

/// One row of the tolerance table.
pub struct Tolerance {
    pub what: &'static str,
    pub max_error: f32,
    pub why: &'static str,
}

/// The table, in one place. A backend must stay within these for every op it claims to support.
pub const TABLE: &[Tolerance] = &[
    Tolerance { what: "mat_mul f32", max_error: 1e-5, why: "f32 products, only the summation order may differ" },
    Tolerance {
        what: "mat_mul f16",
        max_error: 2e-3,
        why: "activations may be rounded to f16 first (ggml does), 2^-11 per product",
    },
    Tolerance {
        what: "mat_mul bf16",
        max_error: 1e-2,
        why: "activations may be rounded to bf16 first (ggml does), 2^-8 per product",
    },
    Tolerance {
        what: "mat_mul i8",
        max_error: 1e-5,
        why: "the activation quantization and the integer sum are defined exactly; only the \
              conversion of the sum to f32 and its product with the row scale round",
    },
    Tolerance {
        what: "mat_mul f8_e4m3",
        max_error: 1e-5,
        why: "weights decode exactly; f32 products, only the summation order may differ",
    },
    Tolerance {
        what: "mat_mul quantized",
        max_error: 2e-2,
        why: "activations may be quantized to 8-bit blocks first, as ggml does (Q8_0/Q8_1/Q8_K): \
              ~0.4% of each block's max per value, ~1% of the output's scale at worst over a row",
    },
    Tolerance { what: "get_rows", max_error: 1e-6, why: "dequantization is exact" },
    Tolerance { what: "add, mul, scale", max_error: 1e-6, why: "one f32 rounding" },
    Tolerance { what: "rms_norm, swiglu, geglu", max_error: 1e-5, why: "f32 sums, sqrt, exp and tanh: a few ulps" },
    Tolerance {
        what: "rope",
        max_error: 2e-3,
        why: "angles computed in f32 (ggml builds them by repeated multiplication) lose about \
              pos * 2^-24 rad; positions go up to 4096",
    },
    Tolerance {
        what: "attention f32 cache",
        max_error: 1e-4,
        why: "f32 dot products, exp and weighted sums over up to 64 cache rows",
    },
    Tolerance {
        what: "attention f16 cache",
        max_error: 2e-3,
        why: "a backend may round q and the probabilities to f16 for f16 dot products, as ggml does",
    },
    Tolerance {
        what: "store",
        max_error: 1e-3,
        why: "exact for F32; one f16 rounding (2^-11 relative) for F16 destinations",
    },
    Tolerance {
        what: "graphs",
        max_error: 5e-2,
        why: "several ops in a row: the 8-bit activation errors of four quantized matmuls add up \
              (the CPU backend reaches 1.7e-2); wrong ordering through a Store costs O(1)",
    },
];

fn lookup(what: &str) -> f32 {
    TABLE.iter().find(|t| t.what == what).map_or(0.0, |t| t.max_error)
}

pub fn mat_mul(w: DType) -> f32 {
    match w {
        DType::F32 => lookup("mat_mul f32"),
        DType::F16 => lookup("mat_mul f16"),
        DType::BF16 => lookup("mat_mul bf16"),
        DType::I8 => lookup("mat_mul i8"),
        DType::F8_E4M3 => lookup("mat_mul f8_e4m3"),
        _ => lookup("mat_mul quantized"),
    }
}

pub fn get_rows() -> f32 {
    lookup("get_rows")
}

pub fn elementwise() -> f32 {
    lookup("add, mul, scale")
}

pub fn transcendental() -> f32 {
    lookup("rms_norm, swiglu, geglu")
}

pub fn rope() -> f32 {
    lookup("rope")
}

pub fn attention(cache: DType) -> f32 {
    if cache == DType::F16 {
        lookup("attention f16 cache")
    } else {
        lookup("attention f32 cache")
    }
}

pub fn store() -> f32 {
    lookup("store")
}

pub fn graph() -> f32 {
    lookup("graphs")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_lookup_is_in_the_table() {
        for t in [super::get_rows(), super::rope(), super::graph(), super::store(), super::elementwise()] {
            assert!(t > 0.0);
        }
        assert!(super::mat_mul(tessera_core::DType::Q4_K) > super::mat_mul(tessera_core::DType::F32));
    }
}
