//! The conformance suite on the first adapter wgpu finds (lavapipe on machines without a GPU),
//! with each of the backend's numerics.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_wgpu::{Numerics, WgpuBackend};

fn conformance(numerics: Numerics) {
    let backend = match WgpuBackend::new(None, numerics) {
        Ok(b) => b,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("CI runs the wgpu backend on lavapipe: {e}"),
    };
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
