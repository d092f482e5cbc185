// The relaxed numerics' matmul on adapters with subgroups: one subgroup per weight row (a
// workgroup of 64 takes 64 / subgroup-size rows), its invocations taking alternate chunks of 32
// weights, each chunk decoded once for 8 activation rows, the partial sums reduced with
// subgroupAdd: no workgroup memory, no barriers. chunk_dot comes from chunk_dot_relaxed.wgsl.
// params: as mat_mul.wgsl.

const NR: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32,
        @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) sg_count: u32) {
    let k = pu(0u);
    let m_rows = pu(1u);
    let n_rows = pu(2u);
    let m = group_index(wid, nwg) * sg_count + sg_id;
    let n0 = wid.z * NR;
    if (m >= m_rows) {
        return;
    }
    let rb = pu(3u) + m * pu(4u);
    let nr = min(NR, n_rows - n0);
    var acc: array<f32, 8>;
    let chunks = (k + 31u) / 32u;
    for (var c = sg_lane; c < chunks; c += sg_size) {
        var v: array<f32, 32>;
        load_chunk(rb, c, k, &v);
        let len = min(32u, k - c * 32u);
        for (var r = 0u; r < nr; r++) {
            acc[r] += chunk_dot(&v, pu(5u) + (n0 + r) * k + c * 32u, len);
        }
    }
    for (var r = 0u; r < NR; r++) {
        let t = subgroupAdd(acc[r]);
        if (sg_lane == 0u && r < nr) {
            y[pu(6u) + (n0 + r) * pu(7u) + pu(8u) + m] = t;
        }
    }
}
