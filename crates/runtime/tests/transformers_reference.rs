//! Hugging Face directories (safetensors + config.json + tokenizer.json) against logits computed
//! by `transformers` itself on the same tiny random-weight models (tests/fixtures/hf, made by
//! scripts/fixtures/hf/make_tiny_models.py).

use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_runtime::{ContextOptions, LoadedModel, Logits};
use tessera_testkit::fixtures_dir;

fn check(name: &str) {
    let dir = fixtures_dir().join("hf").join(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference_logits.json")).expect("reference json"))
            .expect("reference is JSON");
    let input: Vec<u32> =
        meta["input_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let shape: Vec<usize> =
        meta["shape"].as_array().expect("shape").iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let bytes = std::fs::read(dir.join("reference_logits.bin")).expect("reference logits");
    let reference: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(reference.len(), shape[0] * shape[1]);

    let model = LoadedModel::load(&dir, Arc::new(CpuBackend::new(2)), None).expect("HF directory loads");
    let text = meta["input_text"].as_str().expect("input text");
    assert_eq!(model.tokenizer.encode(text, false, false), input, "{name}: tokenizer.json ids differ");

    let mut ctx = model
        .new_context(ContextOptions { n_ctx: 64, n_batch: 5, kv_type: tessera_backend::DType::F32 })
        .expect("context");
    let logits = ctx.eval(&input, Logits::All).expect("forward");
    assert_eq!(logits.len(), reference.len());
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = logits.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{name}: max |logit - transformers| = {max_err:.2e} (logit scale {scale:.2})");
    // F32 weights and an F32 cache leave only summation order: ~2e-6 measured. BF16 weights get
    // activations rounded to BF16 for the dot product, as llama.cpp's CPU backend does (8-bit
    // mantissa): ~5e-3 relative measured.
    let relative = if meta["dtype_on_disk"].as_str() == Some("bfloat16") { 1e-2 } else { 1e-4 };
    assert!(max_err <= relative * scale.max(1.0), "{name}: logits differ by {max_err} (scale {scale})");
    let vocab = shape[1];
    for (row, expected) in meta["argmax"].as_array().expect("argmax").iter().enumerate() {
        let r = &logits[row * vocab..(row + 1) * vocab];
        let margin = meta["argmax_margin"][row].as_f64().unwrap_or(0.0);
        let ours = tessera_runtime::argmax(r) as u64;
        if margin > 1e-2 {
            assert_eq!(ours, expected.as_u64().unwrap(), "{name}: argmax of row {row}");
        }
    }
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3");
}
