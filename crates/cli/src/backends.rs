//! The backends this binary can use, by command-line name.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tessera_backend::Backend;
use tessera_backend_cpu::{CpuBackend, Isa};
use tessera_backend_ort::{OrtBackend, OrtOptions, Provider};
use tessera_backend_wgpu::{Numerics, WgpuBackend};

use crate::DeviceArgs;

/// Backend names accepted by `--backend`.
pub const BACKENDS: &[&str] = &[
    "cpu",
    "cpu:ISA",
    "wgpu",
    "wgpu:N",
    "wgpu-relaxed",
    "wgpu-relaxed:N",
    "ort:cpu",
    "ort:qnn",
    "ort:cann",
    "ort:openvino",
];

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A backend and, for devices other than the CPU, the CPU backend that runs the ops it lacks.
pub struct Selected {
    pub backend: Arc<dyn Backend>,
    pub cpu_fallback: Option<Arc<dyn Backend>>,
}

/// Creates the named backend: `cpu` (the best instruction set the CPU has), `cpu:ISA` (`scalar`,
/// `avx2`, `avx512` or `neon`, to compare kernels or reproduce another machine's), `wgpu` (the best adapter) or `wgpu:N` (adapter N of
/// `tessera devices`), rounding as the CPU does; `wgpu-relaxed` and `wgpu-relaxed:N` round
/// within the conformance tolerances instead, without f64 (f16 and subgroups where the adapter
/// has them).
///
/// `ort:cpu`, `ort:qnn`, `ort:cann` and `ort:openvino` compile each graph with ONNX Runtime's
/// execution provider of that name (`device.ep_opt` passed to it).
pub fn create(name: &str, threads: Option<usize>, device: &DeviceArgs) -> Result<Selected> {
    let threads = threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cpu = || Arc::new(CpuBackend::new(threads)) as Arc<dyn Backend>;
    let fallback = || if device.no_cpu_fallback { None } else { Some(cpu()) };
    if let Some(provider) = name.strip_prefix("ort:") {
        let ort =
            OrtBackend::new(ort_options(provider, threads, device)?).with_context(|| format!("backend {name}"))?;
        return Ok(Selected { backend: Arc::new(ort), cpu_fallback: fallback() });
    }
    if !device.ep_opt.is_empty() {
        bail!("--ep-opt is for the ONNX Runtime backends (ort:*), not {name}");
    }
    if let Some(isa) = name.strip_prefix("cpu:") {
        let isa = Isa::from_name(isa).with_context(|| {
            format!("backend {name:?}: {isa:?} is not an instruction set (scalar, avx2, avx512, neon)")
        })?;
        let cpu = CpuBackend::with_isa(threads, isa).with_context(|| format!("backend {name}"))?;
        return Ok(Selected { backend: Arc::new(cpu), cpu_fallback: None });
    }
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => {
            let index = index
                .parse::<usize>()
                .with_context(|| format!("backend {name:?}: {index:?} is not an adapter number"))?;
            (kind, Some(index))
        }
        None => (name, None),
    };
    match (kind, index) {
        ("cpu", None) => Ok(Selected { backend: cpu(), cpu_fallback: None }),
        ("wgpu" | "wgpu-relaxed", index) => {
            let numerics = if kind == "wgpu-relaxed" { Numerics::Relaxed } else { Numerics::Exact };
            let gpu = WgpuBackend::new(index, numerics).with_context(|| format!("backend {name}"))?;
            Ok(Selected { backend: Arc::new(gpu), cpu_fallback: fallback() })
        }
        _ => bail!("unknown backend {name:?} (available: {})", BACKENDS.join(", ")),
    }
}

/// ONNX Runtime options for `provider` (the part of `--backend ort:PROVIDER` after the colon),
/// with `--ep-opt` and `--no-cpu-fallback`.
pub fn ort_options(provider: &str, threads: usize, device: &DeviceArgs) -> Result<OrtOptions> {
    let provider = Provider::from_name(provider)
        .with_context(|| format!("unknown ONNX Runtime provider {provider:?} (cpu, qnn, cann, openvino)"))?;
    let mut options = OrtOptions::new(provider);
    options.threads = threads;
    options.no_cpu_fallback = device.no_cpu_fallback;
    for opt in &device.ep_opt {
        let (k, v) = opt.split_once('=').with_context(|| format!("--ep-opt {opt:?} is not KEY=VALUE"))?;
        options.ep_options.push((k.to_string(), v.to_string()));
    }
    Ok(options)
}

pub fn print_devices() -> Result<()> {
    let gib =
        |b: Option<u64>| b.map_or("unknown".to_string(), |b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64));
    let info = create("cpu", None, &DeviceArgs::default())?.backend.info();
    println!(
        "cpu     {} ({:?}), memory {} total, {} free",
        info.name,
        info.kind,
        gib(info.memory_total),
        gib(info.memory_free)
    );
    let adapters = tessera_backend_wgpu::list_adapters();
    if adapters.is_empty() {
        println!("wgpu    no adapter (no Vulkan, Metal or DX12 driver found)");
    }
    for a in adapters {
        println!("wgpu:{:<3} {} ({}, {}, driver {})", a.index, a.name, a.api, a.device_type, a.driver);
        for (key, value) in &a.details {
            println!("          {key}: {value}");
        }
    }
    Ok(())
}
