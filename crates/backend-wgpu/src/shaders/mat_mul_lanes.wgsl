// y[n, m] for the 32-value ggml block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against activations
// quantized by quantize_q8, summed in exactly the order of the CPU backend's x86 kernels (and
// ggml's AVX2 ones), so both give the same bits: per block, eight lane sums of four consecutive
// products (exact integers), each fused-multiply-added with d_w · d_x into one of two
// accumulators (even blocks, odd blocks); then hsum(even + odd) + (Σ_even m·s + Σ_odd m·s).
// Sixteen threads compute one weight row's outputs for four activation rows, one thread per
// (accumulator, lane), each weight quad decoded once for the four; a workgroup takes four
// weight rows. Rows are summed alike whatever rows run beside them.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 6 y offset (elements), 7 y row length,
// 8 the first weight row (weights too large for one binding run in row ranges).

@group(0) @binding(1) var<storage, read> qa: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;

const NR: u32 = 4u;
var<workgroup> lanes: array<f32, 256>;
var<workgroup> offsets: array<f32, 256>;

// Weight values 4·lane .. 4·lane + 3 of block `o`, and its d and m (m = 0 for signed types).
fn quad(o: u32, lane: u32, v: ptr<function, vec4<i32>>) -> vec2<f32> {
    // Bytes of the packed nibbles: values j < 16 are low nibbles of byte j, the rest high.
    let j0 = 4u * (lane % 4u);
    let high = lane >= 4u;
    let shift = select(0u, 4u, high);
    // The four bytes this lane reads, in one (or, unaligned, two) word loads.
    if (TYPE == 0u) { // Q4_0
        let q = wu(o + 2u + j0);
        for (var i = 0u; i < 4u; i++) {
            (*v)[i] = i32((q >> (8u * i + shift)) & 0xfu) - 8;
        }
        return vec2<f32>(wf16(o), 0.0);
    }
    if (TYPE == 1u) { // Q4_1
        let q = wu(o + 4u + j0);
        for (var i = 0u; i < 4u; i++) {
            (*v)[i] = i32((q >> (8u * i + shift)) & 0xfu);
        }
        return vec2<f32>(wf16(o), wf16(o + 2u));
    }
    if (TYPE == 2u) { // Q5_0
        let qh = wu(o + 2u);
        let q = wu(o + 6u + j0);
        for (var i = 0u; i < 4u; i++) {
            let e = 4u * lane + i;
            (*v)[i] = i32(((q >> (8u * i + shift)) & 0xfu) | (((qh >> e) & 1u) << 4u)) - 16;
        }
        return vec2<f32>(wf16(o), 0.0);
    }
    if (TYPE == 3u) { // Q5_1
        let qh = wu(o + 4u);
        let q = wu(o + 8u + j0);
        for (var i = 0u; i < 4u; i++) {
            let e = 4u * lane + i;
            (*v)[i] = i32(((q >> (8u * i + shift)) & 0xfu) | (((qh >> e) & 1u) << 4u));
        }
        return vec2<f32>(wf16(o), wf16(o + 2u));
    }
    // Q8_0
    let q = wu(o + 2u + 4u * lane);
    for (var i = 0u; i < 4u; i++) {
        (*v)[i] = bitcast<i32>(q << (24u - 8u * i)) >> 24u;
    }
    return vec2<f32>(wf16(o), 0.0);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let m_rows = pu(1u);
    let n_rows = pu(2u);
    let m = group_index(wid, nwg) * 4u + lid / 16u;
    let n0 = wid.z * NR;
    let nr = min(NR, n_rows - n0);
    let valid = m < m_rows;
    let parity = (lid % 16u) / 8u;
    let lane = lid % 8u;
    var acc: array<f32, 4>;
    var off: array<f32, 4>;
    if (valid) {
        let rb = pu(3u) + m * pu(4u);
        let blocks = k / 32u;
        for (var b = parity; b < blocks; b += 2u) {
            var v: vec4<i32>;
            let dm = quad(rb + BLOCK_BYTES * b, lane, &v);
            for (var r = 0u; r < nr; r++) {
                let n = n0 + r;
                let qb = n * k + 32u * b + 4u * lane;
                let s = v.x * qa[qb] + v.y * qa[qb + 1u] + v.z * qa[qb + 2u] + v.w * qa[qb + 3u];
                let c = 2u * (n * blocks + b);
                acc[r] = fma_exact(dm.x * da[c], f32(s), acc[r]);
                off[r] = off[r] + dm.y * da[c + 1u];
            }
        }
    }
    for (var r = 0u; r < NR; r++) {
        lanes[r * 64u + lid] = acc[r];
        offsets[r * 64u + lid] = off[r];
    }
    workgroupBarrier();
    if (valid && lid % 16u < nr) {
        // Thread lid + r of the group writes row r.
        let r = lid % 16u;
        let g = r * 64u + lid - r;
        var v: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) {
            v[j] = lanes[g + j] + lanes[g + 8u + j];
        }
        let sum = hsum8(v);
        var total = sum;
        if (TYPE == 1u || TYPE == 3u) {
            total = sum + (offsets[g] + offsets[g + 8u]);
        }
        y[pu(6u) + (n0 + r) * pu(7u) + pu(8u) + m] = total;
    }
}
