// Elementwise ops, one thread per output value; OP is chosen when the kernel is built.
// params: 0 count, 1 b's length (the broadcast period), 2 a offset, 3 b offset, 4 y offset,
// 5 the factor of scale.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// ggml's gelu_f32 (the tanh form), each product rounded as the CPU rounds it.
fn gelu(x: f32) -> f32 {
    let inner = 1.0 + f_mul(f_mul(0.044715, x), x);
    let t = tanh_f32(f_mul(f_mul(0.7978846, x), inner));
    return f_mul(f_mul(0.5, x), 1.0 + t);
}

fn apply(u: f32, v: f32) -> f32 {
    OP_BODY
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i >= pu(0u)) {
        return;
    }
    y[pu(4u) + i] = apply(a[pu(2u) + i], b[pu(3u) + i % pu(1u)]);
}
