//! The conformance suite on the first adapter wgpu finds (lavapipe on machines without a GPU),
//! with each of the backend's numerics.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_wgpu::Numerics;

mod common;

fn conformance(numerics: Numerics) {
    let Some(backend) = common::adapter(numerics) else { return };
    eprintln!("adapter: {}", backend.info().name);
    let report = tessera_backend_tests::run_conformance(Arc::new(backend));
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
}

#[test]
fn exact_numerics_pass_the_conformance_suite() {
    conformance(Numerics::Exact);
}

#[test]
fn relaxed_numerics_pass_the_conformance_suite() {
    conformance(Numerics::Relaxed);
}
