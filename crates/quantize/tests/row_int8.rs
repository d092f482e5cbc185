//! GPTQ int8 weights with one scale per row (`gptq_int8_rows`, what QDQ ONNX exports store), on
//! the tiny Llama fixture: every layer weight gets codes of its shape, and over the calibration
//! rows they move the layers' outputs less than rounding to nearest does.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_backend_cpu::CpuBackend;
use tessera_quantize::{gptq_int8_rows, NoProgress, DEFAULT_CALIBRATION};
use tessera_runtime::LoadedModel;

/// `‖(W - Ŵ) Xᵀ‖²` summed over rows of `x` (row-major `[n, cols]`).
fn output_error(w: &[f32], w_hat: &[f32], cols: usize, x: &[f32]) -> f64 {
    let mut total = 0f64;
    for (row, row_hat) in w.chunks_exact(cols).zip(w_hat.chunks_exact(cols)) {
        for input in x.chunks_exact(cols) {
            let d: f64 = row.iter().zip(row_hat).zip(input).map(|((a, b), x)| ((a - b) * x) as f64).sum();
            total += d * d;
        }
    }
    total
}

#[test]
fn gptq_int8_rows_cover_every_layer_weight_and_beat_rounding_on_the_outputs() {
    let source = tessera_testkit::fixtures_dir().join("hf/llama");
    let model = LoadedModel::load(&source, Arc::new(CpuBackend::new(2)), None).unwrap();
    let codes = gptq_int8_rows(&model, DEFAULT_CALIBRATION, &mut NoProgress).unwrap();

    const MATMULS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    let layer_weights: Vec<&str> = model
        .weight_names()
        .into_iter()
        .filter(|n| n.starts_with("blk.") && MATMULS.iter().any(|m| n.ends_with(&format!(".{m}.weight"))))
        .collect();
    assert_eq!(layer_weights.len(), 7 * model.config().n_layers, "{layer_weights:?}");
    for name in &layer_weights {
        assert!(codes.contains_key(*name), "{name} has no codes");
    }
    assert!(!codes.contains_key("token_embd.weight") && !codes.contains_key("output.weight"));

    // The rows each weight reads over the calibration text.
    let mut inputs: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let tokens = model.tokenizer.encode(DEFAULT_CALIBRATION, true, false);
    model
        .capture_linear_inputs(&tokens[..tokens.len().min(512)], 512, &mut |name, rows, _| {
            inputs.entry(name.to_string()).or_default().extend_from_slice(rows)
        })
        .unwrap();

    let (mut gptq_error, mut rtn_error) = (0f64, 0f64);
    for (name, c) in &codes {
        let (dtype, shape, bytes) = model.weight_data(name).unwrap().unwrap();
        let w = tessera_quant::dequantize_to_vec(dtype, &bytes).unwrap();
        let (rows, cols) = (shape.rows(), shape.cols());
        assert_eq!((c.codes.len(), c.scales.len()), (rows * cols, rows), "{name}");
        // Rounding to nearest under the same scales' rule (row maximum / 127.5).
        let rtn: Vec<f32> = w
            .chunks_exact(cols)
            .flat_map(|row| {
                let s = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.5;
                row.iter().map(move |v| if s > 0.0 { (v / s).round().clamp(-128.0, 127.0) * s } else { 0.0 })
            })
            .collect();
        let x = &inputs[name.as_str()];
        gptq_error += output_error(&w, &c.dequantize(), cols, x);
        rtn_error += output_error(&w, &rtn, cols, x);
    }
    assert!(gptq_error < 0.9 * rtn_error, "GPTQ {gptq_error} vs rounding {rtn_error}");
}
