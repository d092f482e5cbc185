//! `config.json` to GGUF metadata keys, so that models read one set of keys whatever the file
//! format. Keys a config omits take the defaults of the transformers config class that
//! `model_type` names, as transformers itself would load the model.

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use crate::{FormatError, Metadata, Value};

/// The architectures the reader translates, under their GGUF names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    /// The value of `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn from_model_type(t: &str) -> Option<Arch> {
        Some(match t {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            _ => return None,
        })
    }

    fn from_class(class: &str) -> Option<(Arch, &'static str)> {
        Some(match class {
            "LlamaForCausalLM" => (Arch::Llama, "llama"),
            "MistralForCausalLM" => (Arch::Llama, "mistral"),
            "Qwen2ForCausalLM" => (Arch::Qwen2, "qwen2"),
            "Qwen3ForCausalLM" => (Arch::Qwen3, "qwen3"),
            "Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration" => (Arch::Gemma3, "gemma3_text"),
            _ => return None,
        })
    }
}

/// transformers' default for `key` in the config class of `model_type` (only keys that real
/// checkpoints omit, and that the metadata below uses).
fn class_default(model_type: &str, key: &str) -> Option<Json> {
    Some(match (model_type, key) {
        ("gemma3_text", "vocab_size") => json!(262_208),
        ("gemma3_text", "hidden_size") => json!(2304),
        ("gemma3_text", "intermediate_size") => json!(9216),
        ("gemma3_text", "num_hidden_layers") => json!(26),
        ("gemma3_text", "num_attention_heads") => json!(8),
        ("gemma3_text", "num_key_value_heads") => json!(4),
        ("gemma3_text", "head_dim") => json!(256),
        ("gemma3_text", "max_position_embeddings") => json!(131_072),
        ("gemma3_text", "rope_theta") => json!(1_000_000.0),
        ("gemma3_text", "rope_local_base_freq") => json!(10_000.0),
        ("gemma3_text", "query_pre_attn_scalar") => json!(256),
        ("gemma3_text", "sliding_window") => json!(4096),
        ("gemma3_text", "tie_word_embeddings") => json!(true),
        ("mistral", "num_key_value_heads") => json!(8),
        ("mistral", "max_position_embeddings") => json!(4096 * 32),
        ("llama", "max_position_embeddings") => json!(2048),
        ("qwen2" | "qwen3", "max_position_embeddings") => json!(32_768),
        (_, "rms_norm_eps") => json!(1e-6),
        (_, "rope_theta") => json!(10_000.0),
        (_, "tie_word_embeddings") => json!(false),
        _ => return None,
    })
}

/// Hyperparameter lookups on the text model's config, with class defaults and typed errors.
struct Hp<'a> {
    text: &'a Json,
    root: &'a Json,
    model_type: &'a str,
    path: &'a Path,
}

impl Hp<'_> {
    fn raw(&self, key: &str) -> Option<Json> {
        let present = |v: &Json| v.get(key).filter(|x| !x.is_null()).cloned();
        present(self.text)
            .or_else(|| present(self.root))
            .or_else(|| self.rope_parameter(key))
            .or_else(|| class_default(self.model_type, key))
    }

    /// transformers 5 moved RoPE settings into `rope_parameters`, per layer kind for models
    /// with local and global layers; answers the older keys from there.
    fn rope_parameter(&self, key: &str) -> Option<Json> {
        let params =
            [self.text, self.root].into_iter().find_map(|v| v.get("rope_parameters").filter(|p| p.is_object()))?;
        let global = params.get("full_attention").unwrap_or(params);
        match key {
            "rope_theta" => global.get("rope_theta").cloned(),
            "rope_local_base_freq" => params.get("sliding_attention")?.get("rope_theta").cloned(),
            "rope_scaling" => Some(global.clone()),
            _ => None,
        }
    }

    fn bad(&self, what: String) -> FormatError {
        FormatError::Corrupt { path: self.path.to_path_buf(), what }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, FormatError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.bad(format!("{key:?} should be a count, found {v}"))),
        }
    }

    fn required_uint(&self, key: &str) -> Result<u64, FormatError> {
        self.uint(key)?.ok_or_else(|| self.bad(format!("{key:?} is missing")))
    }

    fn float(&self, key: &str) -> Result<Option<f64>, FormatError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(format!("{key:?} should be a number, found {v}"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, FormatError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                v.as_bool().map(Some).ok_or_else(|| self.bad(format!("{key:?} should be true or false, found {v}")))
            }
        }
    }
}

