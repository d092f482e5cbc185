//! Rough MatMul timings through the public `Backend` API: a decode-step GEMV and a prompt-sized
//! GEMM, per weight type, with the detected kernels against the scalar ones measured in the
//! same run.
//!
//! `cargo run --release -p tessera-backend-cpu --example matmul_speed [threads] [m] [k] [rows] [type]`

use std::sync::Arc;
use std::time::Instant;

use tessera_backend::{Backend, DType, GraphBuilder, OwnedBuffer, TensorRef};
use tessera_backend_cpu::{CpuBackend, Isa};

fn weight_bytes(dtype: DType, m: usize, k: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1).collect();
    tessera_quant::quantize_to_vec(dtype, &values).expect("quantizable type")
}

/// Seconds per `execute` of `y = x · wᵀ` with `rows` activation rows: the fastest of many runs,
/// since the machine may be shared.
fn time(backend: Arc<dyn Backend>, dtype: DType, m: usize, k: usize, rows: usize) -> f64 {
    let w = OwnedBuffer::with_data(&backend, &weight_bytes(dtype, m, k)).expect("alloc");
    let xs: Vec<u8> = (0..rows * k).flat_map(|i| ((i % 13) as f32 * 0.1 - 0.6).to_le_bytes()).collect();
    let x = OwnedBuffer::with_data(&backend, &xs).expect("alloc");
    let y = OwnedBuffer::alloc(&backend, rows * m * 4).expect("alloc");
    let mut g = GraphBuilder::new();
    let at = |b: &OwnedBuffer| TensorRef { buffer: b.id(), offset: 0 };
    let xn = g.leaf(at(&x), DType::F32, [rows, k]).expect("leaf");
    let wn = g.leaf(at(&w), dtype, [m, k]).expect("leaf");
    let yn = g.leaf(at(&y), DType::F32, [rows, m]).expect("leaf");
    let p = g.mat_mul(xn, wn).expect("mat_mul");
    g.store(p, yn, 0).expect("store");
    let graph = g.finish();
    backend.execute(&graph).expect("warm-up");
    let iters = (4e8 / (rows * m * k) as f64).clamp(5.0, 4000.0) as usize;
    let mut best = f64::INFINITY;
    for _ in 0..iters {
        let start = Instant::now();
        backend.execute(&graph).expect("execute");
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let only = std::env::args().skip(1).find_map(|a| DType::from_name(&a).ok());
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let threads = args.first().copied().unwrap_or(1);
    let (m, k, prompt) =
        (args.get(1).copied().unwrap_or(576), args.get(2).copied().unwrap_or(1536), args.get(3).copied().unwrap_or(64));
    let fast: Arc<dyn Backend> = Arc::new(CpuBackend::new(threads));
    let scalar: Arc<dyn Backend> = Arc::new(CpuBackend::with_isa(threads, Isa::Scalar).expect("scalar"));
    println!("{} | weight [{m}, {k}], {threads} thread(s)", fast.info().name);
    println!("{:<6} {:>6} {:>12} {:>10} {:>12} {:>9}", "type", "rows", "time", "GB/s", "scalar", "speedup");
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::MXFP4,
        DType::NVFP4,
        DType::I8,
        DType::F8_E4M3,
        DType::F16,
        DType::BF16,
        DType::F32,
    ] {
        if k % dtype.block_len() != 0 || only.is_some_and(|o| o != dtype) {
            continue;
        }
        for rows in [1, prompt] {
            let t = time(fast.clone(), dtype, m, k, rows);
            let ts = time(scalar.clone(), dtype, m, k, rows);
            let gbs = dtype.bytes_for(m * k).unwrap_or(0) as f64 / t / 1e9;
            println!(
                "{:<6} {rows:>6} {:>9.1} us {gbs:>10.1} {:>9.1} us {:>8.1}x",
                dtype.name(),
                t * 1e6,
                ts * 1e6,
                ts / t
            );
        }
    }
}
