// Reading weights in their stored type from `w` (bytes in a u32 array), 32 values at a time.
// `rb` is the byte offset of the row, `c` the chunk (values 32c..32c+31), `k` the row length.
// Every block type's block holds a whole number of chunks; plain types zero what lies past `k`.
// The formulas are ggml's dequantize_row_* ones.

@group(0) @binding(2) var<storage, read> w: array<u32>;

fn wb(i: u32) -> u32 {
    return (w[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn wb_signed(i: u32) -> f32 {
    return f32(bitcast<i32>(wb(i) << 24u) >> 24u);
}

fn wh(i: u32) -> u32 {
    if ((i & 3u) == 3u) {
        return wb(i) | (wb(i + 1u) << 8u);
    }
    return (w[i >> 2u] >> ((i & 3u) * 8u)) & 0xffffu;
}

fn wu(i: u32) -> u32 {
    let s = (i & 3u) * 8u;
    if (s == 0u) {
        return w[i >> 2u];
    }
    return (w[i >> 2u] >> s) | (w[(i >> 2u) + 1u] << (32u - s));
}

fn wf16(i: u32) -> f32 {
    return f16_to_f32(wh(i));
}

fn chunk_f32(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    for (var i = 0u; i < 32u; i++) {
        let e = c * 32u + i;
        (*v)[i] = select(0.0, bitcast<f32>(wu(rb + 4u * e)), e < k);
    }
}

fn chunk_f16(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    for (var i = 0u; i < 32u; i++) {
        let e = c * 32u + i;
        (*v)[i] = select(0.0, f16_to_f32(wh(rb + 2u * e)), e < k);
    }
}

fn chunk_bf16(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    for (var i = 0u; i < 32u; i++) {
        let e = c * 32u + i;
        (*v)[i] = select(0.0, bitcast<f32>(wh(rb + 2u * e) << 16u), e < k);
    }
}

// INT8 weights: the values themselves (no scale).
fn chunk_i8(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    for (var i = 0u; i < 32u; i++) {
        let e = c * 32u + i;
        (*v)[i] = select(0.0, wb_signed(rb + e), e < k);
    }
}

fn e4m3(b: u32) -> f32 {
    let e = (b >> 3u) & 0xfu;
    let m = f32(b & 7u);
    var r = select(exp2(f32(e) - 7.0) * (1.0 + m / 8.0), m * 0.001953125, e == 0u);
    return select(r, -r, (b & 0x80u) != 0u);
}

fn chunk_f8_e4m3(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    for (var i = 0u; i < 32u; i++) {
        let e = c * 32u + i;
        (*v)[i] = select(0.0, e4m3(wb(rb + e)), e < k);
    }
}

fn chunk_q8_0(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 34u * c;
    let d = wf16(b);
    for (var i = 0u; i < 32u; i++) {
        (*v)[i] = d * wb_signed(b + 2u + i);
    }
}

fn chunk_q4_0(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 18u * c;
    let d = wf16(b);
    for (var i = 0u; i < 16u; i++) {
        let q = wb(b + 2u + i);
        (*v)[i] = d * (f32(q & 0xfu) - 8.0);
        (*v)[i + 16u] = d * (f32(q >> 4u) - 8.0);
    }
}

fn chunk_q4_1(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 20u * c;
    let d = wf16(b);
    let m = wf16(b + 2u);
    for (var i = 0u; i < 16u; i++) {
        let q = wb(b + 4u + i);
        (*v)[i] = d * f32(q & 0xfu) + m;
        (*v)[i + 16u] = d * f32(q >> 4u) + m;
    }
}

fn chunk_q5_0(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 22u * c;
    let d = wf16(b);
    let qh = wu(b + 2u);
    for (var i = 0u; i < 16u; i++) {
        let q = wb(b + 6u + i);
        let h0 = ((qh >> i) << 4u) & 0x10u;
        let h1 = (qh >> (i + 12u)) & 0x10u;
        (*v)[i] = d * (f32((q & 0xfu) | h0) - 16.0);
        (*v)[i + 16u] = d * (f32((q >> 4u) | h1) - 16.0);
    }
}

fn chunk_q5_1(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 24u * c;
    let d = wf16(b);
    let m = wf16(b + 2u);
    let qh = wu(b + 4u);
    for (var i = 0u; i < 16u; i++) {
        let q = wb(b + 8u + i);
        let h0 = ((qh >> i) << 4u) & 0x10u;
        let h1 = (qh >> (i + 12u)) & 0x10u;
        (*v)[i] = d * f32((q & 0xfu) | h0) + m;
        (*v)[i + 16u] = d * f32((q >> 4u) | h1) + m;
    }
}

// The 6-bit scale and minimum of sub-block j of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4).
fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(wb(s + j) & 63u), f32(wb(s + j + 4u) & 63u));
    }
    let sc = (wb(s + j + 4u) & 0xfu) | ((wb(s + j - 4u) >> 6u) << 4u);
    let mn = (wb(s + j + 4u) >> 4u) | ((wb(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

fn chunk_q4_k(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 144u * (c / 8u);
    let sub = c % 8u;
    let sm = scale_min_k4(b + 4u, sub);
    let d = wf16(b) * sm.x;
    let m = wf16(b + 2u) * sm.y;
    let qs = b + 16u + 32u * (sub / 2u);
    let shift = 4u * (sub % 2u);
    for (var i = 0u; i < 32u; i++) {
        (*v)[i] = d * f32((wb(qs + i) >> shift) & 0xfu) - m;
    }
}

fn chunk_q5_k(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 176u * (c / 8u);
    let sub = c % 8u;
    let sm = scale_min_k4(b + 4u, sub);
    let d = wf16(b) * sm.x;
    let m = wf16(b + 2u) * sm.y;
    let qh = b + 16u;
    let qs = b + 48u + 32u * (sub / 2u);
    let shift = 4u * (sub % 2u);
    for (var i = 0u; i < 32u; i++) {
        let q = ((wb(qs + i) >> shift) & 0xfu) | (((wb(qh + i) >> sub) & 1u) << 4u);
        (*v)[i] = d * f32(q) - m;
    }
}

fn chunk_q6_k(rb: u32, c: u32, k: u32, v: ptr<function, array<f32, 32>>) {
    let b = rb + 210u * (c / 8u);
    let sub = c % 8u;
    let n = sub / 4u;
    let t = sub % 4u;
    let d = wf16(b + 208u);
    let ql = b + 64u * n + 32u * (t % 2u);
    let qh = b + 128u + 32u * n;
    let sc = b + 192u + 8u * n + 2u * t;
    let shift = 4u * (t / 2u);
    for (var i = 0u; i < 32u; i++) {
        let q = ((wb(ql + i) >> shift) & 0xfu) | (((wb(qh + i) >> (2u * t)) & 3u) << 4u);
        (*v)[i] = d * wb_signed(sc + i / 16u) * (f32(q) - 32.0);
    }
}
