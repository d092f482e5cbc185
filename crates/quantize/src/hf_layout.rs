//! The Hugging Face side of a compressed-tensors checkpoint: tensor names, `config.json`, the
//! weight transformations that undo llama.cpp's conversion, and the tokenizer files.
//!
//! From a GGUF source this inverts what `convert_hf_to_gguf.py` (and Tessera's Hugging Face
//! reader, `crates/formats/src/hf`) does: GGUF names become Hugging Face names, `config.json` is
//! written from the GGUF keys, Llama's Q/K rows go back from llama.cpp's interleaved-RoPE order to
//! Hugging Face's half-split order, and Gemma's norm weights, stored as `1 + w`, become `w`. The
//! tokenizer goes into `tokenizer.gguf`, a GGUF file without tensors holding the source's
//! `tokenizer.*` keys (and `general.architecture`, which transformers' GGUF tokenizer loader
//! reads). From a Hugging Face source the configuration and tokenizer files are carried over.

use std::path::Path;

use serde_json::{json, Map, Value as Json};
use tessera_formats::{GgufWriter, Metadata, ModelSource, Origin, Value};

use crate::floats::FloatType;
use crate::QuantizeError;

fn invalid(what: String) -> QuantizeError {
    QuantizeError::Invalid(what)
}

/// The architectures whose checkpoints are written, by `general.architecture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub fn from_metadata(m: &Metadata) -> Result<Arch, QuantizeError> {
        let name = m.architecture().map_err(|e| invalid(e.to_string()))?;
        Ok(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(invalid(format!(
                    "architecture {other:?} has no compressed-tensors output; supported: llama, qwen2, qwen3, gemma3"
                )))
            }
        })
    }

    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Whether the RMS norms multiply by `1 + w` (Gemma).
    pub fn one_plus_norms(self) -> bool {
        self == Arch::Gemma3
    }
}

