//! The WGSL kernels: their sources, assembled from the files in `shaders/`, their bindings, and
//! the compiled pipelines, built on first use and kept.

use std::collections::HashMap;

use tessera_core::DType;

const COMMON: &str = include_str!("shaders/common.wgsl");
const ERRORS: &str = include_str!("shaders/errors.wgsl");
const WEIGHTS: &str = include_str!("shaders/weights.wgsl");

/// Binding 0 is always the parameter block; these are the storage bindings.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    ReadWrite,
}

/// Binding number of the error words, in kernels that can find bad input.
pub(crate) const ERROR_BINDING: u32 = 7;

/// What the shaders may use, decided when the device opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShaderFeatures {
    /// f64 arithmetic: the exact numerics round as the CPU backend does.
    pub f64: bool,
    /// f16 arithmetic (relaxed numerics only).
    pub f16: bool,
    /// Subgroup reductions (relaxed numerics only).
    pub subgroups: bool,
}

/// One kernel variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// Float weights (F32, F16, BF16, FP8) against f32 activations.
    MatMul(DType),
    /// The relaxed numerics: any decodable weight type against f32 activations.
    MatMulRelaxed(DType),
    /// The 32-value block types, summed in the CPU backend's order.
    MatMulLanes(DType),
    /// The K-quants, summed in the CPU backend's order.
    MatMulKLanes(DType),
    /// Activations into the vec-dot blocks of a weight type (Q8_0, Q8_1 or Q8_K).
    QuantizeQ8,
    MatMulI8,
    QuantizeI8,
    GetRows(DType),
    Pointwise(PointwiseOp),
    RmsNorm,
    Rope,
    Attention {
        paged: bool,
        kv_f16: bool,
    },
    Store {
        f16: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PointwiseOp {
    Add,
    Mul,
    Scale,
    SwiGlu,
    GeGlu,
}

/// Weight types whose values `weights.wgsl` decodes.
pub(crate) fn decodes(dtype: DType) -> bool {
    chunk_fn(dtype).is_some()
}

fn chunk_fn(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "chunk_f32",
        DType::F16 => "chunk_f16",
        DType::BF16 => "chunk_bf16",
        DType::I8 => "chunk_i8",
        DType::F8_E4M3 => "chunk_f8_e4m3",
        DType::Q8_0 => "chunk_q8_0",
        DType::Q4_0 => "chunk_q4_0",
        DType::Q4_1 => "chunk_q4_1",
        DType::Q5_0 => "chunk_q5_0",
        DType::Q5_1 => "chunk_q5_1",
        DType::Q4_K => "chunk_q4_k",
        DType::Q5_K => "chunk_q5_k",
        DType::Q6_K => "chunk_q6_k",
        _ => return None,
    })
}

/// Whether the relaxed matmul may take a type's products in f16: its tolerance allows it (F32 and
/// FP8 are exact to 1e-5).
fn relaxed_f16(dtype: DType) -> bool {
    !matches!(dtype, DType::F32 | DType::F8_E4M3)
}

/// How `QuantizeQ8` quantizes activations for a block type (its ggml vec-dot type): 0 Q8_0,
/// 1 Q8_1, 2 Q8_K; `None` for types read against f32 activations.
pub(crate) fn vec_dot_kind(dtype: DType) -> Option<u32> {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => Some(0),
        DType::Q4_1 | DType::Q5_1 => Some(1),
        DType::Q4_K | DType::Q5_K | DType::Q6_K => Some(2),
        _ => None,
    }
}

