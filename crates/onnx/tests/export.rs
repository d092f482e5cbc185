//! Exported models run by ONNX Runtime's own Python package (`scripts/onnx/run_exported.py`,
//! driven by the manifest alone) give the logits that `transformers` recorded for the tiny
//! fixtures and that Tessera's CPU backend computes, within 1e-3 of the largest logit.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_cpu::CpuBackend;
use tessera_onnx::export::{export_model, ExportOptions, Manifest};
use tessera_onnx::Precision;
use tessera_runtime::{ContextOptions, LoadedModel, Logits};

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Largest difference relative to the largest reference magnitude.
fn relative_error(got: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(got.len(), reference.len());
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(reference).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Runs an export directory with ONNX Runtime's Python package over `tokens`.
fn onnx_runtime_logits(dir: &Path, tokens: &[u32], provider: &str) -> Option<Vec<f32>> {
    let mut modules = vec!["onnxruntime", "numpy"];
    if provider == "qnn" {
        modules.push("onnxruntime_qnn");
    }
    if !tessera_testkit::python_imports(&modules) {
        tessera_testkit::missing_prerequisite(&format!(
            "python3 cannot import {modules:?} (scripts/test.sh installs them)"
        ));
        return None;
    }
    let tokens_file = dir.join("tokens.json");
    std::fs::write(&tokens_file, serde_json::to_string(tokens).unwrap()).unwrap();
    let out = dir.join("logits.f32");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/onnx/run_exported.py");
    let status = Command::new("python3")
        .arg(script)
        .args([dir.as_os_str(), tokens_file.as_os_str(), out.as_os_str()])
        .args(["--provider", provider])
        .status()
        .unwrap();
    assert!(status.success(), "run_exported.py failed");
    Some(read_f32(&out))
}

fn fixture(name: &str) -> (std::path::PathBuf, Vec<u32>, Vec<f32>) {
    let dir = tessera_testkit::fixtures_dir().join("hf").join(name);
    let meta = tessera_testkit::read_json(dir.join("reference_logits.json"));
    let ids = tessera_testkit::ids(&meta["input_ids"]);
    let logits = read_f32(&dir.join("reference_logits.bin"));
    (dir, ids, logits)
}

/// The model at `path` on Tessera's CPU backend.
fn on_cpu(path: &Path, threads: usize) -> LoadedModel {
    LoadedModel::load(path, Arc::new(CpuBackend::new(threads)) as Arc<dyn Backend>, None).unwrap()
}

/// `cpu_tolerance`: the CPU backend rounds activations to BF16 before BF16 weights, as ggml does.
fn check(name: &str, cpu_tolerance: f32) {
    let (path, tokens, reference) = fixture(name);
    let model = on_cpu(&path, 1);
    let out = tempfile::tempdir().unwrap();
    // A prefill of 5 and a decode graph: 12 tokens take both (5 + 5 + 1 + 1).
    let options = ExportOptions { precision: Precision::Fp32, quantize: None, seq_len: 5, context: 16 };
    let manifest = export_model(&model, out.path(), options, None).unwrap();
    assert_eq!(Manifest::read(out.path()).unwrap(), manifest);

    let mut ctx =
        model.new_context(ContextOptions { n_ctx: 16, n_batch: 16, kv_type: tessera_backend::DType::F32 }).unwrap();
    let tessera = ctx.eval(&tokens, Logits::All).unwrap();
    let Some(onnx) = onnx_runtime_logits(out.path(), &tokens, "cpu") else { return };
    let vs_transformers = relative_error(&onnx, &reference);
    let vs_tessera = relative_error(&onnx, &tessera);
    eprintln!("{name}: ONNX Runtime vs transformers {vs_transformers:.2e}, vs Tessera CPU {vs_tessera:.2e}");
    assert!(vs_transformers < 1e-3, "{name}: {vs_transformers} from transformers");
    assert!(vs_tessera < cpu_tolerance, "{name}: {vs_tessera} from Tessera's CPU backend");
}

#[test]
fn llama_export_matches_transformers_and_the_cpu_backend() {
    check("llama", 1e-3);
}

#[test]
fn qwen2_export_matches_transformers_and_the_cpu_backend() {
    check("qwen2", 1e-3);
}

#[test]
fn qwen3_export_matches_transformers_and_the_cpu_backend() {
    // BF16 weights: the CPU backend rounds activations to BF16 first, the export does not.
    check("qwen3", 1e-2);
}

#[test]
fn gemma3_export_matches_transformers_and_the_cpu_backend() {
    check("gemma3", 1e-3);
}

#[test]
fn an_fp16_export_stays_within_half_precision_of_transformers() {
    let (path, tokens, reference) = fixture("llama");
    let model = on_cpu(&path, 1);
    let out = tempfile::tempdir().unwrap();
    let options = ExportOptions { precision: Precision::Fp16, quantize: None, seq_len: 5, context: 16 };
    export_model(&model, out.path(), options, None).unwrap();
    let Some(onnx) = onnx_runtime_logits(out.path(), &tokens, "cpu") else { return };
    let err = relative_error(&onnx, &reference);
    eprintln!("llama fp16: {err:.2e} from transformers");
    assert!(err < 1e-2, "{err}");
}

#[test]
fn a_sequence_length_longer_than_the_context_is_refused() {
    let (path, _, _) = fixture("llama");
    let model = on_cpu(&path, 1);
    let out = tempfile::tempdir().unwrap();
    let options = ExportOptions { precision: Precision::Fp32, quantize: None, seq_len: 32, context: 16 };
    let err = export_model(&model, out.path(), options, None).unwrap_err().to_string();
    assert!(err.contains("--seq-len"), "{err}");
}

/// The real test models, exported in fp32 from their dequantized weights, against Tessera's CPU
/// backend on the same weights (an F32 GGUF of them): within 1e-3 of the largest logit over a
/// prompt that takes the prefill graph and then the decode graph.
#[test]
fn real_models_in_fp32_match_the_cpu_backend_on_the_same_weights() {
    for file in [tessera_testkit::SMOLLM2, tessera_testkit::GEMMA3_270M] {
        let Some(source) = tessera_testkit::test_model(file) else { continue };
        let dir = tempfile::tempdir().unwrap();
        let f32_path = dir.path().join("f32.gguf");
        let options = tessera_quantize::QuantizeOptions::new(tessera_quantize::Format::F32);
        tessera_quantize::quantize(&source, &f32_path, &options, &mut tessera_quantize::NoProgress).unwrap();
        let model = on_cpu(&f32_path, 2);
        let text = "The history of the printing press begins in China, where woodblock printing spread";
        let tokens = model.tokenizer.encode(text, model.tokenizer.add_bos_by_default(), false);
        let out = dir.path().join("export");
        let options = ExportOptions { precision: Precision::Fp32, quantize: None, seq_len: 8, context: 32 };
        export_model(&model, &out, options, None).unwrap();
        let mut ctx =
            model.new_context(ContextOptions { n_ctx: 32, n_batch: 32, kv_type: tessera_backend::DType::F32 }).unwrap();
        let tessera = ctx.eval(&tokens, Logits::All).unwrap();
        drop(ctx);
        drop(model);
        std::fs::remove_file(&f32_path).unwrap();
        let Some(onnx) = onnx_runtime_logits(&out, &tokens, "cpu") else { return };
        let err = relative_error(&onnx, &tessera);
        eprintln!("{file}: {} tokens, ONNX Runtime vs Tessera CPU {err:.2e}", tokens.len());
        assert!(err < 1e-3, "{file}: {err}");
    }
}
