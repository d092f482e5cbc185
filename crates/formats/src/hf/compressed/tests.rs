//! Whole-module conversions from hand-made compressed-tensors checkpoints: what each layout
//! becomes, and the errors for what Tessera refuses. (Checkpoints written by compressed-tensors
//! itself are checked in tests/compressed_tensors.rs.)

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value as Json};
use tessera_core::DType;

use crate::{FormatError, ModelSource};

/// A tensor: Hugging Face name, dtype, shape, bytes.
type Spec = (String, Dtype, Vec<usize>, Vec<u8>);

fn spec(name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Spec {
    (name.to_string(), dtype, shape.to_vec(), bytes)
}

fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

const Q: &str = "model.layers.0.self_attn.q_proj";

/// A one-layer Llama (hidden 64) whose q_proj carries `tensors`, under `groups` and `extra`
/// quantization_config keys.
fn open(groups: Json, extra: Json, tensors: Vec<Spec>) -> Result<ModelSource, FormatError> {
    let mut qc = json!({"quant_method": "compressed-tensors", "config_groups": groups, "ignore": ["lm_head"],
                        "quantization_status": "compressed"});
    if let (Some(qc), Some(extra)) = (qc.as_object_mut(), extra.as_object()) {
        qc.extend(extra.clone());
    }
    let config = json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1,
                        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 8,
                        "quantization_config": qc});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut all = tensors;
    all.push(spec("model.norm.weight", Dtype::F32, &[64], vec![0; 256]));
    all.push(spec("lm_head.weight", Dtype::BF16, &[8, 64], vec![0; 1024]));
    let views: Vec<(String, TensorView<'_>)> =
        all.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(dir.path().join("model.safetensors"), safetensors::serialize(views, &None).unwrap()).unwrap();
    ModelSource::open(dir.path())
}

fn group(weights: Json, format: &str) -> Json {
    json!({"g": {"targets": ["Linear"], "weights": weights, "format": format}})
}

/// `rows` x `cols` int4 values packed as compressed-tensors packs them, all equal to `v`.
fn packed4(rows: usize, cols: usize, v: i8) -> Vec<u8> {
    let nibble = (v + 8) as u32;
    let word = (0..8).fold(0u32, |w, k| w | (nibble << (4 * k)));
    le(&vec![word; rows * cols / 8], u32::to_le_bytes)
}

