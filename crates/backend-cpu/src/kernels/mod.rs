//! Dot-product kernels over quantized blocks, one set per instruction set.
//!
//! A matrix multiplication never dequantizes a weight: like ggml, it converts each activation row
//! once into the weight type's *vec-dot type* (8-bit blocks for quantized weights, f16 for F16,
//! one int8 row with one scale for I8, f32 for F8_E4M3) and then takes integer dot products block
//! by block. The scalar kernels are the reference; the SIMD ones (AVX2, AVX-512, NEON) compute the
//! same integer sums and differ from it only in the order of the f32 additions.

mod float;
mod int8;
mod kquants;
mod legacy;
pub(crate) mod packed;
mod quantize;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

use half::f16;
use tessera_core::DType;

pub(crate) use float::{LaneFns, LaneScratch, LaneTile, VecFns};
pub(crate) use quantize::quantize_row;

/// A dot product of one weight row (`w`, in its stored type) with one activation row already
/// converted to the matching vec-dot type (`x`). Both hold the same number of blocks; extra bytes
/// in the longer one are ignored.
pub(crate) type DotFn = fn(w: &[u8], x: &[u8]) -> f32;

/// Four dot products of one weight row with four activation rows, each bit-identical to the
/// [`DotFn`] of the same type: the weight blocks are unpacked once for all four.
pub(crate) type Dot4Fn = fn(w: &[u8], x: [&[u8]; 4]) -> [f32; 4];

/// Eight dot products of two weight rows with four activation rows (`[weight row][activation
/// row]`), each bit-identical to the [`DotFn`] of the same type: each weight block is unpacked
/// once for four rows, and each activation block's scales converted once for both weight rows.
pub(crate) type Dot4x2Fn = fn(w: [&[u8]; 2], x: [&[u8]; 4]) -> [[f32; 4]; 2];

/// Rows `rows` of packed activations against group `g` of a packed weight, one output entry per
/// row, bit-identical to `packed::tile_scalar` (see [`packed`]).
pub(crate) type PackedTileFn =
    fn(w: &packed::PackedWeight, g: usize, x: &packed::PackedRows, rows: &[usize], out: &mut [[f32; packed::ROWS]]);

/// The instruction set a [`crate::CpuBackend`] computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD; always available.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL/VNNI (plus AVX2, FMA and F16C).
    Avx512,
    /// AArch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon].into_iter().find(|isa| isa.is_available()).unwrap_or(Isa::Scalar)
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The instruction set [`Isa::name`] calls `name`.
    pub fn from_name(name: &str) -> Option<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().find(|isa| isa.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }
}

/// The kernels of one instruction set. Only built for an [`Isa`] the CPU supports, which is what
/// makes handing out the SIMD function pointers sound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    isa: Isa,
}

impl Kernels {
    /// The portable kernels, available everywhere.
    pub(crate) const SCALAR: Kernels = Kernels { isa: Isa::Scalar };

    /// `None` when this CPU lacks `isa`.
    pub(crate) fn new(isa: Isa) -> Option<Kernels> {
        isa.is_available().then_some(Kernels { isa })
    }

    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// The dot product for weights of type `w`, and the type activations are converted to first.
    pub(crate) fn dot(&self, w: DType) -> Option<(DType, DotFn)> {
        let vdt = vec_dot_type(w)?;
        let simd: Option<DotFn> = match self.isa {
            Isa::Scalar => None,
            // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_dot(w).or_else(|| x86::avx2_dot(w)) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_dot(w) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { arm::neon_dot(w) },
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Some((vdt, simd.or_else(|| scalar_dot(w))?))
    }

    /// Converts an activation row to the vec-dot type `vdt` (see [`quantize_row`]).
    pub(crate) fn quantize(&self, vdt: DType, x: &[f32], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.isa, Isa::Avx2 | Isa::Avx512) {
            match vdt {
                // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports, and both
                // of these include AVX2, FMA and F16C.
                DType::Q8_0 | DType::Q8_1 => return unsafe { x86::avx2_quantize_q8(x, out, vdt == DType::Q8_1) },
                // SAFETY: as above.
                DType::I8 => return unsafe { x86::avx2_quantize_i8(x, out) },
                _ => {}
            }
        }
        quantize_row(vdt, x, out)
    }

    /// The four-row kernel for weights of type `w`, where one exists; it must be used with the
    /// [`Kernels::dot`] of the same type (it shares its numerics).
    pub(crate) fn dot4(&self, w: DType) -> Option<Dot4Fn> {
        match (self.isa, w) {
            // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, w) => unsafe { x86::avx512_dot4(w) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, w) => unsafe { x86::avx2_dot4(w) },
            _ => None,
        }
    }

    /// The four-by-two tile kernel for weights of type `w`, where one exists; like
    /// [`Kernels::dot4`], it shares the numerics of the [`Kernels::dot`] of the same type.
    pub(crate) fn dot4x2(&self, w: DType) -> Option<Dot4x2Fn> {
        match (self.isa, w) {
            // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, w) => unsafe { x86::avx512_dot4x2(w) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, w) => unsafe { x86::avx2_dot4x2(w) },
            _ => None,
        }
    }

    /// The kernel over packed weights of type `w` (see [`packed`]), where this ISA has one; the
    /// matmul repacks such weights once and uses it instead of the block kernels.
    pub(crate) fn packed(&self, w: DType) -> Option<PackedTileFn> {
        packed::PackKind::of(w)?;
        match self.isa {
            // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(unsafe { x86::avx512_packed_tile() }),
            _ => None,
        }
    }

    /// The float helpers attention uses.
    pub(crate) fn vec_fns(&self) -> VecFns {
        match self.isa {
            // SAFETY: `Kernels::new` only accepts an ISA the running CPU supports.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_vec_fns() },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_vec_fns() },
            _ => float::SCALAR_VEC_FNS,
        }
    }
}

