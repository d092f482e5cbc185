//! The exact numerics' elementwise ops give the CPU backend's bits: SwiGLU (exp) and GeGLU
//! (tanh, which the CPU takes from the C library), over inputs across their whole useful range.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use tessera_backend::{Backend, DType, GraphBuilder, OwnedBuffer, TensorRef};
use tessera_backend_cpu::CpuBackend;
use tessera_backend_wgpu::Numerics;

mod common;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `gated(gate, up)` on `backend`, as f32 bits.
fn run(backend: &Arc<dyn Backend>, swiglu: bool, gate: &[f32], up: &[f32]) -> Vec<u32> {
    let n = gate.len();
    let (g, u) = (
        OwnedBuffer::with_data(backend, &f32_bytes(gate)).unwrap(),
        OwnedBuffer::with_data(backend, &f32_bytes(up)).unwrap(),
    );
    let out = OwnedBuffer::alloc(backend, n * 4).unwrap();
    let mut b = GraphBuilder::new();
    let gl = b.leaf(TensorRef { buffer: g.id(), offset: 0 }, DType::F32, [1, n]).unwrap();
    let ul = b.leaf(TensorRef { buffer: u.id(), offset: 0 }, DType::F32, [1, n]).unwrap();
    let ol = b.leaf(TensorRef { buffer: out.id(), offset: 0 }, DType::F32, [1, n]).unwrap();
    let y = if swiglu { b.swiglu(gl, ul).unwrap() } else { b.geglu(gl, ul).unwrap() };
    b.store(y, ol, 0).unwrap();
    backend.execute(&b.finish()).unwrap();
    out.download_f32(0, n).unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn gated_units_match_the_cpu_bit_for_bit() {
    let Some(gpu) = common::adapter(Numerics::Exact) else { return };
    if !gpu.info().name.contains("exact") {
        return eprintln!("skipped: the adapter has no f64, so its numerics are not the CPU's");
    }
    let gpu: Arc<dyn Backend> = Arc::new(gpu);
    let cpu: Arc<dyn Backend> = Arc::new(CpuBackend::new(2));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = 1 << 18;
    // Magnitudes from 1e-9 to 1e2, both signs: every branch of exp and tanh.
    let gate: Vec<f32> =
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0).signum() * 10f32.powf(rng.gen_range(-9.0..2.0))).collect();
    let up: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
    for swiglu in [true, false] {
        let (a, b) = (run(&cpu, swiglu, &gate, &up), run(&gpu, swiglu, &gate, &up));
        let differ: Vec<usize> = (0..n).filter(|&i| a[i] != b[i]).collect();
        let name = if swiglu { "swiglu" } else { "geglu" };
        eprintln!("{name}: {} of {n} differ", differ.len());
        if let Some(&i) = differ.first() {
            panic!("{name}({}, {}): cpu {} wgpu {}", gate[i], up[i], f32::from_bits(a[i]), f32::from_bits(b[i]));
        }
    }
}
