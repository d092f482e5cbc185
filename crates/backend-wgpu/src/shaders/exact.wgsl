// Arithmetic as the CPU backend rounds it, on adapters with f64 in shaders: a fused
// multiply-add rounded once (x86's vfmadd; WGSL's fma may round the product first), a product
// rounded to f32 on its own (so no compiler fuses it into a following add), and the C
// library's expf and tanhf, reproduced operation by operation.

fn fma_exact(a: f32, b: f32, c: f32) -> f32 {
    // The product of two f32 (48 bits) is exact in f64; the sum rounds in f64, then to f32,
    // which differs from one rounding only when the f64 sum lands exactly on an f32 midpoint.
    return f32(f64(a) * f64(b) + f64(c));
}

// 2^(j/32), j < 32, as doubles: the table glibc's expf scales by.
const EXP2_J_32 = array<f64, 32>(
    1.0, 1.0218971486541166, 1.0442737824274138, 1.0671404006768237,
    1.0905077326652577, 1.1143867425958924, 1.1387886347566916, 1.1637248587775775,
    1.189207115002721, 1.215247359980469, 1.241857812073484, 1.2690509571917332,
    1.2968395546510096, 1.3252366431597413, 1.3542555469368927, 1.383909881963832,
    1.4142135623730951, 1.4451808069770467, 1.4768261459394993, 1.5091644275934228,
    1.5422108254079407, 1.5759808451078865, 1.6104903319492543, 1.645755478153965,
    1.681792830507429, 1.718619298122478, 1.7562521603732995, 1.7947090750031072,
    1.8340080864093424, 1.8741676341103, 1.9152065613971474, 1.9571441241754002
);

// 2^q as an f64, for |q| <= 126.
fn pow2_f64(q: i32) -> f64 {
    return f64(bitcast<f32>(u32(q + 127) << 23u));
}

// The C library's expf (glibc's, from Arm's optimized routines): x·32/ln 2 = k + r, then
// 2^(k/32) from a table times a cubic in r, all in double, rounded to float once. Its result is
// within 0.502 ULP of e^x but not always correctly rounded, so the CPU's SwiGLU is matched only
// by the same approximation. (glibc's x86-64 build fuses the multiply-adds; unfused they differ
// in the last bits of the double, which the rounding to float absorbs.)
fn exp_f32(x: f32) -> f32 {
    if (x != x) {
        return x;
    }
    if (x > bitcast<f32>(0x42b17217u)) {
        return bitcast<f32>(0x7f800000u);
    }
    if (x < bitcast<f32>(0xc2cff1b4u)) {
        return 0.0;
    }
    let z = f64(46.16624130844683) * f64(x);
    let kd = round(z);
    let r = z - kd;
    let ki = i32(kd);
    let j = u32(ki & 31);
    let q = (ki - i32(j)) / 32;
    let s = EXP2_J_32[j] * pow2_f64(q / 2) * pow2_f64(q - q / 2);
    let zz = f64(1.6938359250920212e-06) * r + f64(0.00023459809789509004);
    let r2 = r * r;
    var y = f64(0.021660849396613134) * r + f64(1.0);
    y = zz * r2 + y;
    return f32(y * s);
}

// Single f32 operations, each rounded once to nearest even whatever the shader compiler fuses
// or however precisely the device divides: formed in f64 and rounded (for +, -, * and / a
// 53-bit intermediate never changes the f32 result).
fn f_add(a: f32, b: f32) -> f32 {
    return f32(f64(a) + f64(b));
}

fn f_sub(a: f32, b: f32) -> f32 {
    return f32(f64(a) - f64(b));
}

fn f_mul(a: f32, b: f32) -> f32 {
    return f32(f64(a) * f64(b));
}

fn f_div(a: f32, b: f32) -> f32 {
    return f32(f64(a) / f64(b));
}

