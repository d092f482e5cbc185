//! What the wgpu backend's tests share: the adapter they run on.

use tessera_backend_wgpu::{Numerics, WgpuBackend};

/// The first adapter, opened with `numerics`; `None` when there is none, which skips the test
/// with a note locally and fails it under CI (CI runs on lavapipe, which scripts/test.sh
/// installs).
pub fn adapter(numerics: Numerics) -> Option<WgpuBackend> {
    match WgpuBackend::new(None, numerics) {
        Ok(backend) => Some(backend),
        Err(e) => {
            tessera_testkit::missing_prerequisite(&format!("no wgpu adapter: {e}"));
            None
        }
    }
}
