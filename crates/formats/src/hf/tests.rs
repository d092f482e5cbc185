use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use super::*;

/// A tensor for a test checkpoint: name, dtype, shape, and a byte pattern to recognise it by.
type Spec = (&'static str, Dtype, Vec<usize>, u8);

fn write_safetensors(path: &Path, specs: &[Spec]) {
    let data: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = specs
        .iter()
        .map(|(n, d, s, fill)| {
            let len = s.iter().product::<usize>() * d.size();
            (n.to_string(), vec![*fill; len], *d, s.clone())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        data.iter().map(|(n, b, d, s)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn llama_config() -> serde_json::Value {
    json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1,
           "hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 2, "vocab_size": 6})
}

fn llama_tensors() -> Vec<Spec> {
    vec![
        ("model.embed_tokens.weight", Dtype::BF16, vec![6, 4], 1),
        ("model.norm.weight", Dtype::F32, vec![4], 2),
        ("lm_head.weight", Dtype::F16, vec![6, 4], 3),
        ("model.layers.0.self_attn.q_proj.weight", Dtype::F16, vec![4, 4], 4),
        ("model.layers.0.mlp.down_proj.weight", Dtype::F16, vec![4, 8], 5),
        // Not used by the text model, and of a type the reader refuses: skipped, not an error.
        ("model.layers.0.self_attn.rotary_emb.inv_freq", Dtype::I64, vec![2], 6),
    ]
}

fn model_dir(config: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn single_file_model_reads_as_gguf_names() {
    let dir = model_dir(&llama_config());
    write_safetensors(&dir.path().join(SINGLE_FILE), &llama_tensors());
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let src = ModelSource::open(dir.path()).unwrap();
    assert_eq!(src.origin, Origin::HuggingFace);
    assert_eq!(src.metadata.architecture(), Ok("llama"));
    assert_eq!(src.tokenizer_json.as_deref(), Some(dir.path().join("tokenizer.json").as_path()));
    assert_eq!(src.tokenizer_config_json, None);
    let names: Vec<&str> = src.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output.weight", "output_norm.weight", "token_embd.weight"]
    );
    let embd = src.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dtype, embd.shape.dims()), (DType::BF16, &[6, 4][..]));
    assert!(embd.bytes.as_ref().iter().all(|&b| b == 1) && embd.bytes.as_ref().len() == 48);
    assert!(src.tensor("blk.0.ffn_down.weight").unwrap().bytes.as_ref().iter().all(|&b| b == 5));
}

#[test]
fn sharded_model_follows_the_index() {
    let dir = model_dir(&llama_config());
    let tensors = llama_tensors();
    write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &tensors[..2]);
    write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &tensors[2..]);
    let weight_map: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.0.to_string(), json!(format!("model-0000{}-of-00002.safetensors", 1 + usize::from(i >= 2)))))
        .collect();
    let index = dir.path().join(INDEX_FILE);
    std::fs::write(&index, json!({"metadata": {}, "weight_map": weight_map.clone()}).to_string()).unwrap();
    let src = ModelSource::open(dir.path()).unwrap();
    assert_eq!(src.tensors.len(), 5);
    assert!(src.tensor("output.weight").unwrap().bytes.as_ref().iter().all(|&b| b == 3));

    let mut wrong = weight_map.clone();
    wrong.insert("model.norm.weight".into(), json!("model-00002-of-00002.safetensors"));
    std::fs::write(&index, json!({"weight_map": wrong}).to_string()).unwrap();
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("\"model.norm.weight\" is listed in model-00002-of-00002.safetensors but is not there"), "{e}");

    let mut escaping = weight_map;
    escaping.insert("x".into(), json!("../elsewhere.safetensors"));
    std::fs::write(&index, json!({"weight_map": escaping}).to_string()).unwrap();
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a file in this directory"), "{e}");
}