/// The Hugging Face name of a GGUF tensor (the inverse of the Hugging Face reader's mapping).
pub fn hf_name(arch: Arch, gguf: &str) -> Result<String, QuantizeError> {
    match gguf {
        "token_embd.weight" => return Ok("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Ok("model.norm.weight".into()),
        "output.weight" => return Ok("lm_head.weight".into()),
        "rope_freqs.weight" => {
            return Err(invalid(
                "rope_freqs.weight (Llama 3 RoPE frequency factors) has no place in a Hugging Face checkpoint, \
                 whose config.json gives the factors' parameters instead; quantize the Hugging Face checkpoint"
                    .into(),
            ))
        }
        _ => {}
    }
    let unknown = || invalid(format!("tensor {gguf:?} has no Hugging Face name for {}", arch.gguf_name()));
    let rest = gguf.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown());
    }
    let (module, suffix) = rest.rsplit_once('.').ok_or_else(unknown)?;
    if suffix != "weight" && suffix != "bias" {
        return Err(unknown());
    }
    let hf = match (module, arch) {
        ("attn_norm", _) => "input_layernorm",
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("attn_q_norm", _) => "self_attn.q_norm",
        ("attn_k_norm", _) => "self_attn.k_norm",
        ("ffn_norm", Arch::Gemma3) => "pre_feedforward_layernorm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("post_attention_norm", Arch::Gemma3) => "post_attention_layernorm",
        ("post_ffw_norm", Arch::Gemma3) => "post_feedforward_layernorm",
        ("ffn_gate", _) => "mlp.gate_proj",
        ("ffn_up", _) => "mlp.up_proj",
        ("ffn_down", _) => "mlp.down_proj",
        _ => return Err(unknown()),
    };
    Ok(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Whether a GGUF tensor's rows need llama.cpp's Q/K permutation undone, and with how many
/// heads: Llama's Q (and its bias) with `head_count`, K with `head_count_kv`.
pub fn permuted_heads(arch: Arch, origin: Origin, gguf: &str, m: &Metadata) -> Result<Option<usize>, QuantizeError> {
    if arch != Arch::Llama || origin == Origin::HuggingFace {
        return Ok(None);
    }
    let key = if gguf.ends_with(".attn_q.weight") || gguf.ends_with(".attn_q.bias") {
        "llama.attention.head_count"
    } else if gguf.ends_with(".attn_k.weight") || gguf.ends_with(".attn_k.bias") {
        "llama.attention.head_count_kv"
    } else {
        return Ok(None);
    };
    let heads = match (m.usize(key), key) {
        (Ok(h), _) => h,
        // A missing KV head count means as many as query heads, as llama.cpp reads it.
        (Err(_), "llama.attention.head_count_kv") => {
            m.usize("llama.attention.head_count").map_err(|e| invalid(e.to_string()))?
        }
        (Err(e), _) => return Err(invalid(e.to_string())),
    };
    Ok(Some(heads))
}

/// Undoes `convert_hf_to_gguf.py`'s `permute` of Q/K rows: within each head of `2 · half`
/// rows, GGUF row `2i + p` is Hugging Face row `p · half + i`.
pub fn unpermute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>, QuantizeError> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(invalid(format!("{rows} Q/K rows do not split into {heads} heads of pairs")));
    }
    let half = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for p in 0..2 {
                let src = (h * 2 * half + 2 * i + p) * cols;
                let dst = (h * 2 * half + p * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// Whether a GGUF tensor is one of Gemma's norms stored as `1 + w`.
pub fn is_shifted_norm(arch: Arch, origin: Origin, gguf: &str) -> bool {
    arch.one_plus_norms() && origin != Origin::HuggingFace && gguf.ends_with("norm.weight")
}

/// A GGUF float key as JSON, through its shortest decimal form (so 1e-5 stored as f32 reads
/// back as 1e-5, not 9.99999974e-6).
fn float_json(v: &Value) -> Option<Json> {
    let x = match v {
        Value::F32(f) => f.to_string().parse::<f64>().ok()?,
        other => other.as_f64()?,
    };
    serde_json::Number::from_f64(x).map(Json::Number)
}

/// `config.json` for a GGUF source: the inverse of the Hugging Face reader's translation, with
/// the keys transformers and vLLM expect for the architecture.
pub fn config_from_gguf(
    source: &ModelSource,
    arch: Arch,
    dtype: FloatType,
) -> Result<Map<String, Json>, QuantizeError> {
    let m = &source.metadata;
    let a = arch.gguf_name();
    let key = |k: &str| format!("{a}.{k}");
    let bad = |e: tessera_formats::MetadataError| invalid(format!("{}: {e}", source.path.display()));
    let need = |k: &str| m.usize(&key(k)).map_err(bad);
    let opt_usize = |k: &str| m.opt(&key(k), Metadata::usize).map_err(bad);
    let opt_float = |k: &str| m.get(&key(k)).and_then(float_json);

    let n_layers = need("block_count")?;
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = opt_usize("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = opt_usize("attention.key_length")?.unwrap_or(hidden / heads.max(1));
    let embd = source
        .tensor("token_embd.weight")
        .ok_or_else(|| invalid(format!("{}: no token_embd.weight", source.path.display())))?;
    let vocab = embd.shape.rows();
    let tied = source.tensor("output.weight").is_none();

    let mut c = Map::new();
    let (class, model_type, act) = match arch {
        Arch::Llama => ("LlamaForCausalLM", "llama", "silu"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2", "silu"),
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3", "silu"),
        Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text", "gelu_pytorch_tanh"),
    };
    c.insert("architectures".into(), json!([class]));
    c.insert("model_type".into(), json!(model_type));
    c.insert(if arch == Arch::Gemma3 { "hidden_activation" } else { "hidden_act" }.into(), json!(act));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("intermediate_size".into(), json!(need("feed_forward_length")?));
    c.insert("num_hidden_layers".into(), json!(n_layers));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(kv_heads));
    c.insert("head_dim".into(), json!(head_dim));
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("max_position_embeddings".into(), json!(need("context_length")?));
    let eps = opt_float("attention.layer_norm_rms_epsilon").unwrap_or(json!(1e-6));
    c.insert("rms_norm_eps".into(), eps);
    c.insert("rope_theta".into(), opt_float("rope.freq_base").unwrap_or(json!(10_000.0)));
    c.insert("rope_scaling".into(), rope_scaling(m, a));
    c.insert("tie_word_embeddings".into(), json!(tied));
    c.insert("attention_dropout".into(), json!(0.0));
    c.insert("initializer_range".into(), json!(0.02));
    c.insert("use_cache".into(), json!(true));
    c.insert("torch_dtype".into(), json!(dtype.torch_name()));
    let has_qkv_bias = source.tensor("blk.0.attn_q.bias").is_some();
    match arch {
        Arch::Llama => {
            c.insert("attention_bias".into(), json!(has_qkv_bias));
            c.insert("mlp_bias".into(), json!(false));
            c.insert("pretraining_tp".into(), json!(1));
        }
        Arch::Qwen2 => {
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("sliding_window".into(), Json::Null);
            c.insert("max_window_layers".into(), json!(n_layers));
        }
        Arch::Qwen3 => {
            c.insert("attention_bias".into(), json!(has_qkv_bias));
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("sliding_window".into(), Json::Null);
            c.insert("max_window_layers".into(), json!(n_layers));
        }
        Arch::Gemma3 => gemma3_config(m, &mut c, n_layers, hidden, heads, head_dim)?,
    }
    special_tokens(m, &mut c);
    Ok(c)
}

/// `rope_scaling` from `{arch}.rope.scaling.*`, null when there is none.
fn rope_scaling(m: &Metadata, a: &str) -> Json {
    let kind = m.get(&format!("{a}.rope.scaling.type")).and_then(Value::as_str).unwrap_or("none");
    if kind == "none" || kind.is_empty() {
        return Json::Null;
    }
    let mut rs = Map::new();
    rs.insert("rope_type".into(), json!(kind));
    if let Some(f) = m.get(&format!("{a}.rope.scaling.factor")).and_then(float_json) {
        rs.insert("factor".into(), f);
    }
    if let Some(n) = m.get(&format!("{a}.rope.scaling.original_context_length")).and_then(Value::as_u64) {
        rs.insert("original_max_position_embeddings".into(), json!(n));
    }
    Json::Object(rs)
}

/// Gemma 3's local/global layers and scalars, with the defaults Tessera's Gemma model uses when
/// the GGUF file leaves them out.
fn gemma3_config(
    m: &Metadata,
    c: &mut Map<String, Json>,
    n_layers: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(), QuantizeError> {
    let key = |k: &str| format!("gemma3.{k}");
    let window = m
        .opt(&key("attention.sliding_window"), Metadata::usize)
        .map_err(|e| invalid(e.to_string()))?
        .filter(|&w| w > 0);
    c.insert("sliding_window".into(), json!(window));
    let pattern_key = key("attention.sliding_window_pattern");
    let local: Vec<bool> = match m.get(&pattern_key) {
        Some(Value::Array(items)) => {
            let flags: Option<Vec<bool>> = items.iter().map(|v| v.as_bool().or(v.as_u64().map(|x| x != 0))).collect();
            match flags {
                Some(f) if f.len() == n_layers => f,
                _ => return Err(invalid(format!("{pattern_key} must hold {n_layers} booleans"))),
            }
        }
        // llama.cpp's default: every sixth layer is global.
        other => {
            let n = other.and_then(Value::as_u64).unwrap_or(6) as usize;
            (0..n_layers).map(|i| n == 0 || i % n < n - 1).collect()
        }
    };
    let kinds: Vec<&str> =
        local.iter().map(|&l| if l && window.is_some() { "sliding_attention" } else { "full_attention" }).collect();
    c.insert("layer_types".into(), json!(kinds));
    let local_base = m.get(&key("rope.freq_base_swa")).and_then(float_json).unwrap_or(json!(10_000.0));
    c.insert("rope_local_base_freq".into(), local_base);
    let scalar = match m.get(&key("attention.query_pre_attn_scalar")).and_then(float_json) {
        Some(s) => s,
        // As Tessera's Gemma model: the 27B model scales by the width per head.
        None if n_layers == 62 => json!(hidden / heads.max(1)),
        None => json!(head_dim),
    };
    c.insert("query_pre_attn_scalar".into(), scalar);
    for k in ["final_logit_softcapping", "attn_logit_softcapping"] {
        c.insert(k.into(), m.get(&key(k)).and_then(float_json).unwrap_or(Json::Null));
    }
    c.insert("attention_bias".into(), json!(false));
    Ok(())
}

/// BOS/EOS/PAD ids; EOS becomes a list when the file also names a different end-of-turn token.
fn special_tokens(m: &Metadata, c: &mut Map<String, Json>) {
    let id = |k: &str| m.get(k).and_then(Value::as_u64);
    if let Some(b) = id("tokenizer.ggml.bos_token_id") {
        c.insert("bos_token_id".into(), json!(b));
    }
    if let Some(p) = id("tokenizer.ggml.padding_token_id") {
        c.insert("pad_token_id".into(), json!(p));
    }
    if let Some(e) = id("tokenizer.ggml.eos_token_id") {
        match id("tokenizer.ggml.eot_token_id").filter(|&t| t != e) {
            Some(t) => c.insert("eos_token_id".into(), json!([e, t])),
            None => c.insert("eos_token_id".into(), json!(e)),
        };
    }
}

/// `config.json` for a Hugging Face source: its own, with a multimodal Gemma 3's text model
/// lifted out (the checkpoint holds the text model only) and any earlier quantization dropped.
pub fn config_from_hf(dir: &Path, dtype: FloatType) -> Result<Map<String, Json>, QuantizeError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| QuantizeError::Io { path: path.clone(), source })?;
    let config: Json =
        serde_json::from_str(&text).map_err(|e| invalid(format!("{}: invalid JSON: {e}", path.display())))?;
    let Json::Object(root) = config else {
        return Err(invalid(format!("{}: not a JSON object", path.display())));
    };
    let mut c = match root.get("text_config") {
        Some(Json::Object(text)) => {
            let mut c = text.clone();
            c.insert("architectures".into(), json!(["Gemma3ForCausalLM"]));
            c.insert("model_type".into(), json!("gemma3_text"));
            for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
                if let (None, Some(v)) = (c.get(k), root.get(k)) {
                    c.insert(k.into(), v.clone());
                }
            }
            c
        }
        _ => root,
    };
    c.remove("quantization_config");
    c.insert("torch_dtype".into(), json!(dtype.torch_name()));
    if c.contains_key("dtype") {
        c.insert("dtype".into(), json!(dtype.torch_name()));
    }
    Ok(c)
}

/// Files of a Hugging Face source carried over as they are.
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "tokenizer.model",
    "chat_template.jinja",
];

