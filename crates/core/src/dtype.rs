use std::fmt;

/// Element type of a tensor. Quantized types store values in fixed-size blocks
/// (`block_len` values in `block_bytes` bytes), laid out exactly as ggml lays them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    MXFP4,
    /// ggml's NVFP4: 64 values, four UE4M3 sub-block scales (one per 16) and E2M1 nibbles.
    NVFP4,
    /// Signed 8-bit integers, one per value (INT8 W8A8 weights; a per-row scale lives beside
    /// the weight, see `tessera_backend::Op::MatMul`).
    I8,
    /// OCP FP8 E4M3 (`float8_e4m3fn`), one byte per value (FP8 weights; scale beside the weight).
    F8_E4M3,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DTypeError {
    #[error("unknown or unsupported ggml tensor type id {0}")]
    UnknownGgmlType(u32),
    #[error("unknown tensor type name {0:?}")]
    UnknownName(String),
    #[error("{count} elements of {dtype} is not a whole number of {block_len}-element blocks")]
    PartialBlock { dtype: DType, count: usize, block_len: usize },
    #[error("tensor of {count} {dtype} elements is too large to address")]
    TooLarge { dtype: DType, count: usize },
}

impl DType {
    /// Every type, in ggml id order; handy for tests and listings.
    pub const ALL: [DType; 20] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::MXFP4,
        DType::NVFP4,
        DType::I8,
        DType::F8_E4M3,
    ];

    /// Values per block (1 for plain types).
    pub const fn block_len(self) -> usize {
        use DType::*;
        match self {
            F32 | F16 | BF16 | I32 | I8 | F8_E4M3 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | MXFP4 => 32,
            NVFP4 => 64,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => 256,
        }
    }

    /// Bytes per block (bytes per element for plain types).
    pub const fn block_bytes(self) -> usize {
        use DType::*;
        match self {
            F32 | I32 => 4,
            F16 | BF16 => 2,
            I8 | F8_E4M3 => 1,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
            MXFP4 => 17,
            NVFP4 => 36,
        }
    }

    pub const fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// Bytes needed for `count` elements; `count` must be a whole number of blocks.
    pub fn bytes_for(self, count: usize) -> Result<usize, DTypeError> {
        let block_len = self.block_len();
        if !count.is_multiple_of(block_len) {
            return Err(DTypeError::PartialBlock { dtype: self, count, block_len });
        }
        (count / block_len).checked_mul(self.block_bytes()).ok_or(DTypeError::TooLarge { dtype: self, count })
    }

    /// Average storage cost in bits per value.
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_len() as f64
    }

    /// The ggml `enum ggml_type` id, as stored in GGUF tensor infos; `None` for types ggml does
    /// not have (they cannot be written to GGUF).
    pub const fn ggml_id(self) -> Option<u32> {
        use DType::*;
        Some(match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            I32 => 26,
            BF16 => 30,
            MXFP4 => 39,
            NVFP4 => 40,
            I8 => 24,
            F8_E4M3 => return None,
        })
    }

    pub fn from_ggml_id(id: u32) -> Result<DType, DTypeError> {
        DType::ALL.into_iter().find(|d| d.ggml_id() == Some(id)).ok_or(DTypeError::UnknownGgmlType(id))
    }

    /// ggml's name for the type (`q4_K`, `f16`, ...).
    pub const fn name(self) -> &'static str {
        use DType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            BF16 => "bf16",
            I32 => "i32",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            MXFP4 => "mxfp4",
            NVFP4 => "nvfp4",
            I8 => "i8",
            F8_E4M3 => "f8_e4m3",
        }
    }

    /// Parses a type name, case-insensitively (`Q4_K`, `q4_k`, `bf16`).
    pub fn from_name(name: &str) -> Result<DType, DTypeError> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| DTypeError::UnknownName(name.to_string()))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_ids_round_trip() {
        for d in DType::ALL {
            if let Some(id) = d.ggml_id() {
                assert_eq!(DType::from_ggml_id(id), Ok(d));
            }
            assert_eq!(DType::from_name(&d.name().to_uppercase()), Ok(d));
        }
        assert_eq!(DType::from_ggml_id(4), Err(DTypeError::UnknownGgmlType(4)));
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(DType::Q4_K.bytes_for(512), Ok(288));
        assert_eq!(DType::Q8_0.bytes_for(64), Ok(68));
        assert!((DType::Q4_0.bits_per_value() - 4.5).abs() < 1e-9);
        assert!(DType::Q4_0.bytes_for(33).is_err());
        assert!(matches!(DType::F32.bytes_for(usize::MAX), Err(DTypeError::TooLarge { .. })));
    }
}