#[test]
fn unsupported_dtypes_and_missing_weights_are_named() {
    let dir = model_dir(&llama_config());
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no weights"), "{e}");
    write_safetensors(&dir.path().join(SINGLE_FILE), &[("model.norm.weight", Dtype::F64, vec![4], 0)]);
    let e = ModelSource::open(dir.path()).unwrap_err();
    assert!(matches!(e, FormatError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("tensor \"model.norm.weight\" is F64"), "{e}");
    std::fs::write(dir.path().join(SINGLE_FILE), b"\x10\0\0\0\0\0\0\0{not json}     ").unwrap();
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn gemma3_multimodal_checkpoint_keeps_only_the_text_model() {
    let config = json!({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                        "text_config": {"num_hidden_layers": 1, "hidden_size": 4, "intermediate_size": 8}});
    let dir = model_dir(&config);
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[
            ("language_model.model.embed_tokens.weight", Dtype::BF16, vec![6, 4], 1),
            ("language_model.model.layers.0.post_attention_layernorm.weight", Dtype::BF16, vec![4], 2),
            ("language_model.model.layers.0.pre_feedforward_layernorm.weight", Dtype::BF16, vec![4], 3),
            ("vision_tower.vision_model.post_layernorm.weight", Dtype::F32, vec![4], 4),
            ("multi_modal_projector.mm_input_projection_weight", Dtype::F32, vec![4, 4], 5),
        ],
    );
    let src = ModelSource::open(dir.path()).unwrap();
    let names: Vec<&str> = src.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["blk.0.ffn_norm.weight", "blk.0.post_attention_norm.weight", "token_embd.weight"]);
    assert_eq!(src.metadata.usize("gemma3.block_count"), Ok(1));
}

#[test]
fn open_refuses_what_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(ModelSource::open(dir.path()), Err(FormatError::NotAModel { .. })));
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "hello").unwrap();
    assert!(matches!(ModelSource::open(&file), Err(FormatError::NotAModel { .. })));
    std::fs::write(&file, "").unwrap();
    assert!(matches!(ModelSource::open(&file), Err(FormatError::NotAModel { .. })));
    assert!(matches!(ModelSource::open(&dir.path().join("missing.gguf")), Err(FormatError::Io { .. })));
}

/// A tensor-less GGUF holding a tokenizer, as written beside weights converted from a GGUF.
fn write_tokenizer_gguf(path: &Path, keys: &[(&str, crate::Value)]) {
    let mut w = crate::GgufWriter::new();
    w.add_metadata("general.architecture", crate::Value::String("llama".into())).unwrap();
    for (k, v) in keys {
        w.add_metadata(*k, v.clone()).unwrap();
    }
    w.write_file(path).unwrap();
}

#[test]
fn tokenizer_gguf_supplies_the_tokenizer_keys_when_there_is_no_tokenizer_json() {
    use crate::Value;
    let mut config = llama_config();
    config["bos_token_id"] = json!(5);
    config["eos_token_id"] = json!(4);
    let dir = model_dir(&config);
    write_safetensors(&dir.path().join(SINGLE_FILE), &llama_tensors());
    let tokens = Value::Array(["<s>", "</s>", "a", "b"].iter().map(|t| Value::String(t.to_string())).collect());
    write_tokenizer_gguf(
        &dir.path().join(TOKENIZER_GGUF),
        &[
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.tokens", tokens.clone()),
            ("tokenizer.ggml.bos_token_id", Value::U32(0)),
            ("tokenizer.chat_template", Value::String("{{ messages }}".into())),
            ("llama.context_length", Value::U32(7)),
        ],
    );
    let src = ModelSource::open(dir.path()).unwrap();
    assert_eq!(src.tokenizer_json, None);
    assert_eq!(src.metadata.get("tokenizer.ggml.tokens"), Some(&tokens));
    assert_eq!(src.metadata.str("tokenizer.chat_template"), Ok("{{ messages }}"));
    // The vocabulary's own ids replace config.json's; keys it lacks keep config.json's.
    assert_eq!(src.metadata.u64("tokenizer.ggml.bos_token_id"), Ok(0));
    assert_eq!(src.metadata.u64("tokenizer.ggml.eos_token_id"), Ok(4));
    // Only tokenizer keys are taken; the model's hyperparameters come from config.json.
    assert!(!src.metadata.contains("llama.context_length") || src.metadata.u64("llama.context_length") != Ok(7));

    // A tokenizer.json wins over tokenizer.gguf.
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let src = ModelSource::open(dir.path()).unwrap();
    assert!(src.tokenizer_json.is_some());
    assert!(!src.metadata.contains("tokenizer.ggml.tokens"));
}

#[test]
fn tokenizer_gguf_without_tokenizer_keys_or_damaged_is_an_error() {
    let dir = model_dir(&llama_config());
    write_safetensors(&dir.path().join(SINGLE_FILE), &llama_tensors());
    let path = dir.path().join(TOKENIZER_GGUF);
    write_tokenizer_gguf(&path, &[]);
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.gguf: holds no tokenizer.* metadata"), "{e}");
    std::fs::write(&path, b"GGUF\x03\0\0\0").unwrap();
    let e = ModelSource::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.gguf"), "{e}");
}
