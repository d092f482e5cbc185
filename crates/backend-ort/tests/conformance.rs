//! The conformance suite on ONNX Runtime's CPU provider: every op translated to ONNX, compiled
//! and run at the suite's shapes and types.

use std::sync::Arc;

use tessera_backend_ort::{OrtBackend, OrtOptions, Provider};

#[test]
fn onnx_runtime_cpu_passes_the_conformance_suite() {
    let backend = match OrtBackend::new(OrtOptions::new(Provider::Cpu)) {
        Ok(b) => b,
        Err(e) => return tessera_testkit::missing_prerequisite(&format!("ONNX Runtime: {e}")),
    };
    let report = tessera_backend_tests::run_conformance(Arc::new(backend));
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
}
