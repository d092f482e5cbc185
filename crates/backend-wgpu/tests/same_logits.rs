//! Models' logits on the wgpu backend (exact numerics) against the CPU backend's block kernels
//! (the AVX2 build, whose lane order the shaders reproduce; AVX-512's packed kernels add in
//! another order), for a prompt and eight greedy steps: bit for bit. f32 arithmetic in another
//! order would miss by tenths on these models, whose activation outliers amplify any last-bit
//! difference.

use std::path::Path;
use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_cpu::{CpuBackend, Isa};
use tessera_backend_wgpu::Numerics;
use tessera_runtime::{ContextOptions, LoadedModel, Logits};
use tessera_testkit::{test_model, GEMMA3_270M, SMOLLM2};

mod common;

fn assert_same_logits(path: &Path, prompt: &[u32]) {
    let Some(gpu) = common::adapter(Numerics::Exact) else { return };
    if !gpu.info().name.contains("exact") {
        return eprintln!("skipped: the adapter has no f64, so its numerics are not the CPU's");
    }
    let Ok(cpu) = CpuBackend::with_isa(2, Isa::Avx2) else {
        return eprintln!("skipped: no AVX2 here, whose kernels' order the exact shaders follow");
    };
    let cpu: Arc<dyn Backend> = Arc::new(cpu);
    let on_cpu = LoadedModel::load(path, cpu.clone(), None).unwrap();
    let on_gpu = LoadedModel::load(path, Arc::new(gpu), Some(cpu)).unwrap();
    let options = ContextOptions { n_ctx: 64, ..Default::default() };
    let (mut a, mut b) = (on_cpu.new_context(options).unwrap(), on_gpu.new_context(options).unwrap());
    let (mut la, mut lb) = (a.eval(prompt, Logits::All).unwrap(), b.eval(prompt, Logits::All).unwrap());
    let vocab = la.len() / prompt.len();
    for step in 0..8 {
        let differ = la.iter().zip(&lb).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert_eq!(differ, 0, "step {step}: {differ} of {} logits differ", la.len());
        let last = &la[la.len() - vocab..];
        let next = last.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, _)| i as u32).unwrap();
        la = a.eval(&[next], Logits::Last).unwrap();
        lb = b.eval(&[next], Logits::Last).unwrap();
    }
}

#[test]
fn smollm2_logits_equal_the_cpu_backend() {
    // "The capital of France is", as llama.cpp tokenizes it.
    if let Some(path) = test_model(SMOLLM2) {
        assert_same_logits(&path, &[504, 3575, 282, 4649, 314]);
    }
}

#[test]
fn gemma3_logits_equal_the_cpu_backend() {
    // "<bos>The capital of France is".
    if let Some(path) = test_model(GEMMA3_270M) {
        assert_same_logits(&path, &[2, 818, 5279, 529, 7001, 563]);
    }
}
