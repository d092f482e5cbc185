// y[n, m] for ggml block weights against activations quantized by quantize_q8: integer sums per
// block, then the block scales, in the order the CPU backend's dot products apply them. One
// workgroup per weight row and 8 activation rows, as mat_mul.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 6 y offset (elements), 7 y row length,
// 8 the first weight row (weights too large for one binding run in row ranges).

@group(0) @binding(1) var<storage, read> qa: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;

const WG: u32 = 64u;
const NR: u32 = 8u;
var<workgroup> partial: array<f32, 512>;

// Σ codes · activations over chunk c of row `row`, and Σ activations (for minimums).
fn idot(v: ptr<function, array<i32, 32>>, row: u32, k: u32, c: u32) -> vec2<i32> {
    let qb = row * k + c * 32u;
    var s = 0;
    var t = 0;
    for (var i = 0u; i < 32u; i++) {
        let a = qa[qb + i];
        s += (*v)[i] * a;
        t += a;
    }
    return vec2<i32>(s, t);
}

fn act_d(row: u32, k: u32, c: u32) -> f32 {
    return da[2u * (row * (k / 32u) + c)];
}

fn act_s(row: u32, k: u32, c: u32) -> f32 {
    return da[2u * (row * (k / 32u) + c) + 1u];
}

fn block_dot_q4_0(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 18u * b;
    let d = wf16(o);
    var v: array<i32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let q = wb(o + 2u + i);
        v[i] = i32(q & 0xfu) - 8;
        v[i + 16u] = i32(q >> 4u) - 8;
    }
    for (var r = 0u; r < nr; r++) {
        let s = idot(&v, n0 + r, k, b).x;
        (*acc)[r] += f32(s) * d * act_d(n0 + r, k, b);
    }
}

fn block_dot_q4_1(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 20u * b;
    let d = wf16(o);
    let m = wf16(o + 2u);
    var v: array<i32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let q = wb(o + 4u + i);
        v[i] = i32(q & 0xfu);
        v[i + 16u] = i32(q >> 4u);
    }
    for (var r = 0u; r < nr; r++) {
        let s = idot(&v, n0 + r, k, b).x;
        (*acc)[r] += (d * act_d(n0 + r, k, b)) * f32(s) + m * act_s(n0 + r, k, b);
    }
}

fn block_dot_q5_0(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 22u * b;
    let d = wf16(o);
    let qh = wu(o + 2u);
    var v: array<i32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let q = wb(o + 6u + i);
        v[i] = i32((q & 0xfu) | (((qh >> i) & 1u) << 4u)) - 16;
        v[i + 16u] = i32((q >> 4u) | (((qh >> (i + 16u)) & 1u) << 4u)) - 16;
    }
    for (var r = 0u; r < nr; r++) {
        let s = idot(&v, n0 + r, k, b).x;
        (*acc)[r] += (d * act_d(n0 + r, k, b)) * f32(s);
    }
}

fn block_dot_q5_1(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 24u * b;
    let d = wf16(o);
    let m = wf16(o + 2u);
    let qh = wu(o + 4u);
    var v: array<i32, 32>;
    for (var i = 0u; i < 16u; i++) {
        let q = wb(o + 8u + i);
        v[i] = i32((q & 0xfu) | (((qh >> i) & 1u) << 4u));
        v[i + 16u] = i32((q >> 4u) | (((qh >> (i + 16u)) & 1u) << 4u));
    }
    for (var r = 0u; r < nr; r++) {
        let s = idot(&v, n0 + r, k, b).x;
        (*acc)[r] += (d * act_d(n0 + r, k, b)) * f32(s) + m * act_s(n0 + r, k, b);
    }
}

fn block_dot_q8_0(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 34u * b;
    let d = wf16(o);
    var v: array<i32, 32>;
    for (var i = 0u; i < 32u; i++) {
        v[i] = i32(wb_signed(o + 2u + i));
    }
    for (var r = 0u; r < nr; r++) {
        let s = idot(&v, n0 + r, k, b).x;
        (*acc)[r] += f32(s) * (d * act_d(n0 + r, k, b));
    }
}

// Q4_K and Q5_K: 6-bit scale and minimum per 32 values, integer sums over the super-block.
fn block_dot_q45_k(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>, five: bool) {
    let o = rb + select(144u, 176u, five) * b;
    var isum: array<i32, 8>;
    var msum: array<i32, 8>;
    for (var sub = 0u; sub < 8u; sub++) {
        let sm = scale_min_k4(o + 4u, sub);
        let qs = o + select(16u, 48u, five) + 32u * (sub / 2u);
        let shift = 4u * (sub % 2u);
        var v: array<i32, 32>;
        for (var i = 0u; i < 32u; i++) {
            var q = (wb(qs + i) >> shift) & 0xfu;
            if (five) {
                q |= ((wb(o + 16u + i) >> sub) & 1u) << 4u;
            }
            v[i] = i32(q);
        }
        for (var r = 0u; r < nr; r++) {
            let st = idot(&v, n0 + r, k, 8u * b + sub);
            isum[r] += i32(sm.x) * st.x;
            msum[r] += i32(sm.y) * st.y;
        }
    }
    let d = wf16(o);
    let dmin = wf16(o + 2u);
    for (var r = 0u; r < nr; r++) {
        let dy = act_d(n0 + r, k, 8u * b);
        (*acc)[r] += d * dy * f32(isum[r]) - dmin * dy * f32(msum[r]);
    }
}

fn block_dot_q4_k(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    block_dot_q45_k(rb, b, k, n0, nr, acc, false);
}

fn block_dot_q5_k(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    block_dot_q45_k(rb, b, k, n0, nr, acc, true);
}

fn block_dot_q6_k(rb: u32, b: u32, k: u32, n0: u32, nr: u32, acc: ptr<function, array<f32, 8>>) {
    let o = rb + 210u * b;
    var isum: array<i32, 8>;
    for (var sub = 0u; sub < 8u; sub++) {
        let n = sub / 4u;
        let t = sub % 4u;
        let ql = o + 64u * n + 32u * (t % 2u);
        let qh = o + 128u + 32u * n;
        let sc = o + 192u + 8u * n + 2u * t;
        let shift = 4u * (t / 2u);
        var v: array<i32, 32>;
        for (var i = 0u; i < 32u; i++) {
            let q = ((wb(ql + i) >> shift) & 0xfu) | (((wb(qh + i) >> (2u * t)) & 3u) << 4u);
            v[i] = i32(q) - 32;
        }
        let s_lo = i32(wb_signed(sc));
        let s_hi = i32(wb_signed(sc + 1u));
        for (var r = 0u; r < nr; r++) {
            let qb = (n0 + r) * k + (8u * b + sub) * 32u;
            var lo = 0;
            var hi = 0;
            for (var i = 0u; i < 16u; i++) {
                lo += v[i] * qa[qb + i];
                hi += v[i + 16u] * qa[qb + 16u + i];
            }
            isum[r] += s_lo * lo + s_hi * hi;
        }
    }
    let d = wf16(o + 208u);
    for (var r = 0u; r < nr; r++) {
        (*acc)[r] += d * act_d(n0 + r, k, 8u * b) * f32(isum[r]);
    }
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
    for (var b = lid; b < k / BLOCK_LEN; b += WG) {
        block_dot(rb, b, k, n0, nr, &acc);
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
