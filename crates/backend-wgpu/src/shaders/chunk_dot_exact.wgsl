// The exact numerics' dot product of a decoded chunk with activations, which are rounded as the
// CPU backend rounds them for the weight type (f16 and bf16 weights meet f16 and bf16 values).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn act(v: f32) -> f32 {
    ACT_BODY
}

fn chunk_dot(v: ptr<function, array<f32, 32>>, xb: u32, len: u32) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < len; i++) {
        s += (*v)[i] * act(x[xb + i]);
    }
    return s;
}
