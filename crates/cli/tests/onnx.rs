//! ONNX end to end on the tiny Hugging Face fixture: `tessera export onnx`, the exported
//! directory run by `tessera run` on ONNX Runtime's CPU provider and on Qualcomm's QNN HTP
//! (emulated on x86-64 by the onnxruntime-qnn package), every node on the HTP, the EPContext
//! binaries written and loaded again, `tessera eval` on an export, and the JIT backend
//! (`--backend ort:cpu`) on a Tessera model. Without ONNX Runtime these skip locally and fail
//! under CI (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};

use tessera_testkit::{fixtures_dir, missing_prerequisite, python_imports};

mod common;
use common::{assert_one_line_error, stderr, stdout, tessera};

fn tiny() -> PathBuf {
    fixtures_dir().join("hf").join("llama")
}

fn have(modules: &[&str]) -> bool {
    let ok = python_imports(modules);
    if !ok {
        missing_prerequisite(&format!("python3 cannot import {modules:?} (scripts/test.sh installs them)"));
    }
    ok
}

fn export(dir: &Path, extra: &[&str]) {
    let out = dir.to_str().unwrap();
    let model = tiny();
    let mut args = vec!["export", "onnx", "-m", model.to_str().unwrap(), "-o", out, "--seq-len", "4", "--ctx", "64"];
    args.extend_from_slice(extra);
    let o = tessera(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("prefill.onnx: 4 tokens"), "{}", stdout(&o));
}

/// An fp32 export of the tiny model in a fresh directory (kept while the guard lives).
fn fp32_export() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fp32");
    export(&out, &[]);
    (dir, out)
}

/// Greedy text of `tessera run` with the given model and backend.
fn greedy(model: &str, backend: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["run", "-m", model, "--backend", backend, "-p", "hello world", "-n", "12", "--temp", "0"];
    args.extend_from_slice(&["--no-perf"]);
    args.extend_from_slice(extra);
    let o = tessera(&args);
    assert!(o.status.success(), "{backend}: {}", stderr(&o));
    // The x86-64 HTP emulator library prints a line of its own to stdout.
    let text: String = stdout(&o).split_inclusive('\n').filter(|l| !l.contains("# LIBNATIVE:")).collect();
    (text, stderr(&o))
}

#[test]
fn the_jit_backend_and_an_fp32_export_give_the_cpu_tokens() {
    if !have(&["onnxruntime"]) {
        return;
    }
    let model = tiny();
    let model = model.to_str().unwrap();
    let (cpu, _) = greedy(model, "cpu", &[]);
    // --no-cpu-fallback with the CPU provider itself: its kernels are the device.
    let (jit, log) = greedy(model, "ort:cpu", &["--no-cpu-fallback"]);
    assert_eq!(jit, cpu);
    assert!(log.contains("All nodes placed on [CPUExecutionProvider]"), "{log}");

    let (_dir, out) = fp32_export();
    let (exported, _) = greedy(out.to_str().unwrap(), "ort:cpu", &[]);
    assert_eq!(exported, cpu);
}

