// y[n, :] = row ids[n] of the table, decoded. One thread per (row, chunk of 32).
// params: 0 D (row length), 1 rows of the table in this binding, 2 N, 3 table byte offset,
// 4 row bytes, 5 ids offset, 6 y offset (elements), 7 the binding's first table row,
// 8 V (table rows), 15 node. A table too large for one binding is read in row ranges, one
// dispatch each: ids outside this one's range are left to the others.

@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dim = pu(0u);
    let chunks = (dim + 31u) / 32u;
    let t = group_index(wid, nwg) * 64u + lid;
    if (t >= pu(2u) * chunks) {
        return;
    }
    let n = t / chunks;
    let c = t % chunks;
    let id = ids[pu(5u) + n];
    if (id < 0 || u32(id) >= pu(8u)) {
        report_error(1u);
        return;
    }
    if (u32(id) < pu(7u) || u32(id) >= pu(7u) + pu(1u)) {
        return;
    }
    var v: array<f32, 32>;
    load_chunk(pu(3u) + (u32(id) - pu(7u)) * pu(4u), c, dim, &v);
    let yb = pu(6u) + n * dim + c * 32u;
    for (var i = 0u; i < min(32u, dim - c * 32u); i++) {
        y[yb + i] = v[i];
    }
}
