//! The wgpu backend end to end: `tessera devices` lists adapters, and a model run on the GPU
//! backend gives the CPU backend's greedy tokens. Without a GPU, Mesa's software Vulkan driver
//! (lavapipe, which `scripts/test.sh` installs) is the adapter; under CI one must be found.

use std::process::Command;

use tessera_testkit::{missing_prerequisite, models_dir, test_model, SMOLLM2};

mod common;
use common::{stderr, stdout, tessera};

/// Whether an adapter answers; a test without one skips locally and fails under CI.
fn adapter_found() -> bool {
    let o = tessera(&["devices"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let found = stdout(&o).lines().any(|l| l.starts_with("wgpu:"));
    if !found {
        missing_prerequisite("no wgpu adapter (scripts/test.sh installs lavapipe: mesa-vulkan-drivers)");
    }
    found
}

#[test]
fn devices_lists_adapters_with_their_limits() {
    if !adapter_found() {
        return;
    }
    let out = stdout(&tessera(&["devices"]));
    assert!(out.lines().next().is_some_and(|l| l.starts_with("cpu")), "{out}");
    for key in ["max storage binding:", "max workgroup size:", "features:"] {
        assert!(out.contains(key), "{key} missing from:\n{out}");
    }
}

#[test]
fn run_on_wgpu_gives_the_cpu_tokens() {
    if test_model(SMOLLM2).is_none() || !adapter_found() {
        return;
    }
    let args = ["run", "-m", "smollm2", "-p", "The capital of France is", "-n", "16", "--temp", "0", "--no-perf"];
    // The exact shaders follow the AVX2 block kernels' order (AVX-512's packed kernels differ).
    let cpu = tessera(&[&args[..], &["--backend", "cpu:avx2"]].concat());
    if stderr(&cpu).contains("does not support avx2") {
        return eprintln!("skipped: no AVX2 here, whose kernels' order the exact shaders follow");
    }
    let gpu = tessera(&[&args[..], &["--backend", "wgpu"]].concat());
    assert!(cpu.status.success() && gpu.status.success(), "{}{}", stderr(&cpu), stderr(&gpu));
    assert!(stdout(&cpu).starts_with(" Paris."), "{}", stdout(&cpu));
    assert_eq!(stdout(&gpu), stdout(&cpu), "wgpu and cpu differ");
}

#[test]
fn relaxed_numerics_continue_sensibly() {
    if test_model(SMOLLM2).is_none() || !adapter_found() {
        return;
    }
    let args = ["run", "-m", "smollm2", "-p", "The capital of France is", "-n", "4", "--temp", "0", "--no-perf"];
    let o = tessera(&[&args[..], &["--backend", "wgpu-relaxed"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(" Paris."), "{}", stdout(&o));
}

#[test]
fn bench_runs_on_wgpu() {
    if test_model(SMOLLM2).is_none() || !adapter_found() {
        return;
    }
    let o = tessera(&["bench", "-m", "smollm2", "--backend", "wgpu", "-p", "16", "-n", "4", "-r", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let records = records.as_array().expect("an array");
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r["avg_ts"].as_f64().is_some_and(|t| t > 0.0)), "{records:?}");
}

#[test]
fn a_missing_adapter_is_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["run", "-m", "smollm2", "-p", "x", "-n", "1", "--backend", "wgpu:99"])
        .env("TESSERA_MODELS_DIR", models_dir())
        .output()
        .expect("tessera starts");
    assert_eq!(o.status.code(), Some(1));
    // The Vulkan loader may print its own notes before ours.
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: backend wgpu:99") && last.contains("no adapter 99"), "{last}");
    let o = tessera(&["run", "-m", "smollm2", "-p", "x", "-n", "1", "--backend", "wgpu:x"]);
    assert!(stderr(&o).contains("\"x\" is not an adapter number"), "{}", stderr(&o));
}
