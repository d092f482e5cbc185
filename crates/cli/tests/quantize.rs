//! `tessera quantize` end to end: the summary it prints and its errors.

use std::path::Path;
use std::process::Output;

use tessera_testkit::{fixtures_dir, test_model, SMOLLM2};

mod common;
use common::{assert_one_line_error, stderr, stdout};

fn tessera(args: &[&str]) -> Output {
    let with_command: Vec<&str> = ["quantize"].iter().chain(args).copied().collect();
    common::tessera(&with_command)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn quantizing_prints_a_summary_per_type() {
    let Some(model) = test_model(SMOLLM2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-q8_0.gguf");
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, "Some text.").unwrap();
    let o = tessera(&["-m", path(&model), "-o", path(&out), "--format", "q8_0", "--calib", path(&calib), "-t", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "source tensors in q4_1: dequantized to f32 before quantizing", "{text}");
    assert!(lines[1].starts_with("type") && lines[1].ends_with("bits/w"), "{text}");
    // SmolLM2's 61 norms stay F32; its 211 weights become Q8_0 at 8.5 bits each.
    assert!(lines[2].starts_with("f32") && lines[2].contains(" 61 "), "{text}");
    assert!(lines[3].starts_with("q8_0") && lines[3].contains(" 211 ") && lines[3].ends_with("8.50"), "{text}");
    assert!(lines[4].starts_with("total") && lines[4].contains(" 272 ") && lines[4].contains("134,515,008"), "{text}");
    assert!(lines[5].starts_with("wrote ") && lines[5].ends_with("(138.1 MiB)"), "{text}");
    // Not a terminal: no progress bar, only the note that q8_0 does not calibrate.
    assert_eq!(stderr(&o).trim(), "note: --calib is not used by q8_0; only w8a8-int8, w4a16-awq, w4a16-gptq calibrate");
    assert!(out.is_file() && !dir.path().join("smollm2-q8_0.gguf.partial").exists());
}

#[test]
fn an_unknown_format_lists_the_valid_ones() {
    let o = tessera(&["-m", "x.gguf", "-o", "y.gguf", "--format", "q3_k"]);
    assert_one_line_error(&o, "unknown format \"q3_k\"; one of: f32, f16, bf16, q8_0, q4_0, q4_1");
}

#[test]
fn a_missing_source_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let o = tessera(&["-m", path(&missing), "-o", path(&dir.path().join("out.gguf")), "--format", "q4_0"]);
    assert_one_line_error(&o, "is neither an existing file or directory nor a known name");
}

#[test]
fn a_directory_that_is_not_a_model_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = tessera(&["-m", path(dir.path()), "-o", path(&dir.path().join("out")), "--format", "w8a8-int8"]);
    assert_one_line_error(&o, "not a model: expected a .gguf file or a directory with config.json");
    assert_eq!(stderr(&o).matches("not a model").count(), 1, "{}", stderr(&o));
}

#[test]
fn the_source_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"GGUF not really").unwrap();
    let o = tessera(&["-m", path(&model), "-o", path(&dir.path().join(".").join("m.gguf")), "--format", "q4_0"]);
    assert_one_line_error(&o, "refusing to overwrite the source model");
    assert_eq!(std::fs::read(&model).unwrap(), b"GGUF not really");
}

#[test]
fn an_unreadable_calibration_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"GGUF").unwrap();
    let calib = dir.path().join("no-such-text.txt");
    let out = dir.path().join("out.gguf");
    let o = tessera(&["-m", path(&model), "-o", path(&out), "--format", "q4_0", "--calib", path(&calib)]);
    assert_one_line_error(&o, "reading the calibration text");
    assert!(stderr(&o).contains("no-such-text.txt"));
}

#[test]
fn gguf_output_from_a_hugging_face_directory_says_how_to_get_there() {
    let dir = tempfile::tempdir().unwrap();
    let hf = fixtures_dir().join("hf/llama");
    let out = dir.path().join("out.gguf");
    let o = tessera(&["-m", path(&hf), "-o", path(&out), "--format", "q8_0"]);
    assert_one_line_error(&o, "GGUF output needs a GGUF source");
    assert!(stderr(&o).contains("convert_hf_to_gguf.py"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn a_group_size_the_format_cannot_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hf = fixtures_dir().join("hf/llama");
    let out = dir.path().join("out");
    let o = tessera(&["-m", path(&hf), "-o", path(&out), "--format", "w4a16-rtn", "--group-size", "0"]);
    assert_one_line_error(&o, "--group-size must be at least 1");
    let o = tessera(&["-m", path(&hf), "-o", path(&out), "--format", "fp8-e4m3", "--group-size", "16"]);
    assert_one_line_error(&o, "--group-size 0 (one per tensor), not 16");
    assert!(!out.exists());
    // 0 is fp8-e4m3's per-tensor scale.
    let o = tessera(&["-m", path(&hf), "-o", path(&out), "--format", "fp8-e4m3", "--group-size", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("\"strategy\": \"tensor\"") || config.contains("\"strategy\":\"tensor\""), "{config}");
}
