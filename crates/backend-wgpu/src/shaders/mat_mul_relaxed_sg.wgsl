// The relaxed numerics' matmul on adapters with subgroups: one subgroup per weight row (a
// workgroup of 64 takes 64 / subgroup-size rows), its invocations taking alternate chunks of 32
// weights, each chunk decoded once for 8 activation rows, the partial sums reduced with
// subgroupAdd: no workgroup memory, no barriers. Products in f16 where the adapter has f16 and
// the type's tolerance allows, as in mat_mul_relaxed.wgsl.
// params: as mat_mul_relaxed.wgsl.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const NR: u32 = 8u;
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