impl Kernel {
    /// The kernel's WGSL source.
    pub(crate) fn source(self, features: ShaderFeatures) -> String {
        let f64 = features.f64;
        let mut s = String::new();
        if let Kernel::MatMulRelaxed(dtype) = self {
            // Enable directives come before everything else (naga takes subgroup operations
            // without one).
            if features.f16 && relaxed_f16(dtype) {
                s += "enable f16;\n";
            }
        }
        s += COMMON;
        s += if f64 { include_str!("shaders/exact.wgsl") } else { include_str!("shaders/approx.wgsl") };
        let load = |dtype: DType| {
            let f = chunk_fn(dtype).expect("a kernel is only built for a decodable type");
            format!(
                "{WEIGHTS}\nfn load_chunk(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {{ {f}(rb, c, k, v); }}\n"
            )
        };
        match self {
            Kernel::MatMul(dtype) => {
                let act = match dtype {
                    DType::F16 => "return f16_to_f32(f32_to_f16(v));",
                    DType::BF16 => "return bitcast<f32>(bf16_bits(v) << 16u);",
                    _ => "return v;",
                };
                s += &load(dtype);
                s += &include_str!("shaders/chunk_dot_exact.wgsl").replace("ACT_BODY", act);
                s += include_str!("shaders/mat_mul.wgsl");
            }
            Kernel::MatMulRelaxed(dtype) => {
                let f16 = features.f16 && relaxed_f16(dtype);
                s += &load(dtype);
                s += &include_str!("shaders/chunk_dot_relaxed.wgsl")
                    .replace("USE_F16_VALUE", &f16.to_string())
                    .replace("F16_VEC", if f16 { "vec4<f16>" } else { "vec4<f32>" });
                s += if features.subgroups {
                    include_str!("shaders/mat_mul_relaxed_sg.wgsl")
                } else {
                    include_str!("shaders/mat_mul.wgsl")
                };
            }
            Kernel::MatMulLanes(dtype) => {
                let ty = match dtype {
                    DType::Q4_0 => 0,
                    DType::Q4_1 => 1,
                    DType::Q5_0 => 2,
                    DType::Q5_1 => 3,
                    _ => 4,
                };
                s += WEIGHTS;
                s += &include_str!("shaders/mat_mul_lanes.wgsl")
                    .replace("TYPE", &format!("{ty}u"))
                    .replace("BLOCK_BYTES", &format!("{}u", dtype.block_bytes()));
            }
            Kernel::MatMulKLanes(dtype) => {
                let ty = match dtype {
                    DType::Q4_K => 0,
                    DType::Q5_K => 1,
                    _ => 2,
                };
                s += WEIGHTS;
                s += &include_str!("shaders/mat_mul_klanes.wgsl")
                    .replace("TYPE", &format!("{ty}u"))
                    .replace("BLOCK_BYTES", &format!("{}u", dtype.block_bytes()));
            }
            Kernel::QuantizeQ8 => s += include_str!("shaders/quantize_q8.wgsl"),
            Kernel::MatMulI8 => {
                s += &load(DType::I8);
                s += include_str!("shaders/mat_mul_i8.wgsl");
            }
            Kernel::QuantizeI8 => s += include_str!("shaders/quantize_i8.wgsl"),
            Kernel::GetRows(dtype) => {
                s += ERRORS;
                s += &load(dtype);
                s += include_str!("shaders/get_rows.wgsl");
            }
            Kernel::Pointwise(op) => {
                let body = match op {
                    PointwiseOp::Add => "return u + v;",
                    PointwiseOp::Mul => "return u * v;",
                    PointwiseOp::Scale => "return u * pf(5u);",
                    PointwiseOp::SwiGlu => "return f_mul(f_div(u, f_add(1.0, exp_f32(-u))), v);",
                    PointwiseOp::GeGlu => "return f_mul(gelu(u), v);",
                };
                s += &include_str!("shaders/pointwise.wgsl").replace("OP_BODY", body);
            }
            Kernel::RmsNorm => {
                s += &include_str!("shaders/rms_norm.wgsl").replace("SUM_T", if f64 { "f64" } else { "f32" })
            }
            Kernel::Rope => s += include_str!("shaders/rope.wgsl"),
            Kernel::Attention { paged, kv_f16 } => {
                s += ERRORS;
                s += &include_str!("shaders/attention.wgsl")
                    .replace("PAGED_VALUE", &paged.to_string())
                    .replace("KV_F16_VALUE", &kv_f16.to_string());
            }
            Kernel::Store { f16 } => {
                s += ERRORS;
                s += &include_str!("shaders/store.wgsl").replace("DST_F16_VALUE", &f16.to_string());
            }
        }
        s
    }

