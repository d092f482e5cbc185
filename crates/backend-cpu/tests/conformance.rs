//! The CPU backend against the conformance suite: with the best kernels this CPU has, and with
//! the portable scalar ones.

use std::sync::Arc;

use tessera_backend_cpu::{CpuBackend, Isa};
use tessera_backend_tests::run_conformance;

#[test]
fn cpu_backend_passes_conformance() {
    let report = run_conformance(Arc::new(CpuBackend::new(2)));
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert!(report.unsupported.is_empty(), "{report}");
}

#[test]
fn scalar_cpu_backend_passes_conformance() {
    let backend = CpuBackend::with_isa(2, Isa::Scalar).expect("scalar kernels exist everywhere");
    let report = run_conformance(Arc::new(backend));
    println!("{report}");
    assert!(report.is_ok(), "{report}");
}
