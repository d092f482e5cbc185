// The relaxed numerics' matmul for every decodable weight type: y[n, m] = Σ_k x[n, k] · w[m, k]
// with f32 activations (no activation quantization pass). Each thread decodes whole chunks of
// 32 weights once for 8 activation rows; where the adapter has f16 and the type's tolerance
// allows (F16, BF16, block types), products are taken four at a time in f16 and summed in f32.
// This is the version for adapters without subgroups (mat_mul_relaxed_sg.wgsl): one workgroup
// per weight row, its partial sums reduced through workgroup memory.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 5 x offset, 6 y offset (elements),
// 7 y row length, 8 the first weight row.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const NR: u32 = 8u;
const USE_F16: bool = USE_F16_VALUE;
var<workgroup> partial: array<f32, 512>;

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
