// Activations quantized to ggml's vec-dot blocks, bit for bit as the CPU backend (and
// llama.cpp's x86 build) does, so quantized matmuls compute what the CPU computes:
// Q8_0/Q8_1: d = amax / 127 (kept as f16), q = round_half_even(x · (127 / amax)), and for Q8_1
// s = f16(d · Σq); Q8_K (per 256): iscale = -127 / (the value of largest magnitude),
// q = min(round_half_even(iscale · x), 127), d = 1 / iscale.
// Output: q[row · K + e] as i32; scales[2 · (row · K / 32 + chunk)] = (d, s) as f32 values
// (Q8_K repeats its d for the 8 chunks of a super-block).
// params: 0 K, 1 N, 2 kind (0 Q8_0, 1 Q8_1, 2 Q8_K), 5 x offset. One thread per block.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> q: array<i32>;
@group(0) @binding(4) var<storage, read_write> scales: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let kind = pu(2u);
    let len = select(32u, 256u, kind == 2u);
    let per_row = k / len;
    let t = group_index(wid, nwg) * 64u + lid;
    if (t >= pu(1u) * per_row) {
        return;
    }
    let row = t / per_row;
    let e0 = row * k + (t % per_row) * len;
    let xb = pu(5u) + e0;
    let chunk0 = e0 / 32u;
    if (kind == 2u) {
        var amax = 0.0;
        var mx = 0.0;
        for (var i = 0u; i < 256u; i++) {
            let v = x[xb + i];
            if (abs(v) > amax) {
                amax = abs(v);
                mx = v;
            }
        }
        var d = 0.0;
        if (amax == 0.0) {
            for (var i = 0u; i < 256u; i++) {
                q[e0 + i] = 0;
            }
        } else {
            let iscale = -127.0 / mx;
            for (var i = 0u; i < 256u; i++) {
                q[e0 + i] = min(i32(round(iscale * x[xb + i])), 127);
            }
            d = 1.0 / iscale;
        }
        for (var c = 0u; c < 8u; c++) {
            scales[2u * (chunk0 + c)] = d;
            scales[2u * (chunk0 + c) + 1u] = 0.0;
        }
        return;
    }
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[xb + i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0;
    for (var i = 0u; i < 32u; i++) {
        let v = clamp(i32(round(x[xb + i] * id)), -128, 127);
        q[e0 + i] = v;
        sum += v;
    }
    scales[2u * chunk0] = f16_to_f32(f32_to_f16(d));
    scales[2u * chunk0 + 1u] = f16_to_f32(f32_to_f16(d * f32(sum)));
}
