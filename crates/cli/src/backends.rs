//! The backends this binary can use, by command-line name.

use std::sync::Arc;

use anyhow::{bail, Result};
use tessera_backend::Backend;
use tessera_backend_cpu::CpuBackend;

/// Backend names accepted by `--backend`.
pub const BACKENDS: &[&str] = &["cpu"];

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A backend and, for devices other than the CPU, the CPU backend that runs the ops it lacks.
pub struct Selected {
    pub backend: Arc<dyn Backend>,
    pub cpu_fallback: Option<Arc<dyn Backend>>,
}

/// Creates the named backend.
pub fn create(name: &str, threads: Option<usize>) -> Result<Selected> {
    let threads = threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    match name {
        "cpu" => Ok(Selected { backend: Arc::new(CpuBackend::new(threads)), cpu_fallback: None }),
        other => bail!("unknown backend {other:?} (available: {})", BACKENDS.join(", ")),
    }
}

pub fn print_devices() -> Result<()> {
    for name in BACKENDS {
        let info = create(name, None)?.backend.info();
        let gib =
            |b: Option<u64>| b.map_or("unknown".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64));
        println!(
            "{:<6} {} ({:?}), memory {} total, {} free",
            info.backend,
            info.name,
            info.kind,
            gib(info.memory_total),
            gib(info.memory_free)
        );
    }
    Ok(())
}
