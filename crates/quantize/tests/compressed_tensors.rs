//! compressed-tensors output of the test models: names, dtypes and shapes of every tensor,
//! `config.json` (its model keys read back by Tessera's Hugging Face reader and compared with
//! the source's GGUF keys), the tokenizer, and the checkpoint read back by Tessera itself.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use tessera_core::DType;
use tessera_formats::{ModelSource, Value};
use tessera_quantize::{quantize, Format, NoProgress, QuantizeOptions, Summary};
use tessera_testkit::{test_model, GEMMA3_270M, SMOLLM2};

/// A short calibration text: enough rows to exercise the calibrated paths quickly.
const SHORT_CALIBRATION: &str = "The ferryman walked down to the landing on Thursday morning. The water had \
    swallowed the lowest step and was lapping at the second, brown and quick and full of branches. fn main() { \
    println!(\"{}\", 6 * 7); } User: What is a hash table? Assistant: A way of storing items so that they can \
    be found again quickly.";

fn run(
    source: &Path,
    format: Format,
    group_size: Option<usize>,
    calib: Option<&str>,
) -> (tempfile::TempDir, PathBuf, Summary) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{format}"));
    let options = QuantizeOptions { group_size, calib_text: calib.map(str::to_string), ..QuantizeOptions::new(format) };
    let summary = quantize(source, &out, &options, &mut NoProgress).unwrap_or_else(|e| panic!("{format}: {e}"));
    assert_eq!(summary.output, out);
    (dir, out, summary)
}

fn config(out: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap()
}

/// (dtype, shape) of every tensor in `model.safetensors`.
fn tensors(out: &Path) -> std::collections::BTreeMap<String, (Dtype, Vec<usize>)> {
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(name, view)| (name, (view.dtype(), view.shape().to_vec()))).collect()
}

/// The Linear modules of a Llama-style layer: (name, out, in).
fn linears(layer: usize, hidden: usize, q: usize, kv: usize, ffn: usize) -> Vec<(String, usize, usize)> {
    let p = |m: &str| format!("model.layers.{layer}.{m}");
    vec![
        (p("self_attn.q_proj"), q, hidden),
        (p("self_attn.k_proj"), kv, hidden),
        (p("self_attn.v_proj"), kv, hidden),
        (p("self_attn.o_proj"), hidden, q),
        (p("mlp.gate_proj"), ffn, hidden),
        (p("mlp.up_proj"), ffn, hidden),
        (p("mlp.down_proj"), hidden, ffn),
    ]
}

/// The tensors each format stores per Linear, for a weight of `rows x cols`.
fn expected_parts(
    format: Format,
    per_tensor: bool,
    group: usize,
    rows: usize,
    cols: usize,
) -> Vec<(&'static str, Dtype, Vec<usize>)> {
    match format {
        Format::W8A8Int8 => vec![("weight", Dtype::I8, vec![rows, cols]), ("weight_scale", Dtype::BF16, vec![rows, 1])],
        Format::Fp8E4M3 => vec![
            ("weight", Dtype::F8_E4M3, vec![rows, cols]),
            ("weight_scale", Dtype::BF16, if per_tensor { vec![1] } else { vec![rows, 1] }),
        ],
        Format::W4A16Rtn | Format::W4A16Awq | Format::W4A16Gptq => vec![
            ("weight_packed", Dtype::I32, vec![rows, cols / 8]),
            ("weight_scale", Dtype::BF16, vec![rows, cols / group]),
            ("weight_shape", Dtype::I64, vec![2]),
        ],
        Format::Nvfp4 => vec![
            ("weight_packed", Dtype::U8, vec![rows, cols / 2]),
            ("weight_scale", Dtype::F8_E4M3, vec![rows, cols / 16]),
            ("weight_global_scale", Dtype::F32, vec![1]),
        ],
        Format::Mxfp4Ct => {
            vec![("weight_packed", Dtype::U8, vec![rows, cols / 2]), ("weight_scale", Dtype::U8, vec![rows, cols / 32])]
        }
        other => panic!("{other} is not a compressed-tensors format"),
    }
}