/// What activations are converted to before a dot product with weights of type `w` (ggml's
/// `vec_dot_type`). `None` for types that cannot be a weight (I32). I8 stands for the contract's
/// per-row int8 activations (see [`activation_bytes`]); F8_E4M3 weights meet f32 activations.
pub(crate) fn vec_dot_type(w: DType) -> Option<DType> {
    use DType::*;
    Some(match w {
        F32 | F8_E4M3 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | Q8_1 | MXFP4 | NVFP4 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => Q8_K,
        I8 => I8,
        I32 => return None,
    })
}

/// Bytes of one activation row of `k` values converted to the vec-dot type `vdt`: whole blocks of
/// `vdt`, except for I8, whose row is its f32 scale followed by `k` int8 values.
pub(crate) fn activation_bytes(vdt: DType, k: usize) -> Result<usize, String> {
    if vdt == DType::I8 {
        return k.checked_add(int8::ROW_HEADER).ok_or_else(|| format!("an activation row of {k} values is too long"));
    }
    vdt.bytes_for(k).map_err(|e| e.to_string())
}

/// The portable kernel for weights of type `w`.
pub(crate) fn scalar_dot(w: DType) -> Option<DotFn> {
    use DType::*;
    Some(match w {
        F32 => float::dot_f32_scalar,
        F16 => float::dot_f16_scalar,
        BF16 => float::dot_bf16_scalar,
        Q4_0 => legacy::dot_q4_0,
        Q4_1 => legacy::dot_q4_1,
        Q5_0 => legacy::dot_q5_0,
        Q5_1 => legacy::dot_q5_1,
        Q8_0 => legacy::dot_q8_0,
        Q8_1 => legacy::dot_q8_1,
        MXFP4 => legacy::dot_mxfp4,
        NVFP4 => legacy::dot_nvfp4,
        I8 => int8::dot_i8,
        F8_E4M3 => float::dot_f8_e4m3_scalar,
        Q2_K => kquants::dot_q2_k,
        Q3_K => kquants::dot_q3_k,
        Q4_K => kquants::dot_q4_k,
        Q5_K => kquants::dot_q5_k,
        Q6_K => kquants::dot_q6_k,
        Q8_K => kquants::dot_q8_k,
        I32 => return None,
    })
}

/// Reads the little-endian f16 at `b[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    // The const conversion: no run-time feature check per call, and exact like any other.
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32_const()
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 16 values of an MXFP4 (E2M1) nibble, doubled so they are integers; the block scale is
/// halved to compensate, as ggml does.
pub(crate) const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half of the E8M0 scale `2^(e - 127)`, exactly as ggml computes it (denormals for e < 2).
#[inline(always)]
pub(crate) fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { (e as u32 - 1) << 23 };
    f32::from_bits(bits)
}

/// Unpacks the twelve bytes of 6-bit scales and mins of Q4_K and Q5_K into eight scales and eight
/// mins (ggml's `get_scale_min_k4` for all eight sub-blocks at once).
#[inline(always)]
pub(crate) fn kquant_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weight_type_has_a_scalar_kernel() {
        for d in DType::ALL {
            assert_eq!(scalar_dot(d).is_some(), d != DType::I32, "{d}");
            assert_eq!(vec_dot_type(d).is_some(), d != DType::I32, "{d}");
        }
    }

    #[test]
    fn e8m0_matches_powers_of_two() {
        for e in 0u8..=255 {
            let want = 2f64.powi(e as i32 - 128);
            assert_eq!(e8m0_half(e) as f64, want, "e = {e}");
        }
    }

    /// The scalar kernels against f64 dot products of the dequantized rows: checks each block
    /// decoder against `tessera_quant`, which is bit-exact with ggml.
    #[test]
    fn scalar_kernels_match_dequantized_math() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for w in DType::ALL.into_iter().filter(|&d| d != DType::I32) {
            let (vdt, dot) = Kernels::SCALAR.dot(w).unwrap();
            let cols = 512;
            for _ in 0..4 {
                let wr = testing::random_row(w, cols, &mut rng);
                let x = testing::random_f32(cols, &mut rng);
                let mut xq = vec![0u8; activation_bytes(vdt, cols).unwrap()];
                quantize_row(vdt, &x, &mut xq);
                let wf = tessera_quant::dequantize_to_vec(w, &wr).unwrap();
                let xf = testing::decode_activations(vdt, &xq);
                let want: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wf.iter().zip(&xf).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                // Q8_1 carries its block sum as f16 (`s`), which Q4_1/Q5_1 use for the offset.
                let rel = if vdt == DType::Q8_1 { 2e-3 } else { 1e-5 };
                let got = dot(&wr, &xq) as f64;
                assert!((got - want).abs() <= rel * mag + 1e-6, "{w}: {got} vs {want} (magnitude {mag})");
            }
        }
    }

    #[test]
    fn detected_four_row_kernels_match_one_row() {
        let k = Kernels::new(Isa::detect()).unwrap();
        for d in DType::ALL {
            if let (Some((_, dot)), Some(dot4)) = (k.dot(d), k.dot4(d)) {
                testing::check_four_rows(d, dot, dot4);
            }
            if let (Some((_, dot)), Some(tile)) = (k.dot(d), k.dot4x2(d)) {
                testing::check_tile(d, dot, tile);
            }
        }
    }

    #[test]
    fn detected_vec_fns_match_scalar() {
        testing::check_vec_fns(Kernels::new(Isa::detect()).unwrap().vec_fns());
    }

    #[test]
    fn detected_isa_is_available() {
        assert!(Isa::detect().is_available());
        assert!(Kernels::new(Isa::Scalar).is_some());
    }
}
