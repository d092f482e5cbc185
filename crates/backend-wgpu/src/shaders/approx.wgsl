// The arithmetic of exact.wgsl for adapters without f64: within an ULP or two of the CPU's.

fn fma_exact(a: f32, b: f32, c: f32) -> f32 {
    return fma(a, b, c);
}

fn exp_f32(x: f32) -> f32 {
    return exp(x);
}

fn tanh_f32(v: f32) -> f32 {
    // 1 - 2 / (e^2v + 1) saturates instead of giving inf / inf.
    return 1.0 - 2.0 / (exp(2.0 * v) + 1.0);
}

fn f_add(a: f32, b: f32) -> f32 {
    return a + b;
}

fn f_sub(a: f32, b: f32) -> f32 {
    return a - b;
}

fn f_mul(a: f32, b: f32) -> f32 {
    return a * b;
}

fn f_div(a: f32, b: f32) -> f32 {
    return a / b;
}
