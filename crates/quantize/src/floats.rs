//! The float type of a compressed-tensors checkpoint's unquantized tensors and scales (its
//! `torch_dtype`), and how values are rounded to it.

use safetensors::Dtype;
use tessera_core::DType;

use crate::QuantizeError;

/// `torch_dtype` of the output: unquantized tensors and the integer formats' scales are stored
/// in it, as llm-compressor stores them in the model's own dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    F16,
    BF16,
}

impl FloatType {
    /// The value `v` takes once stored in this type (round to nearest even).
    pub fn round(self, v: f32) -> f32 {
        match self {
            FloatType::F16 => half::f16::from_f32(v).to_f32(),
            FloatType::BF16 => half::bf16::from_f32(v).to_f32(),
        }
    }

    /// `torch.finfo(dtype).eps`, which compressed-tensors puts in place of a zero scale.
    pub fn eps(self) -> f32 {
        match self {
            FloatType::F16 => half::f16::EPSILON.to_f32(),
            FloatType::BF16 => half::bf16::EPSILON.to_f32(),
        }
    }

    /// The name `config.json` gives it.
    pub fn torch_name(self) -> &'static str {
        match self {
            FloatType::F16 => "float16",
            FloatType::BF16 => "bfloat16",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FloatType::F16 => "f16",
            FloatType::BF16 => "bf16",
        }
    }

    pub fn safetensors(self) -> Dtype {
        match self {
            FloatType::F16 => Dtype::F16,
            FloatType::BF16 => Dtype::BF16,
        }
    }

    fn dtype(self) -> DType {
        match self {
            FloatType::F16 => DType::F16,
            FloatType::BF16 => DType::BF16,
        }
    }

    /// Little-endian bytes of `values` in this type; a value that does not fit (F16 beyond
    /// 65504) or is not finite is an error naming `what`.
    pub fn encode(self, values: &[f32], what: &str) -> Result<Vec<u8>, QuantizeError> {
        let mut out = vec![0u8; values.len() * 2];
        tessera_quant::quantize(self.dtype(), values, &mut out)?;
        for (i, chunk) in out.chunks_exact(2).enumerate() {
            let bits = u16::from_le_bytes([chunk[0], chunk[1]]);
            let finite = match self {
                FloatType::F16 => half::f16::from_bits(bits).is_finite(),
                FloatType::BF16 => half::bf16::from_bits(bits).is_finite(),
            };
            if !finite {
                return Err(QuantizeError::Invalid(format!(
                    "{what}: value {} at index {i} is not a finite {} number",
                    values[i],
                    self.name()
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_eps_are_torchs() {
        assert_eq!(FloatType::BF16.eps(), 0.0078125);
        assert_eq!(FloatType::F16.eps(), 0.0009765625);
        assert_eq!(FloatType::BF16.round(1.0 + 1.0 / 512.0), 1.0);
        assert_eq!(FloatType::F16.round(1.0 + 1.0 / 512.0), 1.0 + 1.0 / 512.0);
    }

    #[test]
    fn encoding_refuses_what_does_not_fit() {
        assert_eq!(FloatType::BF16.encode(&[1.0, -2.0], "t").unwrap(), vec![0x80, 0x3f, 0x00, 0xc0]);
        let e = FloatType::F16.encode(&[1.0, 1e6], "blk.0.x").unwrap_err().to_string();
        assert!(e.contains("blk.0.x") && e.contains("index 1") && e.contains("f16"), "{e}");
        assert!(FloatType::BF16.encode(&[f32::NAN], "t").is_err());
    }
}
