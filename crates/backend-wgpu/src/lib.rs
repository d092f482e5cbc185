//! Tessera's portable GPU backend: the backend contract on wgpu, with WGSL compute kernels, so
//! one implementation reaches every GPU with a Vulkan, Metal or DX12 driver (AMD, Intel, NVIDIA,
//! Qualcomm Adreno, Arm Mali, Apple), and Mesa's software Vulkan driver (lavapipe) on machines
//! without one.
//!
//! Weights are uploaded once and stay in their stored type: `MatMul` and `GetRows` decode F32,
//! F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, INT8 and FP8 blocks in the kernel.
//! A whole graph is recorded into one command buffer and submitted once. Ops it declines
//! (other block types, heads wider than 512) run on the CPU through the runtime's fallback.

mod backend;
mod device;
mod exec;
mod kernels;

pub use backend::{Numerics, WgpuBackend};
pub use device::{list_adapters, AdapterSummary};
