//! Finding GPUs: adapters through wgpu (Vulkan, Metal, DX12) and what each offers.

use std::fmt::Write;

/// What `tessera devices` shows of one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub api: String,
    pub device_type: String,
    pub driver: String,
    /// The limits and features that matter to Tessera's kernels, one `key value` per entry.
    pub details: Vec<(String, String)>,
}

pub(crate) fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds, in its order.
pub(crate) fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

pub(crate) fn describe(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    let mut feature_list = String::new();
    for (name, f) in [
        ("shader-f16", wgpu::Features::SHADER_F16),
        ("subgroup", wgpu::Features::SUBGROUP),
        ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
    ] {
        if features.contains(f) {
            let _ = write!(feature_list, "{}{name}", if feature_list.is_empty() { "" } else { ", " });
        }
    }
    let mib = |b: u64| format!("{} MiB", b >> 20);
    AdapterSummary {
        index,
        name: info.name.clone(),
        api: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        details: vec![
            ("max buffer".into(), mib(limits.max_buffer_size)),
            ("max storage binding".into(), mib(limits.max_storage_buffer_binding_size)),
            ("max workgroup size".into(), limits.max_compute_invocations_per_workgroup.to_string()),
            ("workgroup memory".into(), format!("{} KiB", limits.max_compute_workgroup_storage_size >> 10)),
            ("features".into(), if feature_list.is_empty() { "none of note".into() } else { feature_list }),
        ],
    }
}

/// Every adapter wgpu finds, described. Empty when there is none (or no driver).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    adapters(&instance).iter().enumerate().map(|(i, a)| describe(i, a)).collect()
}