fn ct_format(format: Format) -> &'static str {
    match format {
        Format::W8A8Int8 => "int-quantized",
        Format::Fp8E4M3 => "float-quantized",
        Format::Nvfp4 => "nvfp4-pack-quantized",
        Format::Mxfp4Ct => "mxfp4-pack-quantized",
        _ => "pack-quantized",
    }
}

/// Checks a SmolLM2 output: every tensor's name, dtype and shape, the config, the tokenizer.
fn check_smollm2(out: &Path, summary: &Summary, format: Format, per_tensor: bool, group: usize) {
    let (layers, hidden, q, kv, ffn, vocab) = (30, 576, 576, 192, 1536, 49152);
    let mut expected = std::collections::BTreeMap::new();
    expected.insert("model.embed_tokens.weight".to_string(), (Dtype::BF16, vec![vocab, hidden]));
    expected.insert("model.norm.weight".to_string(), (Dtype::BF16, vec![hidden]));
    for l in 0..layers {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            expected.insert(format!("model.layers.{l}.{norm}.weight"), (Dtype::BF16, vec![hidden]));
        }
        for (module, rows, cols) in linears(l, hidden, q, kv, ffn) {
            for (suffix, dtype, shape) in expected_parts(format, per_tensor, group, rows, cols) {
                expected.insert(format!("{module}.{suffix}"), (dtype, shape));
            }
        }
    }
    let found = tensors(out);
    for (name, want) in &expected {
        assert_eq!(found.get(name), Some(want), "{format}: {name}");
    }
    let extra: Vec<&String> = found.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{format}: unexpected tensors {extra:?}");

    let c = config(out);
    assert_eq!(c["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(c["torch_dtype"], "bfloat16");
    assert_eq!(c["tie_word_embeddings"], true);
    let qc = &c["quantization_config"];
    assert_eq!(qc["quant_method"], "compressed-tensors");
    assert_eq!(qc["format"], ct_format(format));
    assert_eq!(qc["quantization_status"], "compressed");
    assert_eq!(qc["ignore"], serde_json::json!(["lm_head"]));
    let group_0 = &qc["config_groups"]["group_0"];
    assert_eq!(group_0["targets"], serde_json::json!(["Linear"]));
    assert_eq!(group_0["format"], ct_format(format));
    let dynamic_activations = matches!(format, Format::W8A8Int8 | Format::Fp8E4M3);
    assert_eq!(group_0["input_activations"].is_null(), !dynamic_activations, "{format}");
    if dynamic_activations {
        assert_eq!(group_0["input_activations"]["strategy"], "token");
        assert_eq!(group_0["input_activations"]["dynamic"], true);
    }
    assert!(out.join("tokenizer.gguf").is_file());

    // One report per source tensor, under its Hugging Face name.
    assert_eq!(summary.tensors.len(), 272);
    assert_eq!(summary.dequantized_from, ["q4_1", "q8_0"]);
    let q_proj = summary.tensors.iter().find(|t| t.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!((q_proj.source_type.as_str(), q_proj.values), ("q4_1", (576 * 576) as u64));
    let types: Vec<String> = summary.by_output_type().into_iter().map(|r| r.0).collect();
    assert_eq!(types.len(), 2, "{types:?}");
}

/// The keys models read, from the source GGUF and from the output's `config.json` as Tessera's
/// Hugging Face reader translates it.
fn compare_model_keys(source: &ModelSource, out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(out.join("config.json"), dir.path().join("config.json")).unwrap();
    // An empty weights file: only the configuration is read back here.
    let empty: Vec<(&str, safetensors::tensor::TensorView<'_>)> = Vec::new();
    safetensors::serialize_to_file(empty, &None, &dir.path().join("model.safetensors")).unwrap();
    let back = ModelSource::open(dir.path()).unwrap();
    let arch = source.metadata.architecture().unwrap().to_string();
    let mut keys: Vec<String> = [
        "block_count",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.layer_norm_rms_epsilon",
        "rope.freq_base",
        "context_length",
        "attention.sliding_window",
        "attention.key_length",
    ]
    .iter()
    .map(|k| format!("{arch}.{k}"))
    .collect();
    keys.extend(
        ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"]
            .map(String::from),
    );
    for key in keys {
        let (a, b) =
            (source.metadata.get(&key).and_then(Value::as_f64), back.metadata.get(&key).and_then(Value::as_f64));
        if a.is_some() {
            assert_eq!(a, b, "{key}");
        }
    }
    assert_eq!(back.metadata.architecture().unwrap(), arch);
    let tied = source.tensor("output.weight").is_none();
    assert_eq!(back.metadata.bool("tessera.tie_word_embeddings"), Ok(tied));
}

#[test]
fn smollm2_in_every_uncalibrated_format() {
    let Some(source) = test_model(SMOLLM2) else { return };
    let gguf = ModelSource::open(&source).unwrap();
    let cases = [
        (Format::Fp8E4M3, None),
        (Format::Fp8E4M3, Some(0)),
        (Format::W4A16Rtn, None),
        (Format::Nvfp4, None),
        (Format::Mxfp4Ct, None),
    ];
    for (format, group_size) in cases {
        let (_dir, out, summary) = run(&source, format, group_size, None);
        // 576 inputs are not whole groups of 128: the default falls back to 64.
        check_smollm2(&out, &summary, format, group_size == Some(0), 64);
        if format == Format::W4A16Rtn {
            assert_eq!(config(&out)["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"], 64);
            compare_model_keys(&gguf, &out);
        }
    }
}

#[test]
fn smollm2_calibrated_int4() {
    let Some(source) = test_model(SMOLLM2) else { return };
    let (_rtn_dir, rtn, _) = run(&source, Format::W4A16Rtn, Some(32), None);
    let read = |out: &Path, name: &str| -> Vec<u8> {
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        SafeTensors::deserialize(&bytes).unwrap().tensor(name).unwrap().data().to_vec()
    };
    for format in [Format::W4A16Awq, Format::W4A16Gptq] {
        let (_dir, out, summary) = run(&source, format, Some(32), Some(SHORT_CALIBRATION));
        check_smollm2(&out, &summary, format, false, 32);
        let packed = "model.layers.3.mlp.down_proj.weight_packed";
        assert_ne!(read(&out, packed), read(&rtn, packed), "{format} chose the same codes as round-to-nearest");
        // AWQ folds its scales into the norms; GPTQ leaves them as they are.
        let norm = "model.layers.3.post_attention_layernorm.weight";
        assert_eq!(read(&out, norm) == read(&rtn, norm), format == Format::W4A16Gptq, "{format}");
    }
}

/// W8A8 smooths activation outliers into the weights: the scales fold into the norms (so they
/// change) and the projections before down and O, and the checkpoint still computes what the
/// source does.
#[test]
fn smollm2_w8a8_smooths_before_rounding() {
    let Some(source) = test_model(SMOLLM2) else { return };
    let (_dir, out, summary) = run(&source, Format::W8A8Int8, None, Some(SHORT_CALIBRATION));
    check_smollm2(&out, &summary, Format::W8A8Int8, false, 64);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let gguf = ModelSource::open(&source).unwrap();
    let norm = "model.layers.3.post_attention_layernorm.weight";
    let source_norm =
        tessera_quant::dequantize_to_vec(DType::F32, gguf.tensor("blk.3.ffn_norm.weight").unwrap().bytes.as_ref())
            .unwrap();
    let written: Vec<f32> = st
        .tensor(norm)
        .unwrap()
        .data()
        .chunks_exact(2)
        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    let changed = source_norm.iter().zip(&written).filter(|(a, b)| (**a - **b).abs() > 0.01 * a.abs()).count();
    assert!(changed > 0, "smoothing left {norm} as it was");

    let model =
        tessera_runtime::LoadedModel::load(&source, std::sync::Arc::new(tessera_backend_cpu::CpuBackend::new(2)), None)
            .unwrap();
    let tokens = model.tokenizer.encode(SHORT_CALIBRATION, true, false);
    let vocab = model.config().vocab_size;
    let (top1, cosine) = agreement(&logits(&source, &tokens), &logits(&out, &tokens), vocab);
    assert!(top1 > 0.9 && cosine > 0.995, "top-1 {top1}, cosine {cosine}");
}

#[test]
fn gemma3_config_norms_and_tokenizer() {
    let Some(source) = test_model(GEMMA3_270M) else { return };
    let gguf = ModelSource::open(&source).unwrap();
    let (_dir, out, _) = run(&source, Format::Mxfp4Ct, None, None);
    let c = config(&out);
    assert_eq!(c["architectures"], serde_json::json!(["Gemma3ForCausalLM"]));
    assert_eq!(c["model_type"], "gemma3_text");
    assert_eq!(c["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(c["sliding_window"], 512);
    assert_eq!(c["query_pre_attn_scalar"], 256);
    assert_eq!(c["rope_local_base_freq"], 10000.0);
    let kinds = c["layer_types"].as_array().unwrap();
    assert_eq!(kinds.len(), 18);
    assert_eq!(kinds[5], "full_attention");
    assert_eq!(kinds[4], "sliding_attention");
    compare_model_keys(&gguf, &out);

    // GGUF stores Gemma's norms as 1 + w; the checkpoint holds w (in bf16).
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (gguf_name, hf) in [
        ("blk.2.attn_norm.weight", "model.layers.2.input_layernorm.weight"),
        ("blk.2.ffn_norm.weight", "model.layers.2.pre_feedforward_layernorm.weight"),
        ("blk.2.post_attention_norm.weight", "model.layers.2.post_attention_layernorm.weight"),
        ("blk.2.post_ffw_norm.weight", "model.layers.2.post_feedforward_layernorm.weight"),
        ("blk.2.attn_q_norm.weight", "model.layers.2.self_attn.q_norm.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ] {
        let src = tessera_quant::dequantize_to_vec(DType::F32, gguf.tensor(gguf_name).unwrap().bytes.as_ref()).unwrap();
        let view = st.tensor(hf).unwrap();
        assert_eq!(view.dtype(), Dtype::BF16);
        let got = tessera_quant::dequantize_to_vec(DType::BF16, view.data()).unwrap();
        for (g, s) in got.iter().zip(&src) {
            assert_eq!(*g, half::bf16::from_f32(s - 1.0).to_f32(), "{hf}");
        }
    }
    // The tokenizer travels as GGUF metadata.
    let tok = ModelSource::open(&out.join("tokenizer.gguf")).unwrap();
    assert_eq!(tok.metadata.get("tokenizer.ggml.tokens"), gguf.metadata.get("tokenizer.ggml.tokens"));
    assert!(tok.tensors.is_empty());
}

#[test]
fn refusals_name_the_problem() {
    let Some(source) = test_model(SMOLLM2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let options = |format, group_size| QuantizeOptions { group_size, ..QuantizeOptions::new(format) };
    let err = |o: &QuantizeOptions, out: &Path| quantize(&source, out, o, &mut NoProgress).unwrap_err().to_string();
    let e = err(&options(Format::W4A16Rtn, Some(128)), &dir.path().join("a"));
    assert!(e.contains("group size 128") && e.contains("576"), "{e}");
    let e = err(&options(Format::Nvfp4, Some(32)), &dir.path().join("b"));
    assert!(e.contains("fixed groups of 16"), "{e}");
    std::fs::write(dir.path().join("c"), b"x").unwrap();
    let e = err(&options(Format::W8A8Int8, None), &dir.path().join("c"));
    assert!(e.contains("is a file"), "{e}");
    // Nothing is left behind by a refused run.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("c")]);
}

/// Every position's logits of `tokens` under the model at `path`, on the CPU backend.
fn logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let backend = std::sync::Arc::new(tessera_backend_cpu::CpuBackend::new(2));
    let model =
        tessera_runtime::LoadedModel::load(path, backend, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ctx = model.new_context(tessera_runtime::ContextOptions::default()).unwrap();
    ctx.eval(tokens, tessera_runtime::Logits::All).unwrap()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
}

/// Fraction of positions whose most likely next token is the same, and the cosine similarity
/// of all logits.
fn agreement(a: &[f32], b: &[f32], vocab: usize) -> (f64, f64) {
    let rows = a.len() / vocab;
    let same = a.chunks_exact(vocab).zip(b.chunks_exact(vocab)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (same as f64 / rows as f64, dot / (norm(a) * norm(b)))
}

#[test]
fn smollm2_w4a16_runs_in_tessera_close_to_the_source() {
    let Some(source) = test_model(SMOLLM2) else { return };
    let (_dir, out, _) = run(&source, Format::W4A16Rtn, None, None);
    let backend = std::sync::Arc::new(tessera_backend_cpu::CpuBackend::new(2));
    let model = tessera_runtime::LoadedModel::load(&out, backend, None).unwrap();
    // Tessera reads the checkpoint: int4 groups as Q4_0, the tokenizer from tokenizer.gguf.
    assert_eq!(model.source.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_0);
    let prompt = model.tokenizer.encode("The ferryman walked down to the river and", true, false);
    let mut ctx = model.new_context(tessera_runtime::ContextOptions::default()).unwrap();
    let mut sampler =
        tessera_runtime::Sampler::new(tessera_runtime::SamplerOptions { temperature: 0.0, ..Default::default() });
    let options = tessera_runtime::GenerateOptions { max_tokens: 8, stop_at_eog: false };
    let mut generated = Vec::new();
    tessera_runtime::generate(&mut ctx, &prompt, &mut sampler, &options, |t| {
        generated.push(t);
        true
    })
    .unwrap();
    let text = model.tokenizer.decode(&generated);
    assert!(generated.len() == 8 && text.chars().any(char::is_alphabetic), "{text:?}");

    let tokens = model.tokenizer.encode(SHORT_CALIBRATION, true, false);
    let vocab = model.config().vocab_size;
    let (top1, cosine) = agreement(&logits(&source, &tokens), &logits(&out, &tokens), vocab);
    assert!(top1 > 0.5 && cosine > 0.9, "top-1 {top1}, cosine {cosine}");
}

#[test]
fn hugging_face_sources_keep_names_config_and_tokenizer() {
    let fixtures = tessera_testkit::fixtures_dir().join("hf");
    for (model, format, group) in [
        ("llama", Format::W8A8Int8, None),
        ("llama", Format::W4A16Gptq, Some(32)),
        ("gemma3", Format::W4A16Awq, Some(32)),
    ] {
        let source = fixtures.join(model);
        let (_dir, out, _) = run(&source, format, group, Some(SHORT_CALIBRATION));
        let c = config(&out);
        let original: Json = serde_json::from_slice(&std::fs::read(source.join("config.json")).unwrap()).unwrap();
        for key in ["architectures", "hidden_size", "num_hidden_layers", "rope_theta", "vocab_size", "eos_token_id"] {
            assert_eq!(c[key], original[key], "{model} {key}");
        }
        // The fixtures are F32: the checkpoint is BF16.
        assert_eq!(c["torch_dtype"], "bfloat16");
        assert_eq!(c["quantization_config"]["format"], ct_format(format));
        for file in ["tokenizer.json", "generation_config.json"] {
            assert_eq!(std::fs::read(out.join(file)).unwrap(), std::fs::read(source.join(file)).unwrap(), "{file}");
        }
        let found = tensors(&out);
        let weight = if format == Format::W8A8Int8 { "weight" } else { "weight_packed" };
        assert!(found.contains_key(&format!("model.layers.1.mlp.down_proj.{weight}")), "{model}");
        assert!(found.contains_key("model.layers.1.input_layernorm.weight"));

        let src = ModelSource::open(&source).unwrap();
        let vocab = src.tensor("token_embd.weight").unwrap().shape.rows();
        let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % vocab as u32).collect();
        let (top1, cosine) = agreement(&logits(&source, &tokens), &logits(&out, &tokens), vocab);
        let min_cosine = if format == Format::W8A8Int8 { 0.999 } else { 0.95 };
        assert!(cosine > min_cosine, "{model} {format}: top-1 {top1}, cosine {cosine}");
    }
}

/// The calibrated formats choose the same scales and codes whatever the number of threads: the
/// searches sum their errors in a fixed order.
#[test]
fn calibrated_checkpoints_do_not_depend_on_the_thread_count() {
    let source = tessera_testkit::fixtures_dir().join("hf/llama");
    for (format, group) in [(Format::W8A8Int8, None), (Format::W4A16Awq, Some(32)), (Format::W4A16Gptq, Some(32))] {
        let bytes: Vec<Vec<u8>> = [1, 3]
            .iter()
            .map(|&threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let (_dir, out, _) = pool.install(|| run(&source, format, group, Some(SHORT_CALIBRATION)));
                std::fs::read(out.join("model.safetensors")).unwrap()
            })
            .collect();
        assert!(bytes[0] == bytes[1], "{format}: 1 and 3 threads wrote different checkpoints");
    }
}
