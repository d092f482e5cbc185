//! Graphs submitted from several threads at once each get their own results: the backend runs
//! one graph at a time (graphs share its parameter and error buffers).

use std::sync::Arc;

use tessera_backend::{Backend, DType, GraphBuilder, OwnedBuffer, TensorRef};
use tessera_backend_wgpu::Numerics;

mod common;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn concurrent_graphs_do_not_mix() {
    let Some(backend) = common::adapter(Numerics::Exact) else { return };
    let backend: Arc<dyn Backend> = Arc::new(backend);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let backend = &backend;
            s.spawn(move || {
                // Shapes differ by thread, so a graph run with another's parameters goes wrong.
                let (m, k) = (16 + 24 * t, 32 + 32 * t);
                let w: Vec<f32> = (0..m * k).map(|i| ((i * 7919 + t) % 97) as f32 / 97.0 - 0.5).collect();
                let weights = OwnedBuffer::with_data(backend, &f32_bytes(&w)).unwrap();
                let x: Vec<f32> = (0..k).map(|i| (t + 1) as f32 * (i as f32 / k as f32 - 0.3)).collect();
                let input = OwnedBuffer::with_data(backend, &f32_bytes(&x)).unwrap();
                let output = OwnedBuffer::alloc(backend, m * 4).unwrap();
                for _ in 0..20 {
                    let mut g = GraphBuilder::new();
                    let xl = g.leaf(TensorRef { buffer: input.id(), offset: 0 }, DType::F32, [1, k]).unwrap();
                    let wl = g.leaf(TensorRef { buffer: weights.id(), offset: 0 }, DType::F32, [m, k]).unwrap();
                    let ol = g.leaf(TensorRef { buffer: output.id(), offset: 0 }, DType::F32, [1, m]).unwrap();
                    let y = g.mat_mul(xl, wl).unwrap();
                    let y = g.scale(y, 2.0).unwrap();
                    g.store(y, ol, 0).unwrap();
                    backend.execute(&g.finish()).unwrap();
                    let got = output.download_f32(0, m).unwrap();
                    for (r, g) in got.iter().enumerate() {
                        let want: f32 = 2.0 * (0..k).map(|i| x[i] * w[r * k + i]).sum::<f32>();
                        assert!((g - want).abs() < 1e-4 * (1.0 + want.abs()), "thread {t} row {r}: {g} vs {want}");
                    }
                }
            });
        }
    });
}
