//! Calibration capture hands every matmul weight the rows that really enter it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_runtime::LoadedModel;
use tessera_testkit::{test_model, SMOLLM2};

fn captured(model: &LoadedModel, tokens: &[u32], n_batch: usize) -> BTreeMap<String, Vec<f32>> {
    let mut all: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    model
        .capture_linear_inputs(tokens, n_batch, &mut |name, rows, in_dim| {
            assert_eq!(rows.len() % in_dim, 0, "{name}");
            all.entry(name.to_string()).or_default().extend_from_slice(rows);
        })
        .expect("capture");
    all
}

fn f32s(model: &LoadedModel, name: &str) -> Vec<f32> {
    let entry = model.source.tensor(name).expect(name);
    tessera_quant::dequantize_to_vec(entry.dtype, entry.bytes.as_ref()).expect("dequantize")
}

#[test]
fn smollm2_capture_matches_a_hand_computed_first_layer_input() {
    let Some(path) = test_model(SMOLLM2) else {
        eprintln!("skipping: {SMOLLM2} not found (scripts/pull-test-models.sh)");
        return;
    };
    let model = LoadedModel::load(&path, Arc::new(CpuBackend::new(2)), None).expect("loads");
    let cfg = model.config().clone();
    let tokens = model.tokenizer.encode("The quick brown fox jumps over the lazy dog, twice.", true, false);
    let n = tokens.len();
    let all = captured(&model, &tokens, 5);

    // Every projection of every layer, and the output head (tied to the embeddings), see n rows.
    let per_layer = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    for i in 0..cfg.n_layers {
        for p in per_layer {
            let name = format!("blk.{i}.{p}.weight");
            let width = if p == "ffn_down" { cfg.n_ff } else { cfg.n_embd };
            assert_eq!(all.get(&name).map(Vec::len), Some(n * width), "{name}");
        }
    }
    assert_eq!(all["token_embd.weight"].len(), n * cfg.n_embd);

    // Layer 0's Q, K and V read the normed embeddings: compute them on the host.
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);
    let table = f32s(&model, "token_embd.weight");
    let norm = f32s(&model, "blk.0.attn_norm.weight");
    let mut expected = Vec::with_capacity(n * e);
    for &t in &tokens {
        let row = &table[t as usize * e..(t as usize + 1) * e];
        let ms = row.iter().map(|v| v * v).sum::<f32>() / e as f32;
        let r = 1.0 / (ms + eps).sqrt();
        expected.extend(row.iter().zip(&norm).map(|(v, w)| v * r * w));
    }
    for p in ["attn_q", "attn_k", "attn_v"] {
        let got = &all[&format!("blk.0.{p}.weight")];
        let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{p}: largest difference {worst}");
    }

    // Steps of different sizes see the same activations.
    let whole = captured(&model, &tokens, n);
    for (name, rows) in &all {
        let worst = rows.iter().zip(&whole[name]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "{name}: largest difference {worst} between step sizes");
    }
}

#[test]
fn capture_rejects_bad_input() {
    let Some(path) = test_model(SMOLLM2) else { return };
    let model = LoadedModel::load(&path, Arc::new(CpuBackend::new(1)), None).expect("loads");
    let mut never = |_: &str, _: &[f32], _: usize| panic!("nothing to visit");
    assert!(model.capture_linear_inputs(&[], 8, &mut never).is_err());
    let err = model.capture_linear_inputs(&[1, 999_999], 8, &mut never).unwrap_err();
    assert!(err.to_string().contains("999999"), "{err}");
}