/// Writes the tokenizer into `out`: the source's files for a Hugging Face source, else
/// `tokenizer.gguf`. Returns the names written.
pub fn write_tokenizer(source: &ModelSource, out: &Path) -> Result<Vec<String>, QuantizeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QuantizeError::Io { path, source }
    };
    if source.origin == Origin::HuggingFace {
        let mut written = Vec::new();
        for name in TOKENIZER_FILES {
            let from = source.path.join(name);
            if from.is_file() {
                std::fs::copy(&from, out.join(name)).map_err(io(&from))?;
                written.push(name.to_string());
            }
        }
        return Ok(written);
    }
    let mut w = GgufWriter::new();
    let keep = |k: &str| k.starts_with("tokenizer.") || k == "general.architecture";
    for (k, v) in source.metadata.iter().filter(|(k, _)| keep(k)) {
        w.add_metadata(k.clone(), v.clone()).map_err(|e| invalid(format!("tokenizer.gguf: {e}")))?;
    }
    let path = out.join("tokenizer.gguf");
    w.write_file(&path).map_err(|e| match e {
        tessera_formats::WriteError::Io(source) => QuantizeError::Io { path: path.clone(), source },
        other => invalid(format!("{}: {other}", path.display())),
    })?;
    Ok(vec!["tokenizer.gguf".into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_invert_the_readers_mapping() {
        let cases = [
            (Arch::Llama, "token_embd.weight", "model.embed_tokens.weight"),
            (Arch::Llama, "output_norm.weight", "model.norm.weight"),
            (Arch::Llama, "output.weight", "lm_head.weight"),
            (Arch::Llama, "blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"),
            (Arch::Llama, "blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
            (Arch::Llama, "blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
            (Arch::Qwen2, "blk.10.attn_k.bias", "model.layers.10.self_attn.k_proj.bias"),
            (Arch::Qwen3, "blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
            (Arch::Gemma3, "blk.1.post_attention_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
            (Arch::Gemma3, "blk.1.ffn_norm.weight", "model.layers.1.pre_feedforward_layernorm.weight"),
            (Arch::Gemma3, "blk.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight"),
            (Arch::Gemma3, "blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight"),
        ];
        for (arch, gguf, hf) in cases {
            assert_eq!(hf_name(arch, gguf).unwrap(), hf, "{gguf}");
        }
        for bad in ["blk.x.attn_q.weight", "blk.1.attn_q.scale", "blk.1.post_ffw_norm.weight", "mystery"] {
            assert!(hf_name(Arch::Llama, bad).is_err(), "{bad}");
        }
        assert!(hf_name(Arch::Llama, "rope_freqs.weight").unwrap_err().to_string().contains("config.json"));
    }

    #[test]
    fn unpermuting_inverts_llama_cpps_permute() {
        // convert_hf_to_gguf.py: w.reshape(heads, 2, rows / heads / 2, cols).swapaxes(1, 2).
        let (heads, rows, cols) = (3, 12, 2);
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let half = rows / heads / 2;
        let mut gguf = vec![0f32; rows * cols];
        for h in 0..heads {
            for p in 0..2 {
                for i in 0..half {
                    let src = (h * 2 * half + p * half + i) * cols;
                    let dst = (h * 2 * half + i * 2 + p) * cols;
                    gguf[dst..dst + cols].copy_from_slice(&hf[src..src + cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, rows, cols, heads).unwrap(), hf);
        assert!(unpermute_rows(&gguf, rows, cols, 5).is_err());
    }

    #[test]
    fn floats_keep_their_short_decimal_form() {
        assert_eq!(float_json(&Value::F32(1e-5)), Some(json!(1e-5)));
        assert_eq!(float_json(&Value::F32(100000.0)), Some(json!(100000.0)));
        assert_eq!(float_json(&Value::U32(7)), Some(json!(7.0)));
    }
}
