// Per-row int8 quantization of activations, exactly tessera_quant::int8::quantize_activation_row:
// d = max|x| / 127, q = round_half_away(x · (127 / max|x|)) clamped to ±127.
// params: 0 K, 1 N, 5 x offset (elements). One workgroup per row.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> q: array<i32>;
@group(0) @binding(4) var<storage, read_write> d: array<f32>;

var<workgroup> amax: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let n = group_index(wid, nwg);
    if (n >= pu(1u)) {
        return;
    }
    let xb = pu(5u) + n * k;
    var mx = 0.0;
    for (var e = lid; e < k; e += 64u) {
        mx = max(mx, abs(x[xb + e]));
    }
    amax[lid] = mx;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            amax[lid] = max(amax[lid], amax[lid + stride]);
        }
        workgroupBarrier();
    }
    let a = amax[0];
    let id = select(0.0, 127.0 / a, a != 0.0);
    for (var e = lid; e < k; e += 64u) {
        let v = x[xb + e] * id;
        let t = trunc(v);
        let r = select(t, t + sign(v), abs(v - t) >= 0.5);
        q[n * k + e] = i32(clamp(r, -127.0, 127.0));
    }
    if (lid == 0u) {
        d[n] = a / 127.0;
    }
}
