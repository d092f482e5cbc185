// Causal attention of one query row and head per workgroup over a KV cache, contiguous or paged
// (PAGED is set when the kernel is built), computed in the CPU backend's order so both round
// alike: each score is one thread's q·k with two 8-lane FMA chains (16 values per step, then
// hsum(a0 + a1), then the tail), the softmax takes the exact maximum, e_j = exp(s_j - max) is
// summed in position order, and each output value is one FMA chain over the positions, times
// 1 / sum at the end. Threads split the positions for scores and the head's values for outputs.
// params: 0 N, 1 n_heads, 2 n_kv_heads, 3 head_dim, 4 scale, 5 window (0: none), 6 cache rows,
// 7 q offset, 8 k byte offset, 9 v byte offset, 10 pos offset, 11 out offset, 12 block size,
// 13 blocks per table, 14 tables offset, 15 node.

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<u32>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;
@group(0) @binding(6) var<storage, read> tables: array<i32>;

const PAGED: bool = PAGED_VALUE;
const KV_F16: bool = KV_F16_VALUE;

var<workgroup> qs: array<f32, 512>;
var<workgroup> tile: array<f32, 64>;
var<workgroup> bad: u32;
var<workgroup> query_pos: i32;
var<workgroup> shared_max: f32;
var<workgroup> shared_sum: f32;

fn cache_at(k_side: bool, byte_off: u32, e: u32) -> f32 {
    if (KV_F16) {
        let i = byte_off + 2u * e;
        var word: u32;
        if (k_side) { word = kc[i >> 2u]; } else { word = vc[i >> 2u]; }
        return f16_to_f32((word >> ((i & 2u) * 8u)) & 0xffffu);
    }
    let i = (byte_off >> 2u) + e;
    if (k_side) { return bitcast<f32>(kc[i]); }
    return bitcast<f32>(vc[i]);
}

// The cache row holding position j of query row n, or -1 when its table entry is out of range.
fn cache_row(n: u32, j: u32) -> i32 {
    if (!PAGED) {
        return i32(j);
    }
    let bs = pu(12u);
    let blk = tables[pu(14u) + n * pu(13u) + j / bs];
    if (blk < 0 || u32(blk) * bs >= pu(6u)) {
        return -1;
    }
    return blk * i32(bs) + i32(j % bs);
}

// scale · q·k for the key at element `kb` of the cache.
fn score(kb: u32, hd: u32) -> f32 {
    var a0: array<f32, 8>;
    var a1: array<f32, 8>;
    var i = 0u;
    for (; i + 16u <= hd; i += 16u) {
        for (var l = 0u; l < 8u; l++) {
            a0[l] = fma_exact(qs[i + l], cache_at(true, pu(8u), kb + i + l), a0[l]);
            a1[l] = fma_exact(qs[i + 8u + l], cache_at(true, pu(8u), kb + i + 8u + l), a1[l]);
        }
    }
    if (i + 8u <= hd) {
        for (var l = 0u; l < 8u; l++) {
            a0[l] = fma_exact(qs[i + l], cache_at(true, pu(8u), kb + i + l), a0[l]);
        }
        i += 8u;
    }
    var v: array<f32, 8>;
    for (var l = 0u; l < 8u; l++) {
        v[l] = a0[l] + a1[l];
    }
    var s = hsum8(v);
    for (; i < hd; i++) {
        s = s + f_mul(qs[i], cache_at(true, pu(8u), kb + i));
    }
    return pf(4u) * s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n_heads = pu(1u);
    let g = group_index(wid, nwg);
    if (g >= pu(0u) * n_heads) {
        return;
    }
    let n = g / n_heads;
    let h = g % n_heads;
    let hd = pu(3u);
    let kvh = h / (n_heads / pu(2u));
    let kv_cols = pu(2u) * hd;
    var limit = pu(6u);
    if (PAGED) {
        limit = pu(12u) * pu(13u);
    }
    if (lid == 0u) {
        bad = 0u;
        query_pos = pos[pu(10u) + n];
    }
    let qb = pu(7u) + n * n_heads * hd + h * hd;
    for (var d = lid; d < hd; d += 64u) {
        qs[d] = q[qb + d];
    }
    let p = workgroupUniformLoad(&query_pos);
    if (p < 0 || u32(p) >= limit) {
        if (lid == 0u) {
            report_error(2u);
        }
        return;
    }
    let hi = u32(p);
    var lo = 0u;
    let window = pu(5u);
    if (window != 0u && hi + 1u > window) {
        lo = hi + 1u - window;
    }
    // The largest score (exact whatever the order).
    var m = -3.0e38;
    for (var j = lo + lid; j <= hi; j += 64u) {
        let row = cache_row(n, j);
        if (row < 0) {
            bad = 1u;
        } else {
            m = max(m, score(u32(row) * kv_cols + kvh * hd, hd));
        }
    }
    tile[lid] = m;
    workgroupBarrier();
    if (workgroupUniformLoad(&bad) != 0u) {
        if (lid == 0u) {
            report_error(3u);
        }
        return;
    }
    if (lid == 0u) {
        var mx = tile[0];
        for (var t = 1u; t < 64u; t++) {
            mx = max(mx, tile[t]);
        }
        shared_max = mx;
        shared_sum = 0.0;
    }
    let smax = workgroupUniformLoad(&shared_max);
    var acc: array<f32, 8>;
    let hd8 = hd / 8u * 8u;
    for (var j0 = lo; j0 <= hi; j0 += 64u) {
        let count = min(64u, hi + 1u - j0);
        if (lid < count) {
            let row = u32(cache_row(n, j0 + lid));
            tile[lid] = exp_f32(score(row * kv_cols + kvh * hd, hd) - smax);
        }
        workgroupBarrier();
        if (lid == 0u) {
            var s = shared_sum;
            for (var t = 0u; t < count; t++) {
                s = s + tile[t];
            }
            shared_sum = s;
        }
        for (var t = 0u; t < count; t++) {
            let e = tile[t];
            let vb = u32(cache_row(n, j0 + t)) * kv_cols + kvh * hd;
            for (var i = 0u; i * 64u + lid < hd; i++) {
                let d = i * 64u + lid;
                let v = cache_at(false, pu(9u), vb + d);
                if (d < hd8) {
                    acc[i] = fma_exact(e, v, acc[i]);
                } else {
                    acc[i] = acc[i] + f_mul(e, v);
                }
            }
        }
        workgroupBarrier();
    }
    let inv = 1.0 / workgroupUniformLoad(&shared_sum);
    let out_b = pu(11u) + n * n_heads * hd + h * hd;
    for (var i = 0u; i * 64u + lid < hd; i++) {
        out[out_b + i * 64u + lid] = acc[i] * inv;
    }
}
