// y = x / sqrt(mean(x²) + eps) · w, one workgroup per row, as the CPU backend (and ggml)
// computes it: squares rounded to f32 and summed wider (SUM_T: f64 where the adapter has it,
// where the sum is exact for all but extreme rows, so the order the threads add in does not
// matter), the scale in f32.
// params: 0 D, 1 N, 2 x offset, 3 w offset, 4 y offset, 5 eps.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> sums: array<SUM_T, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dim = pu(0u);
    let n = group_index(wid, nwg);
    if (n >= pu(1u)) {
        return;
    }
    let xb = pu(2u) + n * dim;
    var s = SUM_T(0.0);
    for (var i = lid; i < dim; i += 256u) {
        let v = x[xb + i];
        s += SUM_T(v * v);
    }
    sums[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            sums[lid] += sums[lid + stride];
        }
        workgroupBarrier();
    }
    let mean = f32(sums[0] / SUM_T(dim));
    let scale = 1.0 / sqrt(mean + pf(5u));
    let yb = pu(4u) + n * dim;
    for (var i = lid; i < dim; i += 256u) {
        y[yb + i] = (x[xb + i] * scale) * wt[pu(3u) + i];
    }
}
