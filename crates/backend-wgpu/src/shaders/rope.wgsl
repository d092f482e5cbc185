// Rotary position embedding; one thread per output value. The cosines and sines come from the
// host, computed there as the CPU backend computes them (angles built by repeated f32
// multiplication, the C library's cosf and sinf), so both rotate alike.
// params: 0 N, 1 row length, 2 head_dim, 3 rot_dims, 6 halves (0/1), 7 x offset, 9 y offset.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> angles: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let cols = pu(1u);
    let t = group_index(wid, nwg) * 256u + lid;
    if (t >= pu(0u) * cols) {
        return;
    }
    let n = t / cols;
    let col = t % cols;
    let hd = pu(2u);
    let rot = pu(3u);
    let head = col / hd;
    let d = col % hd;
    let xb = pu(7u) + n * cols + head * hd;
    if (d >= rot) {
        y[pu(9u) + t] = x[xb + d];
        return;
    }
    let half = rot / 2u;
    var i: u32;
    var other: u32;
    var first: bool;
    if (pu(6u) == 1u) {
        i = d % half;
        first = d < half;
        other = select(d - half, d + half, first);
    } else {
        i = d / 2u;
        first = d % 2u == 0u;
        other = select(d - 1u, d + 1u, first);
    }
    let cs = 2u * (n * half + i);
    let c = angles[cs];
    let s = angles[cs + 1u];
    let u = x[xb + d];
    let v = x[xb + other];
    if (first) {
        y[pu(9u) + t] = f_mul(u, c) - f_mul(v, s);
    } else {
        y[pu(9u) + t] = f_mul(v, s) + f_mul(u, c);
    }
}
