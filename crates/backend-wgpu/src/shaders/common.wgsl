// Shared by every kernel: the parameter block and exact f16 conversions.

// Sixteen 32-bit parameters per dispatch; floats are stored as their bits.
@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 4>;

fn pu(i: u32) -> u32 {
    return params[i / 4u][i % 4u];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(pu(i));
}

// Workgroups beyond 65535 in x wrap into y; this is the linear workgroup index.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// f16 bits -> f32, exact for every value (subnormals included, which unpack2x16float may flush).
fn f16_to_f32(h: u32) -> f32 {
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    var r: f32;
    if (e == 0u) {
        r = f32(m) * 5.9604644775390625e-8;
    } else if (e == 31u) {
        r = bitcast<f32>(0x7f800000u | (m << 13u));
    } else {
        r = bitcast<f32>(((e + 112u) << 23u) | (m << 13u));
    }
    return select(r, -r, (h & 0x8000u) != 0u);
}

// f32 -> f16 bits, rounding to nearest even like every CPU conversion (WGSL leaves
// pack2x16float's rounding to the implementation).
fn f32_to_f16(f: f32) -> u32 {
    let x = bitcast<u32>(f);
    let sign = (x >> 16u) & 0x8000u;
    let ef = (x >> 23u) & 0xffu;
    let m = x & 0x7fffffu;
    if (ef == 0xffu) {
        return sign | 0x7c00u | select(0u, 0x200u | (m >> 13u), m != 0u);
    }
    let e = i32(ef) - 112;
    if (e >= 31) {
        return sign | 0x7c00u;
    }
    if (e <= 0) {
        if (e < -10) {
            return sign;
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - e);
        var r = mm >> shift;
        let rem = mm & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u) == 1u)) {
            r = r + 1u;
        }
        return sign | r;
    }
    var r = (u32(e) << 10u) | (m >> 13u);
    let rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) == 1u)) {
        r = r + 1u;
    }
    return sign | r;
}

// f32 -> bf16 bits (the upper half), rounding to nearest even.
fn bf16_bits(f: f32) -> u32 {
    let x = bitcast<u32>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (x >> 16u) | 0x40u;
    }
    return (x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u;
}

// The sum of eight lanes in the order x86's 256-bit horizontal sum adds them (the CPU backend's
// hsum_ps): ((v4 + v0) + (v6 + v2)) + ((v5 + v1) + (v7 + v3)).
fn hsum8(v: array<f32, 8>) -> f32 {
    return ((v[4] + v[0]) + (v[6] + v[2])) + ((v[5] + v[1]) + (v[7] + v[3]));
}