/// GGUF stores counts as u32 where they fit.
fn count(v: u64) -> Value {
    u32::try_from(v).map_or(Value::U64(v), Value::U32)
}

/// Picks the architecture, and the part of the config that describes the text model.
fn identify<'a>(config: &'a Json, path: &Path) -> Result<(Arch, &'a Json, String), FormatError> {
    let model_type = config.get("model_type").and_then(Json::as_str);
    let class = config.get("architectures").and_then(|a| a.get(0)).and_then(Json::as_str);
    let (arch, model_type) = match (model_type.and_then(Arch::from_model_type), class.and_then(Arch::from_class)) {
        (Some(arch), _) => (arch, model_type.unwrap_or_default().to_string()),
        (None, Some((arch, t))) if model_type.is_none() => (arch, t.to_string()),
        _ => {
            return Err(FormatError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "architecture {} (model_type {}) is not supported; known: llama, mistral, qwen2, qwen3, gemma3",
                    class.map_or("(none)".to_string(), |c| format!("{c:?}")),
                    model_type.map_or("(none)".to_string(), |t| format!("{t:?}")),
                ),
            })
        }
    };
    // Gemma 3's multimodal config nests the text model's hyperparameters.
    match (arch, config.get("text_config")) {
        (Arch::Gemma3, Some(text)) if text.is_object() => Ok((arch, text, "gemma3_text".into())),
        (Arch::Gemma3, _) => Ok((arch, config, "gemma3_text".into())),
        _ => Ok((arch, config, model_type)),
    }
}

/// Translates a parsed `config.json` into GGUF metadata.
pub(crate) fn to_metadata(config: &Json, path: &Path) -> Result<(Arch, Metadata), FormatError> {
    let (arch, text, model_type) = identify(config, path)?;
    let hp = Hp { text, root: config, model_type: &model_type, path };
    let a = arch.gguf_name();
    let key = |k: &str| format!("{a}.{k}");
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String(a.into()));
    m.insert(key("block_count"), count(hp.required_uint("num_hidden_layers")?));
    m.insert(key("embedding_length"), count(hp.required_uint("hidden_size")?));
    m.insert(key("feed_forward_length"), count(hp.required_uint("intermediate_size")?));
    let heads = hp.required_uint("num_attention_heads")?;
    m.insert(key("attention.head_count"), count(heads));
    m.insert(key("attention.head_count_kv"), count(hp.uint("num_key_value_heads")?.unwrap_or(heads)));
    if let Some(d) = hp.uint("head_dim")? {
        m.insert(key("attention.key_length"), count(d));
        m.insert(key("attention.value_length"), count(d));
    }
    if let Some(eps) = hp.float("rms_norm_eps")? {
        m.insert(key("attention.layer_norm_rms_epsilon"), Value::F32(eps as f32));
    }
    if let Some(theta) = hp.float("rope_theta")? {
        m.insert(key("rope.freq_base"), Value::F32(theta as f32));
    }
    if let Some(n) = hp.uint("max_position_embeddings")? {
        m.insert(key("context_length"), count(n));
    }
    if let Some(n) = hp.uint("vocab_size")? {
        m.insert(key("vocab_size"), count(n));
    }
    rope_scaling(&hp, &key, &mut m)?;
    if arch == Arch::Gemma3 {
        gemma3(&hp, &key, &mut m)?;
    }
    m.insert("tessera.tie_word_embeddings", Value::Bool(hp.bool("tie_word_embeddings")?.unwrap_or(false)));
    special_tokens(&hp, &mut m);
    Ok((arch, m))
}

