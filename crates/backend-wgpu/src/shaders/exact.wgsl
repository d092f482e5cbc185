// Arithmetic as the CPU backend rounds it, on adapters with f64 in shaders: a fused
// multiply-add rounded once (x86's vfmadd; WGSL's fma may round the product first), a product
// rounded to f32 on its own (so no compiler fuses it into a following add), and exp correctly
// rounded (as glibc's expf is, to within 0.502 ULP).

fn fma_exact(a: f32, b: f32, c: f32) -> f32 {
    // The product of two f32 (48 bits) is exact in f64; the sum rounds in f64, then to f32,
    // which differs from one rounding only when the f64 sum lands exactly on an f32 midpoint.
    return f32(f64(a) * f64(b) + f64(c));
}

fn mul_round(a: f32, b: f32) -> f32 {
    return f32(f64(a) * f64(b));
}

fn pow2_f64(k: i32) -> f64 {
    // 2^k for |k| <= 126 as an exact f32.
    return f64(bitcast<f32>(u32(k + 127) << 23u));
}

fn exp_f32(x: f32) -> f32 {
    if (x != x) {
        return x;
    }
    if (x > 89.0) {
        return bitcast<f32>(0x7f800000u);
    }
    if (x < -104.0) {
        return 0.0;
    }
    return f32(exp_f64(f64(x)));
}

// e^x for |x| <= 110, to about 2^-52 relative.
fn exp_f64(xd: f64) -> f64 {
    let k = round(xd * 1.4426950408889634);
    // ln 2 split so that k · LN2_HI is exact.
    let r = (xd - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    var p = f64(1.0 / 6227020800.0);
    p = p * r + f64(1.0 / 479001600.0);
    p = p * r + f64(1.0 / 39916800.0);
    p = p * r + f64(1.0 / 3628800.0);
    p = p * r + f64(1.0 / 362880.0);
    p = p * r + f64(1.0 / 40320.0);
    p = p * r + f64(1.0 / 5040.0);
    p = p * r + f64(1.0 / 720.0);
    p = p * r + f64(1.0 / 120.0);
    p = p * r + f64(1.0 / 24.0);
    p = p * r + f64(1.0 / 6.0);
    p = p * r + f64(0.5);
    p = p * r + f64(1.0);
    p = p * r + f64(1.0);
    let ki = i32(k);
    let k1 = ki / 2;
    return p * pow2_f64(k1) * pow2_f64(ki - k1);
}

// tanh rounded to f32 from an f64 evaluation (glibc's tanhf is within an ULP).
fn tanh_f32(y: f32) -> f32 {
    let a = abs(f64(y));
    var t = f64(1.0);
    if (a < 20.0) {
        let e = exp_f64(-2.0 * a);
        t = (1.0 - e) / (1.0 + e);
    }
    return f32(select(t, -t, y < 0.0));
}
