// y[n, m] = Σ_k x[n, k] · w[m, k] on f32 activations: the exact numerics' float weights, and
// every type under the relaxed numerics on adapters without subgroups. One workgroup per weight
// row m and 8 activation rows: each thread decodes whole chunks of the row once and uses them
// for all 8 rows (chunk_dot, from chunk_dot_*.wgsl), then the workgroup sums its threads'
// partial sums. Every row is summed in the same order whatever rows run with it, so a row gives
// the same bits in a batch and alone.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 5 x offset, 6 y offset (elements),
// 7 y row length, 8 the first weight row (weights too large for one binding run in row ranges).

const WG: u32 = 64u;
const NR: u32 = 8u;
var<workgroup> partial: array<f32, 512>;

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
    var acc: array<f32, 8>;
    let chunks = (k + 31u) / 32u;
    for (var c = lid; c < chunks; c += WG) {
        var v: array<f32, 32>;
        load_chunk(rb, c, k, &v);
        let len = min(32u, k - c * 32u);
        for (var r = 0u; r < nr; r++) {
            acc[r] += chunk_dot(&v, pu(5u) + (n0 + r) * k + c * 32u, len);
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
        y[pu(6u) + (n0 + lid) * pu(7u) + pu(8u) + m] = partial[lid * WG];
    }
}
