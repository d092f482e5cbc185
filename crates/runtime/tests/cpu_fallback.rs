//! Ops a backend declines run on the CPU through `fallback::execute`, with the same results.

use std::sync::Arc;

use tessera_backend::{Backend, Op};
use tessera_backend_cpu::CpuBackend;
use tessera_backend_tests::AlteredBackend;
use tessera_runtime::{ContextOptions, LoadedModel, Logits};
use tessera_testkit::fixtures_dir;

fn logits(model: &LoadedModel, tokens: &[u32]) -> Vec<f32> {
    let mut ctx =
        model.new_context(ContextOptions { n_ctx: 32, n_batch: 4, ..ContextOptions::default() }).expect("context");
    let mut out = ctx.eval(&tokens[..6], Logits::All).expect("prompt");
    out.extend(ctx.eval(&tokens[6..], Logits::All).expect("continuation"));
    out
}

#[test]
fn declined_ops_run_on_the_cpu_with_identical_results() {
    let tokens = [54, 74, 71, 477, 430, 386, 86, 85, 328];
    for name in ["llama", "gemma3"] {
        let dir = fixtures_dir().join("hf").join(name);
        let cpu = LoadedModel::load(&dir, Arc::new(CpuBackend::new(2)), None).expect("loads on the CPU");
        // A device that lacks RoPE, attention and the gated activations.
        let declines = |op: &Op| matches!(op, Op::Rope { .. } | Op::Attention { .. } | Op::SwiGlu | Op::GeGlu);
        let partial: Arc<dyn Backend> =
            Arc::new(AlteredBackend::declining("partial", Arc::new(CpuBackend::new(2)), declines));
        let split = LoadedModel::load(&dir, partial.clone(), Some(Arc::new(CpuBackend::new(1)))).expect("loads");
        assert_eq!(logits(&cpu, &tokens), logits(&split, &tokens), "{name}: fallback changed the logits");

        // Without a fallback the unsupported op is a clear error, not a crash.
        let alone = LoadedModel::load(&dir, partial, None).expect("loads");
        let mut ctx = alone.new_context(ContextOptions { n_ctx: 32, ..ContextOptions::default() }).expect("context");
        let err = ctx.eval(&tokens, Logits::Last).expect_err("must fail without a fallback").to_string();
        assert!(err.contains("not supported by the partial backend"), "{err}");
    }
}