/// `rope_scaling` as `{arch}.rope.scaling.*`; the low/high frequency factors of Llama 3's
/// scheme have no llama.cpp key and go under the same prefix.
fn rope_scaling(hp: &Hp<'_>, key: &dyn Fn(&str) -> String, m: &mut Metadata) -> Result<(), FormatError> {
    let Some(rs) = hp.raw("rope_scaling") else { return Ok(()) };
    let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Json::as_str).unwrap_or("default");
    if kind == "default" {
        return Ok(());
    }
    m.insert(key("rope.scaling.type"), Value::String(kind.into()));
    let num = |k: &str| rs.get(k).and_then(Json::as_f64);
    if let Some(f) = num("factor") {
        m.insert(key("rope.scaling.factor"), Value::F32(f as f32));
    }
    if let Some(n) = rs.get("original_max_position_embeddings").and_then(Json::as_u64) {
        m.insert(key("rope.scaling.original_context_length"), count(n));
    }
    for k in ["low_freq_factor", "high_freq_factor"] {
        if let Some(f) = num(k) {
            m.insert(key(&format!("rope.scaling.{k}")), Value::F32(f as f32));
        }
    }
    Ok(())
}

/// Gemma 3's local/global attention layout and its extra scalars.
fn gemma3(hp: &Hp<'_>, key: &dyn Fn(&str) -> String, m: &mut Metadata) -> Result<(), FormatError> {
    if let Some(w) = hp.uint("sliding_window")? {
        m.insert(key("attention.sliding_window"), count(w));
    }
    // Newer configs list each layer's kind; older ones give the period of global layers.
    if let Some(Json::Array(kinds)) = hp.raw("layer_types") {
        let local = kinds
            .iter()
            .map(|k| match k.as_str() {
                Some("sliding_attention") => Ok(Value::Bool(true)),
                Some("full_attention") => Ok(Value::Bool(false)),
                _ => Err(hp.bad(format!("\"layer_types\" holds {k}, not sliding_attention or full_attention"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        m.insert(key("attention.sliding_window_pattern"), Value::Array(local));
    } else if let Some(p) = hp.uint("sliding_window_pattern")? {
        m.insert(key("attention.sliding_window_pattern"), count(p));
    }
    if let Some(b) = hp.float("rope_local_base_freq")? {
        m.insert(key("rope.freq_base_swa"), Value::F32(b as f32));
    }
    if let Some(s) = hp.float("query_pre_attn_scalar")? {
        m.insert(key("attention.query_pre_attn_scalar"), Value::F32(s as f32));
    }
    for (hf, gguf) in
        [("final_logit_softcapping", "final_logit_softcapping"), ("attn_logit_softcapping", "attn_logit_softcapping")]
    {
        if let Some(c) = hp.float(hf)? {
            m.insert(key(gguf), Value::F32(c as f32));
        }
    }
    Ok(())
}

/// BOS/EOS/PAD ids from the config, under tokenizer.ggml keys; several EOS ids (Llama 3) also
/// go to `tessera.eos_token_ids`.
fn special_tokens(hp: &Hp<'_>, m: &mut Metadata) {
    let id = |v: &Json| v.as_u64().and_then(|x| u32::try_from(x).ok());
    for (hf, gguf) in
        [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("pad_token_id", "tokenizer.ggml.padding_token_id")]
    {
        if let Some(x) = hp.raw(hf).as_ref().and_then(id) {
            m.insert(gguf, Value::U32(x));
        }
    }
    match hp.raw("eos_token_id") {
        Some(Json::Array(ids)) => {
            let ids: Vec<u32> = ids.iter().filter_map(id).collect();
            if let Some(&first) = ids.first() {
                m.insert("tokenizer.ggml.eos_token_id", Value::U32(first));
            }
            m.insert("tessera.eos_token_ids", Value::Array(ids.into_iter().map(Value::U32).collect()));
        }
        Some(v) => {
            if let Some(x) = id(&v) {
                m.insert("tokenizer.ggml.eos_token_id", Value::U32(x));
            }
        }
        None => {}
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Json, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::Io { path: PathBuf::from(path), source })?;
    serde_json::from_str(&text)
        .map_err(|e| FormatError::Corrupt { path: path.to_path_buf(), what: format!("invalid JSON: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(config: Json) -> Result<Metadata, FormatError> {
        to_metadata(&config, Path::new("config.json")).map(|(_, m)| m)
    }

    #[test]
    fn llama_config_maps_to_gguf_keys() {
        let m = meta(json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
            "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-5,
            "rope_theta": 100000, "max_position_embeddings": 8192, "vocab_size": 49152,
            "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
            "rope_scaling": null
        }))
        .unwrap();
        assert_eq!(m.architecture(), Ok("llama"));
        assert_eq!(m.usize("llama.block_count"), Ok(30));
        assert_eq!(m.usize("llama.attention.head_count_kv"), Ok(3));
        assert_eq!(m.f32("llama.attention.layer_norm_rms_epsilon"), Ok(1e-5));
        assert_eq!(m.f32("llama.rope.freq_base"), Ok(100000.0));
        assert_eq!(m.bool("tessera.tie_word_embeddings"), Ok(true));
        assert_eq!(m.usize("tokenizer.ggml.eos_token_id"), Ok(2));
        assert!(!m.contains("llama.attention.key_length"));
        assert!(!m.contains("llama.rope.scaling.type"));
    }

    #[test]
    fn nested_gemma3_config_uses_text_config_and_class_defaults() {
        let m = meta(json!({
            "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                            "num_hidden_layers": 34, "sliding_window": 1024,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
            "vision_config": {"hidden_size": 1152},
            "eos_token_id": [1, 106]
        }))
        .unwrap();
        assert_eq!(m.architecture(), Ok("gemma3"));
        assert_eq!(m.usize("gemma3.embedding_length"), Ok(2560));
        assert_eq!(m.usize("gemma3.attention.head_count"), Ok(8));
        assert_eq!(m.usize("gemma3.attention.key_length"), Ok(256));
        assert_eq!(m.usize("gemma3.attention.sliding_window"), Ok(1024));
        assert_eq!(m.f32("gemma3.rope.freq_base_swa"), Ok(10_000.0));
        assert_eq!(m.str("gemma3.rope.scaling.type"), Ok("linear"));
        assert_eq!(m.f32("gemma3.rope.scaling.factor"), Ok(8.0));
        assert_eq!(m.bool("tessera.tie_word_embeddings"), Ok(true));
        assert_eq!(m.i64_array("tessera.eos_token_ids"), Ok(vec![1, 106]));
    }

    #[test]
    fn gemma3_layer_types_become_a_bool_pattern() {
        let m = meta(json!({
            "model_type": "gemma3_text", "num_hidden_layers": 2, "hidden_size": 640, "intermediate_size": 2048,
            "num_attention_heads": 4, "layer_types": ["sliding_attention", "full_attention"]
        }))
        .unwrap();
        let p = m.array("gemma3.attention.sliding_window_pattern").unwrap();
        assert_eq!(p, &[Value::Bool(true), Value::Bool(false)]);
    }

    #[test]
    fn mistral_is_llama_and_unknown_architectures_are_named() {
        let m = meta(json!({"model_type": "mistral", "num_hidden_layers": 1, "hidden_size": 8,
                            "intermediate_size": 8, "num_attention_heads": 1}))
        .unwrap();
        assert_eq!(m.architecture(), Ok("llama"));
        assert_eq!(m.usize("llama.attention.head_count_kv"), Ok(8));
        let e = meta(json!({"architectures": ["FalconForCausalLM"], "model_type": "falcon"})).unwrap_err();
        assert!(e.to_string().contains("\"FalconForCausalLM\" (model_type \"falcon\") is not supported"), "{e}");
        let e = meta(json!({"model_type": "qwen2", "hidden_size": "big"})).unwrap_err();
        assert!(e.to_string().contains("\"num_hidden_layers\" is missing"), "{e}");
    }

    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let config = json!({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 512, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}});
        let m = meta(config).unwrap();
        assert_eq!(m.f32("qwen2.rope.freq_base"), Ok(1_000_000.0));
        assert!(!m.contains("qwen2.rope.scaling.type"));
    }
}
