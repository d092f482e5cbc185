//! compressed-tensors checkpoints made by compressed-tensors itself
//! (scripts/fixtures/hf/make_compressed_tensors.py): every quantized Linear, repacked by the
//! reader and dequantized by `tessera_quant` (times its `.scale`), equals the weight
//! compressed-tensors' own decompressor computes from the same files.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors};
use tessera_core::DType;
use tessera_formats::{ModelSource, Origin, TensorEntry};

fn fixture(name: &str) -> PathBuf {
    tessera_testkit::fixtures_dir().join("hf/compressed").join(name)
}

/// The GGUF name of a Hugging Face Llama Linear module.
fn gguf_name(module: &str) -> String {
    let rest = module.strip_prefix("model.layers.").expect("a layer module");
    let (layer, proj) = rest.split_once('.').expect("layer.proj");
    let stem = match proj {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("unexpected module {other}"),
    };
    format!("blk.{layer}.{stem}")
}

/// The weight as Tessera computes matmuls with it: dequantized blocks times the `.scale` of each
/// row (or of the tensor).
fn effective_weight<'a>(src: &'a ModelSource, stem: &str) -> (Vec<f32>, &'a TensorEntry) {
    let entry = src.tensor(&format!("{stem}.weight")).unwrap_or_else(|| panic!("{stem}.weight is missing"));
    let mut w = tessera_quant::dequantize_to_vec(entry.dtype, entry.bytes.as_ref()).expect("dequantize");
    if let Some(scale) = src.tensor(&format!("{stem}.scale")) {
        assert_eq!(scale.dtype, DType::F32, "{stem}.scale");
        let s = tessera_quant::dequantize_to_vec(DType::F32, scale.bytes.as_ref()).unwrap();
        let cols = entry.shape.dims()[1];
        for (i, v) in w.iter_mut().enumerate() {
            *v *= if s.len() == 1 { s[0] } else { s[i / cols] };
        }
    }
    (w, entry)
}

/// The reference weights, as f32, with the dtype compressed-tensors returned them in.
fn reference(dir: &Path) -> Vec<(String, Dtype, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("reference.safetensors parses");
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let b = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => b.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
                Dtype::F16 => b.chunks_exact(2).map(|x| f16::from_le_bytes([x[0], x[1]]).to_f32()).collect(),
                Dtype::BF16 => b.chunks_exact(2).map(|x| bf16::from_le_bytes([x[0], x[1]]).to_f32()).collect(),
                other => panic!("{name}: unexpected reference dtype {other:?}"),
            };
            (name, view.dtype(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `v` rounded to `dtype` as torch rounds an f32 (to nearest, ties to even).
fn round_to(v: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::BF16 => bf16::from_f32(v).to_f32(),
        Dtype::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Checks every quantized module of fixture `name`: its type, and its values against the
/// reference, exactly after rounding to the reference's dtype, or within `ulps` units in the
/// last place of that dtype.
fn check(name: &str, want: &[(&str, DType, bool)], ulps: f32) {
    let dir = fixture(name);
    let src = ModelSource::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(src.origin, Origin::HuggingFace);
    let refs = reference(&dir);
    assert!(!refs.is_empty(), "{name}: no reference weights");
    for (hf, dtype, values) in &refs {
        let stem = gguf_name(hf.strip_suffix(".weight").expect("a weight"));
        let (ours, entry) = effective_weight(&src, &stem);
        assert_eq!(ours.len(), values.len(), "{name}: {stem}");
        let mut worst = 0f32;
        for (i, (&o, &r)) in ours.iter().zip(values).enumerate() {
            let rounded = round_to(o, *dtype);
            if ulps == 0.0 {
                assert!(rounded == r, "{name}: {stem} value {i}: {o} (rounds to {rounded}) vs {r}");
            } else {
                let ulp = (round_to(r.abs() * (1.0 + 1.0 / 128.0), *dtype) - r.abs()).max(f32::MIN_POSITIVE);
                worst = worst.max((rounded - r).abs() / ulp);
            }
        }
        assert!(worst <= ulps, "{name}: {stem} differs by {worst} ulps");
        let kind =
            want.iter().find(|(suffix, _, _)| stem.ends_with(suffix)).unwrap_or_else(|| panic!("{stem} unexpected"));
        assert_eq!(entry.dtype, kind.1, "{name}: {stem}");
        assert_eq!(entry.bytes.is_mapped(), kind.2, "{name}: {stem} zero copy");
    }
    // What compressed-tensors leaves unquantized loads as it is stored.
    for plain in ["token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_norm.weight"] {
        let t = src.tensor(plain).unwrap_or_else(|| panic!("{name}: {plain} is missing"));
        assert!(matches!(t.dtype, DType::BF16 | DType::F16), "{name}: {plain} is {}", t.dtype);
        assert!(t.bytes.is_mapped());
    }
}

#[test]
fn int8_w8a8_is_i8_with_per_channel_scales() {
    check("w8a8_int", &[("", DType::I8, true)], 0.0);
    let src = ModelSource::open(&fixture("w8a8_int")).unwrap();
    let scale = src.tensor("blk.0.ffn_down.scale").expect("scale");
    assert_eq!(scale.shape.dims(), &[64]);
}

#[test]
fn fp8_is_f8_e4m3_with_per_channel_scales() {
    check("fp8_dynamic", &[("", DType::F8_E4M3, true)], 0.0);
}

#[test]
fn int4_groups_are_exact_q4_0() {
    check("w4a16", &[("", DType::Q4_0, false)], 0.0);
    let src = ModelSource::open(&fixture("w4a16")).unwrap();
    assert!(src.tensor("blk.0.attn_q.scale").is_none());
}

#[test]
fn nvfp4_is_ggml_nvfp4_with_the_inverse_global_scale() {
    // compressed-tensors divides each FP8 scale by the global scale before multiplying; Tessera
    // multiplies by the global scale's inverse afterwards: equal within float rounding.
    check("nvfp4", &[("", DType::NVFP4, false)], 1.0);
    let src = ModelSource::open(&fixture("nvfp4")).unwrap();
    assert_eq!(src.tensor("blk.1.ffn_up.scale").expect("scale").shape.dims(), &[1]);
}

#[test]
fn mxfp4_is_ggml_mxfp4() {
    check("mxfp4", &[("", DType::MXFP4, false)], 0.0);
}

#[test]
fn mixed_precision_groups_follow_their_targets_and_ignore_list() {
    let want = [
        ("attn_q", DType::F8_E4M3, true),
        ("attn_k", DType::F8_E4M3, true),
        ("attn_v", DType::F8_E4M3, true),
        ("attn_output", DType::Q8_0, false),
        ("ffn_gate", DType::Q4_1, false),
        ("ffn_up", DType::Q4_1, false),
        ("ffn_down", DType::Q4_1, false),
    ];
    check("mixed", &want, 0.0);
    let src = ModelSource::open(&fixture("mixed")).unwrap();
    assert_eq!(src.tensor("blk.0.attn_k.scale").expect("per-tensor scale").shape.dims(), &[1]);
    assert_eq!(src.tensor("blk.1.ffn_down.weight").expect("ignored module").dtype, DType::F16);
    assert!(src.tensor("blk.1.ffn_down.scale").is_none());
    // The static activation scales of the FP8 group are not weights.
    assert!(src.tensors.iter().all(|t| !t.name.contains("input")), "{:?}", src.tensors);
}
