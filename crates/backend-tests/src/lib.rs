//! The conformance suite every backend must pass, against a scalar reference of each op.
//!
//! A backend crate calls [`run_conformance`] from its own tests:
//!
//! ```ignore
//! let report = tessera_backend_tests::run_conformance(Arc::new(MyBackend::new()));
//! assert!(report.is_ok(), "{report}");
//! ```
//!
//! Every case builds a small graph over fresh buffers with seeded random inputs, runs it on the
//! backend and on [`reference::evaluate`] (each op written naively from its doc comment), and
//! compares every buffer the graph stores into, within the per-op tolerances of [`tolerance`].
//! Cases whose ops the backend declines through `supports_op` are skipped and listed; errors,
//! panics and wrong numbers are failures. Contract checks (bounds, unknown buffers, bad ids and
//! positions) run too. The per-op `check_*` functions run one family each.

mod altered;
mod cases;
mod contract;
pub mod data;
mod harness;
pub mod reference;
mod reference_backend;
mod report;
pub mod tolerance;

use std::sync::Arc;

use tessera_backend::Backend;

pub use altered::AlteredBackend;
pub use cases::attention::{check_attention, check_store};
pub use cases::graphs::{check_block, check_map_host, check_views};
pub use cases::linear::{check_get_rows, check_mat_mul};
pub use cases::paged::{check_paged_attention, check_store_rows};
pub use cases::pointwise::{check_binary, check_gated, check_rms_norm, check_rope, check_scale};
pub use contract::{check_bad_input, check_buffers};
pub use reference_backend::ReferenceBackend;
pub use report::{ConformanceReport, Failure, Worst};

/// A per-family check, as run by [`run_conformance`].
pub type Check = fn(&Arc<dyn Backend>, &mut ConformanceReport);

/// Every check, by name, in the order [`run_conformance`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("buffers", check_buffers),
    ("bad_input", check_bad_input),
    ("mat_mul", check_mat_mul),
    ("get_rows", check_get_rows),
    ("add_mul", check_binary),
    ("scale", check_scale),
    ("swiglu_geglu", check_gated),
    ("rms_norm", check_rms_norm),
    ("rope", check_rope),
    ("attention", check_attention),
    ("store", check_store),
    ("paged_attention", check_paged_attention),
    ("store_rows", check_store_rows),
    ("views", check_views),
    ("map_host", check_map_host),
    ("block", check_block),
];

/// Runs the whole suite on `backend`.
pub fn run_conformance(backend: Arc<dyn Backend>) -> ConformanceReport {
    let mut report = ConformanceReport::new(backend.info().name);
    for (_, check) in CHECKS {
        check(&backend, &mut report);
    }
    report
}
