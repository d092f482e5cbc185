//! The formats `tessera quantize` writes, by the names users type.

use std::fmt;
use std::str::FromStr;

/// A target format. The first group writes a GGUF file of plain floats or ggml block types; the second a
/// Hugging Face directory of safetensors in the `compressed-tensors` layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    Mxfp4,
    W8A8Int8,
    Fp8E4M3,
    W4A16Rtn,
    W4A16Awq,
    W4A16Gptq,
    Nvfp4,
    Mxfp4Ct,
}

/// What kind of artefact a format produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    GgufFile,
    CompressedTensorsDir,
}

impl Format {
    pub const ALL: [Format; 19] = [
        Format::F32,
        Format::F16,
        Format::Bf16,
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q4K,
        Format::Q5K,
        Format::Q6K,
        Format::Mxfp4,
        Format::W8A8Int8,
        Format::Fp8E4M3,
        Format::W4A16Rtn,
        Format::W4A16Awq,
        Format::W4A16Gptq,
        Format::Nvfp4,
        Format::Mxfp4Ct,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F16 => "f16",
            Format::Bf16 => "bf16",
            Format::Q8_0 => "q8_0",
            Format::Q4_0 => "q4_0",
            Format::Q4_1 => "q4_1",
            Format::Q5_0 => "q5_0",
            Format::Q5_1 => "q5_1",
            Format::Q4K => "q4_k",
            Format::Q5K => "q5_k",
            Format::Q6K => "q6_k",
            Format::Mxfp4 => "mxfp4",
            Format::W8A8Int8 => "w8a8-int8",
            Format::Fp8E4M3 => "fp8-e4m3",
            Format::W4A16Rtn => "w4a16-rtn",
            Format::W4A16Awq => "w4a16-awq",
            Format::W4A16Gptq => "w4a16-gptq",
            Format::Nvfp4 => "nvfp4",
            Format::Mxfp4Ct => "mxfp4-ct",
        }
    }

    pub const fn output(self) -> Output {
        match self {
            Format::F32
            | Format::F16
            | Format::Bf16
            | Format::Q8_0
            | Format::Q4_0
            | Format::Q4_1
            | Format::Q5_0
            | Format::Q5_1
            | Format::Q4K
            | Format::Q5K
            | Format::Q6K
            | Format::Mxfp4 => Output::GgufFile,
            _ => Output::CompressedTensorsDir,
        }
    }

    /// Whether the format keeps every value as a plain float (a dequantized copy of a source).
    pub const fn is_float(self) -> bool {
        matches!(self, Format::F32 | Format::F16 | Format::Bf16)
    }

    /// Whether the format runs the model on calibration text.
    pub const fn calibrates(self) -> bool {
        matches!(self, Format::W8A8Int8 | Format::W4A16Awq | Format::W4A16Gptq)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown format {s:?}; one of: {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.name().to_uppercase().parse::<Format>(), Ok(f));
        }
        let err = "q3".parse::<Format>().unwrap_err();
        assert!(err.contains("q4_k") && err.contains("nvfp4"), "{err}");
    }
}
