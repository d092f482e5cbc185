//! The conformance suite on the first adapter wgpu finds (lavapipe on machines without a GPU).

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_wgpu::WgpuBackend;

#[test]
fn passes_the_conformance_suite() {
    let backend = match WgpuBackend::new(None) {
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
