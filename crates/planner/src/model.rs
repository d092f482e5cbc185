//! What the planner knows of a model: its shape, as a plain struct. The CLI fills one from a model
//! file; named shapes (`llama-3.1-8b`) come from `data/models.toml` so planning works with no file.
//!
//! Counting convention (a decoder-only transformer with a gated FFN, as Llama, Qwen and Gemma):
//! per layer Q and O are `n_embd x n_head*head_dim`, K and V `n_embd x n_head_kv*head_dim`, the FFN
//! three `n_embd x n_ff` matrices; the output head is `n_embd x n_vocab` whether or not it is tied
//! to the token embedding (a decode step reads it either way; the embedding table itself is only
//! gathered from).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// Named shapes and quantisation types compiled into the binary.
pub const BUILTIN_MODELS: &str = include_str!("../data/models.toml");

/// A model's shape and storage, enough for the performance model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub name: String,
    pub architecture: String,
    /// All weights, embedding included.
    pub n_params: f64,
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub head_dim: u32,
    pub n_vocab: u32,
    /// Average stored bits per weight.
    pub bits_per_weight: f64,
    /// Bytes per element of the KV cache (2 for F16).
    pub kv_bytes_per_elem: f64,
    /// Bytes of all weights as stored, when known exactly (a file's tensor bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes: Option<f64>,
}

impl ModelShape {
    /// Checks the shape is one a decoder can have.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |what: String| Err(PlanError::Invalid(format!("model {}: {what}", self.name)));
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_ff", self.n_ff),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("head_dim", self.head_dim),
            ("n_vocab", self.n_vocab),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!("{} heads cannot share {} KV heads", self.n_head, self.n_head_kv));
        }
        if !(self.n_params.is_finite() && self.n_params > 0.0) {
            return bad(format!("parameter count {} must be positive", self.n_params));
        }
        if !(self.bits_per_weight.is_finite() && self.bits_per_weight > 0.0 && self.bits_per_weight <= 64.0) {
            return bad(format!("bits per weight {} must be in (0, 64]", self.bits_per_weight));
        }
        if !(self.kv_bytes_per_elem.is_finite() && self.kv_bytes_per_elem > 0.0 && self.kv_bytes_per_elem <= 8.0) {
            return bad(format!("KV bytes per element {} must be in (0, 8]", self.kv_bytes_per_elem));
        }
        if let Some(b) = self.weight_bytes {
            if !(b.is_finite() && b > 0.0) {
                return bad(format!("weight bytes {b} must be positive"));
            }
        }
        Ok(())
    }

    /// Weights of the matrices in all layers.
    pub fn layer_matmul_params(&self) -> f64 {
        let (e, hd, ff) = (f64::from(self.n_embd), f64::from(self.head_dim), f64::from(self.n_ff));
        let attn = e * hd * (2.0 * f64::from(self.n_head) + 2.0 * f64::from(self.n_head_kv));
        f64::from(self.n_layer) * (attn + 3.0 * e * ff)
    }

    /// Weights of the output head.
    pub fn head_params(&self) -> f64 {
        f64::from(self.n_embd) * f64::from(self.n_vocab)
    }

    /// Bytes of every weight as stored.
    pub fn weight_bytes(&self) -> f64 {
        self.weight_bytes.unwrap_or(self.n_params * self.bits_per_weight / 8.0)
    }

    /// Bytes of weights read by one forward step (every layer matrix and the head, once).
    pub fn bytes_read_per_step(&self) -> f64 {
        ((self.layer_matmul_params() + self.head_params()) * self.bits_per_weight / 8.0).min(self.weight_bytes())
    }

    /// Bytes of K and V stored per token of context.
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * f64::from(self.n_layer) * f64::from(self.n_head_kv) * f64::from(self.head_dim) * self.kv_bytes_per_elem
    }

    /// Matmul FLOPs of one token through all layers (2 per multiply-add).
    pub fn layer_flops_per_token(&self) -> f64 {
        2.0 * self.layer_matmul_params()
    }

    /// Matmul FLOPs of the output head for one token.
    pub fn head_flops_per_token(&self) -> f64 {
        2.0 * self.head_params()
    }

    /// Attention FLOPs (QK^T and AV) of one token over `context` cached positions, all layers.
    pub fn attention_flops(&self, context: f64) -> f64 {
        4.0 * f64::from(self.n_layer) * f64::from(self.n_head) * f64::from(self.head_dim) * context
    }

    /// The same model stored at another bits per weight (weights re-counted from the parameters).
    pub fn with_bits(&self, bits: f64) -> ModelShape {
        ModelShape { bits_per_weight: bits, weight_bytes: None, ..self.clone() }
    }
}

/// A storage type and its bits per weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantType {
    pub bits: f64,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    architecture: String,
    source: String,
    n_params: f64,
    n_layer: u32,
    n_embd: u32,
    n_ff: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    n_vocab: u32,
    quant: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    #[serde(rename = "model")]
    models: Vec<RawModel>,
    quant: BTreeMap<String, QuantType>,
}