// The C library's expm1f (fdlibm's float version, as glibc builds it for x86-64: plain f32
// operations in this order), for the tanhf below. Only finite arguments of magnitude below 44
// reach it.
fn expm1_f32(x0: f32) -> f32 {
    var x = x0;
    let bits = bitcast<u32>(x);
    let negative = (bits & 0x80000000u) != 0u;
    let hx = bits & 0x7fffffffu;
    if (hx >= 0x4195b844u && negative) {
        return -1.0; // x < -27 ln 2
    }
    var k = 0;
    var c = 0.0;
    if (hx > 0x3eb17218u) {
        var hi: f32;
        var lo: f32;
        if (hx < 0x3f851592u) {
            if (!negative) {
                hi = f_sub(x, bitcast<f32>(0x3f317180u));
                lo = bitcast<f32>(0x3717f7d1u);
                k = 1;
            } else {
                hi = f_add(x, bitcast<f32>(0x3f317180u));
                lo = -bitcast<f32>(0x3717f7d1u);
                k = -1;
            }
        } else {
            k = i32(f_add(f_mul(bitcast<f32>(0x3fb8aa3bu), x), select(0.5, -0.5, negative)));
            let t = f32(k);
            hi = f_sub(x, f_mul(t, bitcast<f32>(0x3f317180u)));
            lo = f_mul(t, bitcast<f32>(0x3717f7d1u));
        }
        x = f_sub(hi, lo);
        c = f_sub(f_sub(hi, x), lo);
    } else if (hx < 0x33000000u) {
        return x;
    }
    let hfx = f_mul(0.5, x);
    let hxs = f_mul(x, hfx);
    var r = f_add(bitcast<f32>(0x3ad00d01u) /* Q2 */, f_mul(hxs, f_add(-bitcast<f32>(0x38a670cdu),
        f_mul(hxs, f_add(bitcast<f32>(0x36867e54u), f_mul(hxs, bitcast<f32>(0xb457edbbu)))))));
    r = f_add(1.0, f_mul(hxs, f_add(-bitcast<f32>(0x3d088889u), f_mul(hxs, r))));
    let t = f_sub(3.0, f_mul(r, hfx));
    var e = f_mul(hxs, f_div(f_sub(r, t), f_sub(6.0, f_mul(x, t))));
    if (k == 0) {
        return f_sub(x, f_sub(f_mul(x, e), hxs));
    }
    e = f_sub(f_mul(x, f_sub(e, c)), c);
    e = f_sub(e, hxs);
    if (k == -1) {
        return f_sub(f_mul(0.5, f_sub(x, e)), 0.5);
    }
    if (k == 1) {
        if (x < -0.25) {
            return f_mul(-2.0, f_sub(e, f_add(x, 0.5)));
        }
        return f_add(1.0, f_mul(2.0, f_sub(x, e)));
    }
    if (k <= -2 || k > 56) {
        let y = f_sub(1.0, f_sub(e, x));
        return f_sub(bitcast<f32>(bitcast<i32>(y) + (k << 23u)), 1.0);
    }
    var y: f32;
    if (k < 23) {
        let t1 = bitcast<f32>(0x3f800000u - (0x1000000u >> u32(k)));
        y = f_sub(t1, f_sub(e, x));
    } else {
        let t2 = bitcast<f32>(u32(0x7f - k) << 23u);
        y = f_add(f_sub(x, f_add(e, t2)), 1.0);
    }
    return bitcast<f32>(bitcast<i32>(y) + (k << 23u));
}

// The C library's tanhf (fdlibm's float version, as glibc builds it), so GeGLU rounds as on
// the CPU backend.
fn tanh_f32(x: f32) -> f32 {
    let jx = bitcast<u32>(x);
    let ix = jx & 0x7fffffffu;
    if (ix >= 0x7f800000u) {
        return select(f_sub(f_div(1.0, x), 1.0), f_add(f_div(1.0, x), 1.0), (jx & 0x80000000u) == 0u);
    }
    var z: f32;
    if (ix < 0x41b00000u) {
        if (ix == 0u) {
            return x;
        }
        if (ix < 0x24000000u) {
            return f_mul(x, f_add(1.0, x));
        }
        if (ix >= 0x3f800000u) {
            let t = expm1_f32(f_mul(2.0, abs(x)));
            z = f_sub(1.0, f_div(2.0, f_add(t, 2.0)));
        } else {
            let t = expm1_f32(f_mul(-2.0, abs(x)));
            z = f_div(-t, f_add(t, 2.0));
        }
    } else {
        z = 1.0;
    }
    return select(-z, z, (jx & 0x80000000u) == 0u);
}
