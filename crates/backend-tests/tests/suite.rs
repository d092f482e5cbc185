//! The suite checked against itself: the reference backend passes it, a backend with a subtly
//! wrong op fails it exactly where it should, and declined ops are listed, not failed.

use std::sync::Arc;

use tessera_backend::Op;
use tessera_backend_cpu::CpuBackend;
use tessera_backend_tests::{run_conformance, AlteredBackend, ReferenceBackend};

#[test]
fn reference_backend_passes() {
    let report = run_conformance(Arc::new(ReferenceBackend::new()));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
    assert!(report.passed > 500, "{report}");
}

#[test]
fn a_slightly_wrong_rope_fails() {
    // A 1% error in the frequency base: invisible at position 0, clear at position 1000.
    let change = |op: &Op| match *op {
        Op::Rope { head_dim, rot_dims, base, freq_scale, style } => {
            Op::Rope { head_dim, rot_dims, base: base * 1.01, freq_scale, style }
        }
        ref other => other.clone(),
    };
    let report = run_conformance(Arc::new(AlteredBackend::changing("cpu", Arc::new(CpuBackend::new(2)), change)));
    assert!(!report.is_ok(), "{report}");
    let rope_failures = report.failures.iter().filter(|f| f.case.starts_with("rope")).count();
    assert!(rope_failures >= 20, "{report}");
    for f in &report.failures {
        assert!(f.case.starts_with("rope") || f.case.starts_with("block"), "unexpected failure: {f}");
        assert!(f.max_error > 2e-3, "{f}");
        if f.case.starts_with("rope") {
            assert!(f.op.starts_with("rope") && f.node.is_some(), "{f}");
        }
    }
}

#[test]
fn declined_ops_are_listed_not_failed() {
    let declines = |op: &Op| matches!(op, Op::Attention { .. });
    let report = run_conformance(Arc::new(AlteredBackend::declining("cpu", Arc::new(CpuBackend::new(2)), declines)));
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.iter().any(|u| u.starts_with("attention f16")), "{report}");
    assert!(report.unsupported.iter().all(|u| u.contains("attention")), "{report}");
}

#[test]
fn a_paged_attention_with_a_narrower_window_fails() {
    // Attends one position less than its window: only the windowed paged cases can tell.
    let change = |op: &Op| match *op {
        Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window: Some(w), block_size } if w > 1 => {
            Op::PagedAttention { n_heads, n_kv_heads, head_dim, scale, window: Some(w - 1), block_size }
        }
        ref other => other.clone(),
    };
    let report = run_conformance(Arc::new(AlteredBackend::changing("cpu", Arc::new(CpuBackend::new(2)), change)));
    assert!(!report.is_ok(), "{report}");
    assert!(report.failures.len() >= 50, "{report}");
    for f in &report.failures {
        assert!(f.case.contains("paged_attention") && f.case.contains("window Some"), "unexpected failure: {f}");
        assert!(f.op.starts_with("paged_attention") && f.max_error > 2e-3, "{f}");
    }
}

#[test]
fn declined_paged_ops_are_listed_not_failed() {
    let declines = |op: &Op| matches!(op, Op::PagedAttention { .. } | Op::StoreRows);
    let report = run_conformance(Arc::new(AlteredBackend::declining("cpu", Arc::new(CpuBackend::new(2)), declines)));
    assert!(report.is_ok(), "{report}");
    for group in ["paged_attention f16", "paged_attention f32", "store_rows f16", "store_rows f32"] {
        assert!(report.unsupported.iter().any(|u| u.starts_with(group)), "{group}: {report}");
    }
    assert!(report.unsupported.iter().all(|u| u.contains("paged_attention") || u.contains("store_rows")), "{report}");
}