#[test]
fn a_qdq_export_runs_whole_on_the_qnn_htp_and_its_context_binary_loads_again() {
    if !have(&["onnxruntime", "onnxruntime_qnn"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a16w8");
    export(&out, &["--precision", "qdq-a16w8"]);
    let model = out.to_str().unwrap();
    let (cpu_text, _) = greedy(model, "ort:cpu", &[]);
    let (htp_text, log) = greedy(model, "ort:qnn", &["--no-cpu-fallback"]);
    assert!(log.contains("All nodes placed on [QNNExecutionProvider]"), "{log}");
    // --no-cpu-fallback: a session in which ONNX Runtime's CPU kernels took a node fails.
    assert!(log.contains("prefill.onnx: compiled"), "{log}");
    for file in ["prefill.qnn_ctx.onnx", "decode.qnn_ctx.onnx"] {
        assert!(out.join(file).is_file(), "{file} was not written");
    }
    // The same quantized graph on two runtimes: at most a few tokens apart on random weights.
    let same = cpu_text.chars().zip(htp_text.chars()).take_while(|(a, b)| a == b).count();
    assert!(same >= 4, "HTP {htp_text:?} vs CPU {cpu_text:?}");

    let (again, log) = greedy(model, "ort:qnn", &["--no-cpu-fallback"]);
    assert!(log.contains("prefill.onnx: loaded precompiled"), "{log}");
    assert!(log.contains("decode.onnx: loaded precompiled"), "{log}");
    assert_eq!(again, htp_text);
}

/// Tessera's own graphs on the HTP (in fp16): a multi-token prompt, whose last layer adds two
/// row selections (which the HTP adds wrongly as they are), gives the CPU backend's tokens.
#[test]
fn the_jit_backend_on_the_qnn_htp_gives_the_cpu_tokens() {
    if !have(&["onnxruntime", "onnxruntime_qnn"]) {
        return;
    }
    let model = tiny();
    let model = model.to_str().unwrap();
    let (cpu, _) = greedy(model, "cpu", &[]);
    let (htp, log) = greedy(model, "ort:qnn", &["--no-cpu-fallback"]);
    assert!(log.contains("All nodes placed on [QNNExecutionProvider]"), "{log}");
    assert_eq!(htp, cpu);
}

#[test]
fn eval_scores_an_export_against_the_model_it_came_from() {
    if !have(&["onnxruntime"]) {
        return;
    }
    let (_dir, out) = fp32_export();
    let text = fixtures_dir().join("text").join("ppl.txt");
    let model = tiny();
    let args = [
        "eval",
        "-m",
        model.to_str().unwrap(),
        "-m",
        out.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        "32",
        "--chunks",
        "3",
    ];
    let o = tessera(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let row = table.lines().find(|l| l.starts_with("fp32")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.trim_end().ends_with("100.00 %"), "{row}");
}

#[test]
fn bad_export_and_backend_arguments_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "taken").unwrap();
    let model = tiny();
    let model = model.to_str().unwrap();
    let busy = dir.path().to_str().unwrap();
    assert_one_line_error(&tessera(&["export", "onnx", "-m", model, "-o", busy]), "not an empty directory");
    let fresh = dir.path().join("new");
    let fresh = fresh.to_str().unwrap();
    let o = tessera(&["export", "onnx", "-m", model, "-o", fresh, "--seq-len", "128", "--ctx", "64"]);
    assert_one_line_error(&o, "--seq-len");
    let run = |backend: &str, extra: &[&str]| {
        let mut args = vec!["run", "-m", model, "--backend", backend, "-p", "hi", "-n", "1"];
        args.extend_from_slice(extra);
        tessera(&args)
    };
    assert_one_line_error(&run("ort:tpu", &[]), "unknown ONNX Runtime provider");
    assert_one_line_error(&run("cpu", &["--ep-opt", "a=b"]), "--ep-opt is for the ONNX Runtime backends");
    assert_one_line_error(&run("ort:cpu", &["--ep-opt", "novalue"]), "is not KEY=VALUE");
}

#[test]
fn an_export_runs_only_on_onnx_runtime_and_cann_says_why_it_cannot_start() {
    if !have(&["onnxruntime"]) {
        return;
    }
    let (_dir, out) = fp32_export();
    let model = out.to_str().unwrap();
    let o = tessera(&["run", "-m", model, "--backend", "cpu", "-p", "hi", "-n", "1"]);
    assert_one_line_error(&o, "an exported model runs on ONNX Runtime");
    // The standard onnxruntime package has no CANN provider: the session set-up says so.
    let o = tessera(&["run", "-m", model, "--backend", "ort:cann", "-p", "hi", "-n", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("CANN"), "{}", stderr(&o));
}
