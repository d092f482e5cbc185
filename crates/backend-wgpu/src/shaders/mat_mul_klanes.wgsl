// y[n, m] for the K-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations from quantize_q8, summed
// in exactly the order of the CPU backend's x86 kernels (ggml's AVX2 structure): per
// super-block, eight lane sums (lane l holds values 4l..4l+3 of every 32, each sub-block's
// products times its scale, exact integers; Q6_K subtracts 32 · Σ scale · bsum for the groups
// 2l and 2l + 1), fused-multiply-added with d_w · d_x into one accumulator; then hsum, and for
// Q4_K/Q5_K minus Σ dmin · (minimums · bsums), kept as a separate scalar chain. Eight threads
// compute one weight row's outputs for four activation rows, one thread per lane, each weight
// byte decoded once for the four; a workgroup takes eight weight rows.
// params: 0 K, 1 M, 2 N, 3 w byte offset, 4 row bytes, 6 y offset (elements), 7 y row length,
// 8 the first weight row (weights too large for one binding run in row ranges).

@group(0) @binding(1) var<storage, read> qa: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> da: array<f32>;

const NR: u32 = 4u;
var<workgroup> lanes: array<f32, 256>;
var<workgroup> mins: array<f32, 256>;

// Σ of the 16 activations of group g of the super-block starting at element `base`.
fn bsum(base: u32, g: u32) -> i32 {
    var s = 0;
    for (var i = 0u; i < 16u; i++) {
        s += qa[base + 16u * g + i];
    }
    return s;
}

// Lane l's integer sum over one Q4_K/Q5_K super-block at byte `o`.
fn lane_q45_k(o: u32, base: u32, l: u32, five: bool) -> i32 {
    let qs_at = o + select(16u, 48u, five);
    var sumi = 0;
    for (var j = 0u; j < 4u; j++) {
        let sm_lo = scale_min_k4(o + 4u, 2u * j);
        let sm_hi = scale_min_k4(o + 4u, 2u * j + 1u);
        var p_lo = 0;
        var p_hi = 0;
        for (var b = 4u * l; b < 4u * l + 4u; b++) {
            let byte = wb(qs_at + 32u * j + b);
            var lo = byte & 0xfu;
            var hi = byte >> 4u;
            if (five) {
                let h = wb(o + 16u + b);
                lo |= ((h >> (2u * j)) & 1u) << 4u;
                hi |= ((h >> (2u * j + 1u)) & 1u) << 4u;
            }
            p_lo += i32(lo) * qa[base + 64u * j + b];
            p_hi += i32(hi) * qa[base + 64u * j + 32u + b];
        }
        sumi += i32(sm_lo.x) * p_lo + i32(sm_hi.x) * p_hi;
    }
    return sumi;
}

// Σ_j min_j · (bsum_2j + bsum_2j+1) of a Q4_K/Q5_K super-block.
fn min_sum(o: u32, base: u32) -> i32 {
    var s = 0;
    for (var j = 0u; j < 8u; j++) {
        s += i32(scale_min_k4(o + 4u, j).y) * (bsum(base, 2u * j) + bsum(base, 2u * j + 1u));
    }
    return s;
}

fn lane_q6_k(o: u32, base: u32, l: u32) -> i32 {
    var sumi = 0;
    for (var j = 0u; j < 2u; j++) {
        for (var k = 0u; k < 4u; k++) {
            let g = 8u * j + 2u * k + select(0u, 1u, l >= 4u);
            let sc = i32(wb_signed(o + 192u + g));
            var p = 0;
            for (var b = 4u * l; b < 4u * l + 4u; b++) {
                let low = wb(o + 64u * j + 32u * (k % 2u) + b);
                let h = wb(o + 128u + 32u * j + b);
                let q = ((low >> (4u * (k / 2u))) & 0xfu) | (((h >> (2u * k)) & 3u) << 4u);
                p += i32(q) * qa[base + 128u * j + 32u * k + b];
            }
            sumi += sc * p;
        }
    }
    let s0 = i32(wb_signed(o + 192u + 2u * l));
    let s1 = i32(wb_signed(o + 192u + 2u * l + 1u));
    return sumi - 32 * (bsum(base, 2u * l) * s0 + bsum(base, 2u * l + 1u) * s1);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = pu(0u);
    let m_rows = pu(1u);
    let n_rows = pu(2u);
    let m = group_index(wid, nwg) * 8u + lid / 8u;
    let n0 = wid.z * NR;
    let nr = min(NR, n_rows - n0);
    let valid = m < m_rows;
    let l = lid % 8u;
    var acc: array<f32, 4>;
    var acc_m: array<f32, 4>;
    if (valid) {
        let rb = pu(3u) + m * pu(4u);
        for (var b = 0u; b < k / 256u; b++) {
            let o = rb + BLOCK_BYTES * b;
            for (var r = 0u; r < nr; r++) {
                let base = (n0 + r) * k + 256u * b;
                let dy = da[2u * (base / 32u)];
                var sumi: i32;
                var d: f32;
                if (TYPE == 2u) {
                    d = f_mul(dy, wf16(o + 208u));
                    sumi = lane_q6_k(o, base, l);
                } else {
                    d = f_mul(dy, wf16(o));
                    sumi = lane_q45_k(o, base, l, TYPE == 1u);
                    if (l == 0u) {
                        acc_m[r] = acc_m[r] - f_mul(f_mul(dy, wf16(o + 2u)), f32(min_sum(o, base)));
                    }
                }
                acc[r] = fma_exact(d, f32(sumi), acc[r]);
            }
        }
    }
    for (var r = 0u; r < NR; r++) {
        lanes[r * 64u + lid] = acc[r];
        mins[r * 64u + lid] = acc_m[r];
    }
    workgroupBarrier();
    if (valid && l < nr) {
        // Thread lid + r of the group writes row r.
        let r = l;
        let g = r * 64u + lid - r;
        var v: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) {
            v[j] = lanes[g + j];
        }
        let sum = hsum8(v);
        y[pu(6u) + (n0 + r) * pu(7u) + pu(8u) + m] = sum + mins[g];
    }
}
