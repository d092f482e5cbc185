// y[n, m] for the 32-value ggml block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against activations
// quantized by quantize_q8, summed in exactly the order of the CPU backend's x86 kernels (and
// ggml's AVX2 ones), so both give the same bits: per block, eight lane sums of four consecutive
// products (exact integers), each fused-multiply-added with d_w · d_x into one of two
// accumulators (even blocks, odd blocks); then hsum(even + odd) + (Σ_even m·s + Σ_odd m·s).
// Sixteen threads compute one output, one per (accumulator, lane); a workgroup computes four.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 6 y offset (elements), 7 y row length,
// 8 the first weight row (weights too large for one binding run in row ranges).

@group(0) @binding(1) var<storage, read> qa: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;

var<workgroup> lanes: array<f32, 64>;

var<workgroup> offsets: array<f32, 64>;

// Weight values 4·lane .. 4·lane + 3 of block `o`, and its d and m (m = 0 for signed types).
fn quad(o: u32, lane: u32, v: ptr<function, vec4<i32>>) -> vec2<f32> {
    // Bytes of the packed nibbles: values j < 16 are low nibbles of byte j, the rest high.
    let j0 = 4u * (lane % 4u);
    let high = lane >= 4u;
    let shift = select(0u, 4u, high);
    if (TYPE == 0u) { // Q4_0
        for (var i = 0u; i < 4u; i++) {
            (*v)[i] = i32((wb(o + 2u + j0 + i) >> shift) & 0xfu) - 8;
        }
        return vec2<f32>(wf16(o), 0.0);
    }
    if (TYPE == 1u) { // Q4_1
        for (var i = 0u; i < 4u; i++) {
            (*v)[i] = i32((wb(o + 4u + j0 + i) >> shift) & 0xfu);
        }
        return vec2<f32>(wf16(o), wf16(o + 2u));
    }
    if (TYPE == 2u) { // Q5_0
        let qh = wu(o + 2u);
        for (var i = 0u; i < 4u; i++) {
            let e = 4u * lane + i;
            let q = ((wb(o + 6u + j0 + i) >> shift) & 0xfu) | (((qh >> e) & 1u) << 4u);
            (*v)[i] = i32(q) - 16;
        }
        return vec2<f32>(wf16(o), 0.0);
    }
    if (TYPE == 3u) { // Q5_1
        let qh = wu(o + 4u);
        for (var i = 0u; i < 4u; i++) {
            let e = 4u * lane + i;
            (*v)[i] = i32(((wb(o + 8u + j0 + i) >> shift) & 0xfu) | (((qh >> e) & 1u) << 4u));
        }
        return vec2<f32>(wf16(o), wf16(o + 2u));
    }
    // Q8_0
    for (var i = 0u; i < 4u; i++) {
        (*v)[i] = i32(wb_signed(o + 2u + 4u * lane + i));
    }
    return vec2<f32>(wf16(o), 0.0);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let m_rows = pu(1u);
    let out = group_index(wid, nwg) * 4u + lid / 16u;
    let valid = out < m_rows * pu(2u);
    let n = out / m_rows;
    let m = out % m_rows;
    let parity = (lid % 16u) / 8u;
    let lane = lid % 8u;
    var acc = 0.0;
    var off = 0.0;
    if (valid) {
        let rb = pu(3u) + m * pu(4u);
        let blocks = k / 32u;
        for (var b = parity; b < blocks; b += 2u) {
            var v: vec4<i32>;
            let dm = quad(rb + BLOCK_BYTES * b, lane, &v);
            let qb = n * k + 32u * b + 4u * lane;
            let s = v.x * qa[qb] + v.y * qa[qb + 1u] + v.z * qa[qb + 2u] + v.w * qa[qb + 3u];
            let c = 2u * (n * blocks + b);
            acc = fma_exact(dm.x * da[c], f32(s), acc);
            off = off + dm.y * da[c + 1u];
        }
    }
    lanes[lid] = acc;
    offsets[lid] = off;
    workgroupBarrier();
    if (valid && lid % 16u == 0u) {
        var v: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) {
            v[j] = lanes[lid + j] + lanes[lid + 8u + j];
        }
        let sum = ((v[4] + v[0]) + (v[6] + v[2])) + ((v[5] + v[1]) + (v[7] + v[3]));
        var total = sum;
        if (TYPE == 1u || TYPE == 3u) {
            total = sum + (offsets[lid] + offsets[lid + 8u]);
        }
        y[pu(6u) + n * pu(7u) + pu(8u) + m] = total;
    }
}
