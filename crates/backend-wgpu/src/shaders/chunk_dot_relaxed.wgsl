// The relaxed numerics' dot product of a decoded chunk with f32 activations: four products at
// a time in f16 where the adapter has f16 and the weight type's tolerance allows it (USE_F16),
// f32 fused multiply-adds otherwise.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const USE_F16: bool = USE_F16_VALUE;

fn chunk_dot(v: ptr<function, array<f32, 32>>, xb: u32, len: u32) -> f32 {
    var s = 0.0;
    if (USE_F16 && len == 32u) {
        for (var i = 0u; i < 32u; i += 4u) {
            let wv = vec4<f32>((*v)[i], (*v)[i + 1u], (*v)[i + 2u], (*v)[i + 3u]);
            let xv = vec4<f32>(x[xb + i], x[xb + i + 1u], x[xb + i + 2u], x[xb + i + 3u]);
            s += f32(dot(F16_VEC(wv), F16_VEC(xv)));
        }
        return s;
    }
    for (var i = 0u; i < len; i++) {
        s = fma((*v)[i], x[xb + i], s);
    }
    return s;
}