/// Named model shapes and quantisation types.
#[derive(Clone, Debug)]
pub struct NamedModels {
    models: Vec<(RawModel, ModelShape)>,
    pub quants: BTreeMap<String, QuantType>,
}

impl NamedModels {
    pub fn builtin() -> Result<NamedModels, PlanError> {
        NamedModels::parse(BUILTIN_MODELS, "builtin models (crates/planner/data/models.toml)")
    }

    pub fn parse(text: &str, origin: &str) -> Result<NamedModels, PlanError> {
        let raw: RawModels = crate::parse_toml(text, origin)?;
        for (name, q) in &raw.quant {
            if !(q.bits.is_finite() && q.bits > 0.0 && q.bits <= 64.0) {
                return Err(PlanError::data(origin, format!("quant {name}: bits {} must be in (0, 64]", q.bits)));
            }
        }
        let mut models = Vec::new();
        for m in raw.models {
            let q = raw.quant.get(&m.quant).ok_or_else(|| {
                PlanError::data(origin, format!("model {}: quant {:?} is not in [quant]", m.name, m.quant))
            })?;
            let shape = ModelShape {
                name: m.name.clone(),
                architecture: m.architecture.clone(),
                n_params: m.n_params,
                n_layer: m.n_layer,
                n_embd: m.n_embd,
                n_ff: m.n_ff,
                n_head: m.n_head,
                n_head_kv: m.n_head_kv,
                head_dim: m.head_dim,
                n_vocab: m.n_vocab,
                bits_per_weight: q.bits,
                kv_bytes_per_elem: 2.0,
                weight_bytes: None,
            };
            shape.validate().map_err(|e| PlanError::data(origin, e.to_string()))?;
            if models.iter().any(|(r, _): &(RawModel, ModelShape)| r.name == m.name) {
                return Err(PlanError::data(origin, format!("model {} appears twice", m.name)));
            }
            models.push((m, shape));
        }
        Ok(NamedModels { models, quants: raw.quant })
    }

    /// The named shape, if there is one.
    pub fn get(&self, name: &str) -> Option<&ModelShape> {
        self.models.iter().find(|(r, _)| r.name == name).map(|(_, s)| s)
    }

    /// Where a named shape's figures come from.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.models.iter().find(|(r, _)| r.name == name).map(|(r, _)| r.source.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|(r, _)| r.name.as_str())
    }

    /// Bits per weight of a storage type (`q4_k_m`, `bf16`, ...).
    pub fn quant_bits(&self, quant: &str) -> Result<f64, PlanError> {
        let key = quant.to_ascii_lowercase();
        self.quants
            .get(&key)
            .map(|q| q.bits)
            .ok_or_else(|| PlanError::unknown_name("quantisation", quant, self.quants.keys().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_8b_counts_match_its_parameter_count() {
        let m = NamedModels::builtin().unwrap();
        let s = m.get("llama-3.1-8b").unwrap();
        // Layers + head + embedding (untied) + norms = the published count, within a tenth of a percent.
        let counted = s.layer_matmul_params() + 2.0 * s.head_params();
        assert!((counted / s.n_params - 1.0).abs() < 1e-3, "{counted} vs {}", s.n_params);
        assert_eq!(s.kv_bytes_per_token(), 2.0 * 32.0 * 8.0 * 128.0 * 2.0);
        assert_eq!(s.weight_bytes(), s.n_params * 2.0);
    }

    #[test]
    fn tied_small_models_count_the_head_once() {
        let m = NamedModels::builtin().unwrap();
        for name in ["smollm2-135m", "gemma-3-270m", "llama-3.2-1b"] {
            let s = m.get(name).unwrap();
            let counted = s.layer_matmul_params() + s.head_params();
            assert!((counted / s.n_params - 1.0).abs() < 0.01, "{name}: {counted} vs {}", s.n_params);
        }
    }

    #[test]
    fn quant_names_resolve_and_unknown_ones_are_errors() {
        let m = NamedModels::builtin().unwrap();
        assert_eq!(m.quant_bits("Q4_0").unwrap(), 4.5);
        assert_eq!(m.quant_bits("q8_0").unwrap(), 8.5);
        let err = m.quant_bits("q3_xs").unwrap_err().to_string();
        assert!(err.starts_with("unknown quantisation \"q3_xs\""), "{err}");
    }

    #[test]
    fn impossible_shapes_are_rejected() {
        let m = NamedModels::builtin().unwrap();
        let mut s = m.get("llama-3.1-8b").unwrap().clone();
        s.n_head_kv = 5;
        assert!(s.validate().unwrap_err().to_string().contains("32 heads cannot share 5 KV heads"));
        s.n_head_kv = 8;
        s.bits_per_weight = 0.0;
        assert!(s.validate().is_err());
    }
}