fn err(result: Result<ModelSource, FormatError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn values(src: &ModelSource, name: &str) -> Vec<f32> {
    let t = src.tensor(name).unwrap_or_else(|| panic!("{name} is missing"));
    tessera_quant::dequantize_to_vec(t.dtype, t.bytes.as_ref()).unwrap()
}

#[test]
fn per_tensor_int8_keeps_its_bytes_and_gets_an_f32_scale() {
    let w8 = json!({"num_bits": 8, "type": "int", "strategy": "tensor"});
    let weight: Vec<u8> = (0..64 * 64).map(|i| (i % 251) as u8).collect();
    let tensors = vec![
        spec(&format!("{Q}.weight"), Dtype::I8, &[64, 64], weight.clone()),
        spec(
            &format!("{Q}.weight_scale"),
            Dtype::BF16,
            &[],
            le(&[half::bf16::from_f32(0.25)], half::bf16::to_le_bytes),
        ),
        spec(&format!("{Q}.input_scale"), Dtype::F32, &[1], le(&[1.0f32], f32::to_le_bytes)),
    ];
    let src = open(group(w8, "int-quantized"), json!({}), tensors).unwrap();
    let w = src.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((w.dtype, w.shape.dims(), w.bytes.as_ref()), (DType::I8, &[64, 64][..], &weight[..]));
    assert!(w.bytes.is_mapped());
    let s = src.tensor("blk.0.attn_q.scale").unwrap();
    assert_eq!((s.dtype, s.shape.dims()), (DType::F32, &[1][..]));
    assert_eq!(values(&src, "blk.0.attn_q.scale"), [0.25]);
    assert!(!s.bytes.is_mapped());
    // Modules no group quantizes load as stored.
    assert_eq!(src.tensor("output.weight").unwrap().dtype, DType::BF16);
}

#[test]
fn channel_int4_with_f32_scales_becomes_q4_0() {
    let w4 = json!({"num_bits": 4, "type": "int", "strategy": "channel"});
    let scales: Vec<f32> = (0..64).map(|r| (r + 1) as f32 / 64.0).collect();
    let tensors = vec![
        spec(&format!("{Q}.weight_packed"), Dtype::I32, &[64, 8], packed4(64, 64, -3)),
        spec(&format!("{Q}.weight_scale"), Dtype::F32, &[64, 1], le(&scales, f32::to_le_bytes)),
        spec(&format!("{Q}.weight_shape"), Dtype::I64, &[2], le(&[64i64, 64], i64::to_le_bytes)),
    ];
    let src = open(group(w4, "pack-quantized"), json!({}), tensors).unwrap();
    assert_eq!(src.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_0);
    let got = values(&src, "blk.0.attn_q.weight");
    assert!(got.iter().enumerate().all(|(i, &v)| v == -3.0 * scales[i / 64]));
    assert!(src.tensor("blk.0.attn_q.scale").is_none());
}

#[test]
fn preset_groups_and_inferred_formats_load() {
    let scales = vec![half::bf16::from_f32(0.5); 64];
    let tensors = vec![
        spec(&format!("{Q}.weight_packed"), Dtype::I32, &[64, 8], packed4(64, 64, 5)),
        spec(&format!("{Q}.weight_scale"), Dtype::BF16, &[64, 1], le(&scales, half::bf16::to_le_bytes)),
        spec(&format!("{Q}.weight_shape"), Dtype::I32, &[2], le(&[64i32, 64], i32::to_le_bytes)),
    ];
    // W4A16's groups of 128 do not fit 64 columns; a channel-wise group named like a preset
    // is a scheme object and is read as written.
    let e = err(open(json!({"W4A16": ["Linear"]}), json!({"format": "pack-quantized"}), tensors.clone()));
    assert!(e.contains("64 columns are not a whole number of groups of 128"), "{e}");
    let w4 = json!({"g": {"targets": ["Linear"], "weights": {"num_bits": 4, "group_size": -1}}});
    let src = open(w4, json!({"format": "mixed-precision"}), tensors).unwrap();
    assert!(values(&src, "blk.0.attn_q.weight").iter().all(|&v| v == 2.5));
}

#[test]
fn layout_errors_name_the_tensor_and_the_problem() {
    let w4 = json!({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32});
    let scale = |shape: &[usize]| {
        let n = shape.iter().product::<usize>();
        spec(
            &format!("{Q}.weight_scale"),
            Dtype::F16,
            shape,
            le(&vec![half::f16::from_f32(0.5); n], half::f16::to_le_bytes),
        )
    };
    let packed = spec(&format!("{Q}.weight_packed"), Dtype::I32, &[64, 8], packed4(64, 64, 1));
    let shape = |r: i64, c: i64| spec(&format!("{Q}.weight_shape"), Dtype::I64, &[2], le(&[r, c], i64::to_le_bytes));
    let cases: Vec<(Vec<Spec>, &str)> = vec![
        (
            vec![packed.clone(), scale(&[64, 4]), shape(64, 64)],
            "weight_scale: shape [64, 4] does not fit a [64, 64] weight; expected [64, 2]",
        ),
        (
            vec![packed.clone(), scale(&[64, 2]), shape(64, 128)],
            "weight_packed: shape [64, 8] does not hold a [64, 128] weight",
        ),
        (
            vec![packed.clone(), scale(&[64, 2]), shape(-1, 64)],
            "weight_shape: holds [-1, 64], not two positive dimensions",
        ),
        (vec![packed.clone(), scale(&[64, 2])], "weight_shape is missing"),
        (vec![packed.clone(), shape(64, 64)], "weight_scale is missing"),
        (
            vec![
                packed.clone(),
                scale(&[64, 2]),
                shape(64, 64),
                spec(&format!("{Q}.weight_g_idx"), Dtype::I32, &[64], vec![0; 256]),
            ],
            "activation ordering (g_idx) is not supported",
        ),
        (
            vec![
                spec(&format!("{Q}.weight_packed"), Dtype::F16, &[64, 16], vec![0; 2048]),
                scale(&[64, 2]),
                shape(64, 64),
            ],
            "weight_packed: is F16; this format stores [I32]",
        ),
    ];
    for (tensors, want) in cases {
        let e = err(open(group(w4.clone(), "pack-quantized"), json!({}), tensors));
        assert!(e.contains(want), "{e}\n(wanted {want:?})");
        assert!(e.contains(Q), "{e}");
    }
}

#[test]
fn unsupported_variants_are_refused_by_name() {
    let int8 = |extra: Json| {
        let mut w = json!({"num_bits": 8, "type": "int", "strategy": "channel"});
        w.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        w
    };
    let tensors = vec![
        spec(&format!("{Q}.weight"), Dtype::I8, &[64, 64], vec![1; 4096]),
        spec(&format!("{Q}.weight_scale"), Dtype::F32, &[64, 1], le(&[1.0f32; 64], f32::to_le_bytes)),
    ];
    let cases = [
        (
            group(int8(json!({"symmetric": false})), "int-quantized"),
            "asymmetric 8-bit integer weights are not supported",
        ),
        (group(int8(json!({"actorder": "group"})), "int-quantized"), "activation ordering"),
        (group(int8(json!({"dynamic": true})), "int-quantized"), "dynamically quantized weights"),
        (
            group(
                json!({"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}),
                "float-quantized",
            ),
            "block-wise weight scales",
        ),
        (group(int8(json!({"num_bits": 3})), "pack-quantized"), "3-bit packed weights are not supported"),
        (group(int8(json!({})), "marlin-24"), "format \"marlin-24\" is not supported"),
        (
            group(int8(json!({"strategy": "group", "group_size": 48})), "int-quantized"),
            "group size 48 is not a multiple of 32",
        ),
        (
            group(
                json!({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 16}),
                "mxfp4-pack-quantized",
            ),
            "MXFP4 weights need groups of 32",
        ),
    ];
    for (groups, want) in cases {
        let e = open(groups, json!({}), tensors.clone()).expect_err("an error");
        assert!(matches!(e, FormatError::Unsupported { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains(want) && e.contains(Q) && e.contains("config group \"g\""), "{e}\n(wanted {want:?})");
    }
}

#[test]
fn asymmetric_int4_needs_an_exact_q4_1_minimum() {
    let w4 = json!({"num_bits": 4, "type": "int", "strategy": "channel", "symmetric": false});
    let tensors = |scale: f32, zero: i8| {
        vec![
            spec(&format!("{Q}.weight_packed"), Dtype::I32, &[64, 8], packed4(64, 64, 2)),
            spec(
                &format!("{Q}.weight_scale"),
                Dtype::F16,
                &[64, 1],
                le(&[half::f16::from_f32(scale); 64], half::f16::to_le_bytes),
            ),
            spec(&format!("{Q}.weight_shape"), Dtype::I64, &[2], le(&[64i64, 64], i64::to_le_bytes)),
            // Packed along rows: 8 rows per int32 word, one column of groups.
            spec(&format!("{Q}.weight_zero_point"), Dtype::I32, &[8, 1], packed4(8, 8, zero)),
        ]
    };
    let src = open(group(w4.clone(), "pack-quantized"), json!({}), tensors(0.125, -3)).unwrap();
    assert_eq!(src.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::Q4_1);
    assert!(values(&src, "blk.0.attn_q.weight").iter().all(|&v| v == (2.0 + 3.0) * 0.125));
    let e = err(open(group(w4, "pack-quantized"), json!({}), tensors(0.1, 5)));
    assert!(e.contains("no exact Q4_1 form") && e.contains("weight_zero_point"), "{e}");
}

#[test]
fn nvfp4_needs_a_usable_global_scale_and_embeddings_no_scale() {
    let nvfp4 = json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16});
    let tensors = |global: f32| {
        vec![
            spec(&format!("{Q}.weight_packed"), Dtype::U8, &[64, 32], vec![0x21; 2048]),
            spec(&format!("{Q}.weight_scale"), Dtype::F8_E4M3, &[64, 4], vec![0x38; 256]),
            spec(&format!("{Q}.weight_global_scale"), Dtype::F32, &[1], le(&[global], f32::to_le_bytes)),
        ]
    };
    let src = open(group(nvfp4.clone(), "nvfp4-pack-quantized"), json!({}), tensors(4.0)).unwrap();
    assert_eq!(values(&src, "blk.0.attn_q.scale"), [0.25]);
    // Codes 1 and 2 (0.5 and 1.0) alternate; the E4M3 scale byte 0x38 is 1.0.
    let w = values(&src, "blk.0.attn_q.weight");
    assert_eq!(&w[..4], &[0.5, 1.0, 0.5, 1.0]);
    for bad in [0.0, -1.0, f32::NAN, 1e-39] {
        let e = err(open(group(nvfp4.clone(), "nvfp4-pack-quantized"), json!({}), tensors(bad)));
        assert!(e.contains("weight_global_scale"), "{e}");
    }

    let embed = json!({"g": {"targets": ["Embedding"], "weights": {"num_bits": 8, "strategy": "channel"},
                              "format": "int-quantized"}});
    let tensors = vec![
        spec("model.embed_tokens.weight", Dtype::I8, &[8, 64], vec![0; 512]),
        spec("model.embed_tokens.weight_scale", Dtype::F32, &[8, 1], vec![0; 32]),
    ];
    let e = err(open(embed, json!({}), tensors));
    assert!(e.contains("model.embed_tokens") && e.contains("quantized embedding with a separate scale"), "{e}");
}

#[test]
fn compressed_tensors_in_unquantized_modules_are_refused() {
    let w8 = json!({"g": {"targets": ["re:.*mlp.*"], "weights": {"num_bits": 8, "strategy": "channel"}, "format": "int-quantized"}});
    let tensors = vec![spec(&format!("{Q}.weight"), Dtype::I8, &[64, 64], vec![0; 4096])];
    let e = err(open(w8.clone(), json!({}), tensors));
    assert!(e.contains("no config group of quantization_config quantizes"), "{e}");
    let tensors = vec![spec(&format!("{Q}.weight_packed"), Dtype::I32, &[64, 8], vec![0; 2048])];
    let e = err(open(w8, json!({}), tensors));
    assert!(e.contains("weight_packed: is stored but"), "{e}");
}

#[test]
fn uncompressed_and_dense_checkpoints_load_plain_weights() {
    let w8 = json!({"num_bits": 8, "strategy": "channel"});
    let tensors = vec![
        spec(&format!("{Q}.weight"), Dtype::BF16, &[64, 64], vec![0; 8192]),
        spec(&format!("{Q}.weight_scale"), Dtype::BF16, &[64, 1], vec![0; 128]),
    ];
    for (groups, extra) in [
        (group(w8.clone(), "int-quantized"), json!({"quantization_status": "frozen"})),
        (group(w8.clone(), "dense"), json!({})),
    ] {
        let src = open(groups, extra, tensors.clone()).unwrap();
        assert_eq!(src.tensor("blk.0.attn_q.weight").unwrap().dtype, DType::BF16);
        assert!(src.tensor("blk.0.attn_q.scale").is_none());
    }
}
