//! SmolLM2's logits on the wgpu backend (exact numerics) against the CPU backend's, for a prompt
//! and eight greedy steps. The kernels round as the CPU's do, so the logits agree to rounding
//! noise (a rare last-bit difference in exp); f32 arithmetic in another order would miss by
//! tenths on this model, whose activation outliers amplify any last-bit difference.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_cpu::CpuBackend;
use tessera_backend_wgpu::{Numerics, WgpuBackend};
use tessera_runtime::{ContextOptions, LoadedModel, Logits};
use tessera_testkit::{test_model, SMOLLM2};

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn smollm2_logits_equal_the_cpu_backend() {
    let Some(path) = test_model(SMOLLM2) else { return };
    let gpu = match WgpuBackend::new(None, Numerics::Exact) {
        Ok(b) => b,
        Err(e) if std::env::var_os("CI").is_none() => return eprintln!("skipped: {e}"),
        Err(e) => panic!("CI runs the wgpu backend on lavapipe: {e}"),
    };
    let cpu: Arc<dyn Backend> = Arc::new(CpuBackend::new(2));
    let on_cpu = LoadedModel::load(&path, cpu.clone(), None).unwrap();
    let on_gpu = LoadedModel::load(&path, Arc::new(gpu), Some(cpu)).unwrap();
    let options = ContextOptions { n_ctx: 64, ..Default::default() };
    let (mut a, mut b) = (on_cpu.new_context(options).unwrap(), on_gpu.new_context(options).unwrap());
    // "The capital of France is", as llama.cpp tokenizes it.
    let prompt = [504u32, 3575, 282, 4649, 314];
    let (mut la, mut lb) = (a.eval(&prompt, Logits::All).unwrap(), b.eval(&prompt, Logits::All).unwrap());
    let vocab = la.len() / prompt.len();
    for step in 0..8 {
        let d = max_difference(&la, &lb);
        assert!(d < 1e-3, "step {step}: logits differ by up to {d}");
        let last = &la[la.len() - vocab..];
        let next = last.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, _)| i as u32).unwrap();
        la = a.eval(&[next], Logits::Last).unwrap();
        lb = b.eval(&[next], Logits::Last).unwrap();
    }
}
