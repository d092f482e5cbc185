// INT8 W8A8: y[n, m] = d[n] · Σ_k q[n, k] · w[m, k], the sum exact in integers; q and d come
// from quantize_i8. Same work split as mat_mul.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 5 (unused), 6 y offset (elements), 7 y row length,
// 8 the first weight row (weights too large for one binding run in row ranges).

@group(0) @binding(1) var<storage, read> q: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> d: array<f32>;

const WG: u32 = 64u;
const NR: u32 = 8u;
var<workgroup> partial: array<i32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let m_rows = pu(1u);
    let n_rows = pu(2u);
    let m = group_index(wid, nwg);
    let n0 = wid.z * NR;
    if (m >= m_rows) {
        return;
    }
    let rb = pu(3u) + m * pu(4u);
    let nr = min(NR, n_rows - n0);
    var acc: array<i32, 8>;
    for (var e = lid; e < k; e += WG) {
        let wv = i32(wb_signed(rb + e));
        for (var r = 0u; r < nr; r++) {
            acc[r] += q[(n0 + r) * k + e] * wv;
        }
    }
    for (var r = 0u; r < NR; r++) {
        partial[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            for (var r = 0u; r < NR; r++) {
                partial[r * WG + lid] += partial[r * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lid < nr) {
        y[pu(6u) + (n0 + lid) * pu(7u) + pu(8u) + m] = d[n0 + lid] * f32(partial[lid * WG]);
    }
}
