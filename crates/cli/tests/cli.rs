//! The `tessera` binary end to end: real models, Hugging Face directories, and its errors.

use std::path::Path;

use tessera_formats::{GgufWriter, Metadata, Value};
use tessera_testkit::{fixtures_dir, test_model, GEMMA3_270M, SMOLLM2};

mod common;
use common::{assert_one_line_error, stderr, stdout, tessera};

#[test]
fn run_continues_the_capital_of_france_with_paris() {
    if test_model(SMOLLM2).is_none() {
        return;
    }
    let o = tessera(&["run", "-m", "smollm2", "-p", "The capital of France is", "-n", "16", "--temp", "0", "-t", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(" Paris."), "{:?}", stdout(&o));
    assert!(stderr(&o).contains("tok/s"), "timings are printed: {}", stderr(&o));
}

#[test]
fn chat_applies_the_model_template() {
    if test_model(SMOLLM2).is_none() {
        return;
    }
    let q = "What is the capital of France? Answer in one sentence.";
    let o = tessera(&["run", "--chat", "-p", q, "-n", "32", "--temp", "0", "-t", "2", "--no-perf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // llama.cpp's reply for the same template and prompt (tests/fixtures/greedy/smollm2.json).
    assert_eq!(stdout(&o).trim(), "The capital of France is Paris.");
}

#[test]
fn models_without_a_template_chat_with_a_built_in_one() {
    if test_model(GEMMA3_270M).is_none() {
        return;
    }
    let q = "What is the capital of France? Answer in one sentence.";
    let o =
        tessera(&["run", "-m", "gemma3-270m", "--chat", "-p", q, "-n", "12", "--temp", "0", "-t", "2", "--no-perf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("built-in gemma template"), "{}", stderr(&o));
    // The base model echoes the question, as it does under llama.cpp's built-in gemma template
    // (tests/fixtures/greedy/gemma3-270m.json, case "chat").
    assert_eq!(stdout(&o).trim(), q);
}

#[test]
fn tokenize_prints_llama_cpp_ids() {
    if test_model(SMOLLM2).is_none() {
        return;
    }
    let o = tessera(&["tokenize", "-m", "smollm2", "The capital of France is"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[504,3575,282,4649,314]");
}

#[test]
fn inspect_describes_the_model() {
    if test_model(SMOLLM2).is_none() {
        return;
    }
    let o = tessera(&["inspect", "smollm2"]);
    let out = stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(o.status.success(), "{}", stderr(&o));
    for needle in ["architecture: llama", "layers: 30", "49152 tokens", "chat template:", "q4_1", "q8_0", "GGUF v3"] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}

#[test]
fn hugging_face_directories_run_and_score() {
    let dir = fixtures_dir().join("hf/qwen3");
    let dir = dir.to_str().expect("utf-8 path");
    let o = tessera(&["run", "-m", dir, "-p", "The Licensor", "-n", "4", "--temp", "0", "--no-perf"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fixtures_dir().join("text/ppl.txt");
    let o = tessera(&["eval", "ppl", "-m", dir, "-f", text.to_str().expect("utf-8"), "-c", "64", "--chunks", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Final estimate: PPL = "), "{}", stdout(&o));
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_1() {
    assert_one_line_error(&tessera(&["run", "-m", "/no/such/model.gguf", "-p", "x"]), "/no/such/model.gguf");
    assert_one_line_error(&tessera(&["run", "--no-such-flag"]), "--no-such-flag");
    assert_one_line_error(&tessera(&["inspect", "not-a-known-name"]), "smollm2");
    let hf = fixtures_dir().join("hf/llama");
    let hf = hf.to_str().expect("utf-8");
    assert_one_line_error(&tessera(&["run", "-m", hf, "-p", "x", "--backend", "tpu"]), "unknown backend");
    assert_one_line_error(&tessera(&["run", "-m", hf, "-p", "x", "--backend", "cpu:sse9"]), "not an instruction set");
    assert_one_line_error(&tessera(&["run", "-m", hf, "-p", "x", "--top-p", "1.5"]), "top-p");
    assert_one_line_error(&tessera(&["run", "-m", hf, "-p", "x", "-t", "0"]), "threads");

    let dir = std::env::temp_dir().join(format!("tessera-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut meta = Metadata::new();
    meta.insert("general.architecture", Value::String("mamba9".into()));
    let path = dir.join("unknown-arch.gguf");
    let mut w = GgufWriter::new();
    w.add_all_metadata(&meta).expect("metadata");
    w.write_file(&path).expect("write gguf");
    assert_one_line_error(&tessera(&["run", "-m", path.to_str().expect("utf-8"), "-p", "x"]), "mamba9");

    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff").expect("write");
    assert_one_line_error(&tessera(&["inspect", garbage.to_str().expect("utf-8")]), "garbage.gguf");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["tokenize", "--help"],
        &["inspect", "--help"],
        &["eval", "ppl", "--help"],
        &["pull", "--help"],
        &["devices", "--help"],
    ] {
        let o = tessera(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn devices_lists_the_cpu() {
    let o = tessera(&["devices"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("cpu"), "{}", stdout(&o));
    assert!(Path::new(env!("CARGO_BIN_EXE_tessera")).exists());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    if test_model(SMOLLM2).is_none() {
        return;
    }
    // More output than a pipe buffers, so the writes meet the closed pipe.
    let text = "hello world ".repeat(8000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["tokenize", "-m", "smollm2", &text])
        .env("TESSERA_MODELS_DIR", tessera_testkit::models_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    const SIGPIPE: i32 = 13;
    assert!(o.status.success() || o.status.signal() == Some(SIGPIPE), "{:?}: {err}", o.status);
}