    /// The storage bindings the kernel declares, by number.
    pub(crate) fn bindings(self) -> &'static [(u32, Access)] {
        use Access::*;
        match self {
            Kernel::MatMul(_) | Kernel::MatMulRelaxed(_) | Kernel::Pointwise(_) | Kernel::RmsNorm | Kernel::Rope => {
                &[(1, Read), (2, Read), (3, ReadWrite)]
            }
            Kernel::MatMulI8 | Kernel::MatMulLanes(_) | Kernel::MatMulKLanes(_) => {
                &[(1, Read), (2, Read), (3, ReadWrite), (4, Read)]
            }
            Kernel::QuantizeI8 | Kernel::QuantizeQ8 => &[(1, Read), (3, ReadWrite), (4, ReadWrite)],
            Kernel::GetRows(_) => &[(1, Read), (2, Read), (3, ReadWrite), (ERROR_BINDING, ReadWrite)],
            Kernel::Attention { .. } => {
                &[(1, Read), (2, Read), (3, ReadWrite), (4, Read), (5, Read), (6, Read), (ERROR_BINDING, ReadWrite)]
            }
            Kernel::Store { .. } => &[(1, Read), (2, Read), (3, ReadWrite), (ERROR_BINDING, ReadWrite)],
        }
    }
}

/// A compiled kernel and the layout of its bindings.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines by kernel, compiled on first use.
pub(crate) struct Pipelines {
    built: HashMap<Kernel, Pipeline>,
    features: ShaderFeatures,
}

impl Pipelines {
    pub(crate) fn new(features: ShaderFeatures) -> Pipelines {
        Pipelines { built: HashMap::new(), features }
    }

    pub(crate) fn get(&mut self, device: &wgpu::Device, kernel: Kernel) -> &Pipeline {
        let features = self.features;
        self.built.entry(kernel).or_insert_with(|| build(device, kernel, features))
    }
}

fn build(device: &wgpu::Device, kernel: Kernel, features: ShaderFeatures) -> Pipeline {
    let label = format!("{kernel:?}");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(kernel.source(features).into()),
    });
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }];
    for &(binding, access) in kernel.bindings() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: matches!(access, Access::Read) },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    Pipeline { pipeline, layout }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel variant is valid WGSL whose bindings are the ones declared in Rust (checked
    /// by naga, wgpu's own shader compiler, so no device is needed).
    #[test]
    fn every_kernel_parses_and_validates() {
        let mut kernels = vec![Kernel::MatMulI8, Kernel::QuantizeI8, Kernel::QuantizeQ8, Kernel::RmsNorm, Kernel::Rope];
        for dtype in DType::ALL {
            if vec_dot_kind(dtype).is_some() {
                if dtype.block_len() == 32 {
                    kernels.push(Kernel::MatMulLanes(dtype));
                } else {
                    kernels.push(Kernel::MatMulKLanes(dtype));
                }
            }
            if decodes(dtype) {
                kernels.push(Kernel::MatMul(dtype));
                kernels.push(Kernel::MatMulRelaxed(dtype));
                kernels.push(Kernel::GetRows(dtype));
            }
        }
        for op in [PointwiseOp::Add, PointwiseOp::Mul, PointwiseOp::Scale, PointwiseOp::SwiGlu, PointwiseOp::GeGlu] {
            kernels.push(Kernel::Pointwise(op));
        }
        for paged in [false, true] {
            for kv_f16 in [false, true] {
                kernels.push(Kernel::Attention { paged, kv_f16 });
            }
        }
        kernels.push(Kernel::Store { f16: false });
        kernels.push(Kernel::Store { f16: true });
        let exact = ShaderFeatures { f64: true, ..Default::default() };
        let relaxed = ShaderFeatures { f16: true, subgroups: true, ..Default::default() };
        let variants = [ShaderFeatures::default(), exact, relaxed];
        for (k, features) in kernels.iter().flat_map(|&k| variants.map(|f| (k, f))) {
            let module = naga::front::wgsl::parse_str(&k.source(features)).unwrap_or_else(|e| panic!("{k:?}: {e}"));
            use naga::valid::Capabilities as C;
            let mut caps = C::default();
            caps.set(C::FLOAT64, features.f64);
            caps.set(C::SHADER_FLOAT16, features.f16);
            caps.set(C::SUBGROUP, features.subgroups);
            let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
            v.validate(&module).unwrap_or_else(|e| panic!("{k:?}: {e:?}"));
            let declared: Vec<u32> =
                module.global_variables.iter().filter_map(|(_, g)| g.binding.as_ref().map(|b| b.binding)).collect();
            for (binding, _) in k.bindings() {
                assert!(declared.contains(binding), "{k:?} declares no binding {binding}");
            }
        }
    }
}
