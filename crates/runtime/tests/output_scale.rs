//! A weight's companion `.scale` tensor (per tensor or per output channel, as INT8 and FP8
//! checkpoints store it) multiplies the matmul output exactly as scaling the weight would.

use std::path::Path;
use std::sync::Arc;

use tessera_backend::{DType, Shape};
use tessera_backend_cpu::CpuBackend;
use tessera_formats::gguf::GgufWriter;
use tessera_formats::ModelSource;
use tessera_runtime::{ContextOptions, LoadedModel, Logits};
use tessera_testkit::{test_model, SMOLLM2};

const TARGET: &str = "blk.0.attn_v.weight";

/// Writes `source` to `path` with `TARGET` replaced by f32 `values` and `extra` tensors added.
fn write_variant(source: &ModelSource, path: &Path, values: &[f32], extra: &[(&str, Vec<f32>)]) {
    let mut w = GgufWriter::new();
    w.add_all_metadata(&source.metadata).expect("metadata");
    for t in &source.tensors {
        if t.name == TARGET {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(t.name.clone(), DType::F32, t.shape.clone(), bytes).expect("target");
        } else {
            w.add_tensor(t.name.clone(), t.dtype, t.shape.clone(), t.bytes.as_ref()).expect("tensor");
        }
    }
    for (name, v) in extra {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(name.to_string(), DType::F32, Shape::from([v.len()]), bytes).expect("scale");
    }
    w.write_file(path).expect("write");
}

fn logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let model = LoadedModel::load(path, Arc::new(CpuBackend::new(2)), None).expect("loads");
    let mut ctx = model.new_context(ContextOptions { n_ctx: 64, ..ContextOptions::default() }).expect("context");
    ctx.eval(tokens, Logits::All).expect("eval")
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 2e-3, "{what}: largest logit difference {worst}");
}

#[test]
fn scale_tensors_multiply_the_output() {
    let Some(path) = test_model(SMOLLM2) else { return };
    let source = ModelSource::open(&path).expect("opens");
    let entry = source.tensor(TARGET).expect("target").clone();
    let w = tessera_quant::dequantize_to_vec(entry.dtype, entry.bytes.as_ref()).expect("dequantize");
    let (rows, cols) = (entry.shape.dims()[0], entry.shape.dims()[1]);
    let channel: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 7) as f32 * 0.25).collect();
    let tokens = [1u32, 504, 3458, 4701, 314, 253, 1690];
    let dir = tempfile::tempdir().expect("tempdir");
    let scale_name = TARGET.replace(".weight", ".scale");

    // Per tensor: w·3 against (w, scale 3).
    let tripled: Vec<f32> = w.iter().map(|v| v * 3.0).collect();
    write_variant(&source, &dir.path().join("a.gguf"), &tripled, &[]);
    write_variant(&source, &dir.path().join("b.gguf"), &w, &[(&scale_name, vec![3.0])]);
    assert_close(
        &logits(&dir.path().join("a.gguf"), &tokens),
        &logits(&dir.path().join("b.gguf"), &tokens),
        "per tensor",
    );

    // Per channel: row r of w times s[r] against (w, scale s).
    let scaled: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * channel[i / cols]).collect();
    write_variant(&source, &dir.path().join("c.gguf"), &scaled, &[]);
    write_variant(&source, &dir.path().join("d.gguf"), &w, &[(&scale_name, channel.clone())]);
    let (c, d) = (logits(&dir.path().join("c.gguf"), &tokens), logits(&dir.path().join("d.gguf"), &tokens));
    assert_close(&c, &d, "per channel");
    // The scale matters: without it the model differs.
    let plain = logits(&dir.path().join("a.gguf"), &tokens);
    assert!(plain.iter().zip(&c).any(|(x, y)| (x - y).abs() > 0.1), "scales had no effect");

    // A scale of the wrong length is refused by name.
    write_variant(&source, &dir.path().join("e.gguf"), &w, &[(&scale_name, vec![1.0; rows - 1])]);
    let err = LoadedModel::load(&dir.path().join("e.gguf"), Arc::new(CpuBackend::new(1)), None).err().expect("refused");
    assert!(err.to_string().contains(&scale_name), "{err}");
}
