//! Property tests of the compressed-tensors reader: hostile `quantization_config`s and tensors of
//! mismatched dtypes and shapes are refused with an error naming the problem, never a panic or
//! an allocation out of proportion to the files; and well-formed integer checkpoints of any
//! shape, width, strategy and symmetry repack exactly.

use proptest::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value as Json};
use tessera_formats::{FormatError, ModelSource};
use tessera_testkit::{largest_allocation, PeakAlloc};

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

const Q: &str = "model.layers.0.self_attn.q_proj";

/// A tensor: name suffix after the module, dtype, shape, bytes.
type Part = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes a one-layer Llama whose q_proj has `parts`, opens it, and checks that a failure
/// explains itself and that no allocation was out of proportion.
fn open_checked(quantization: Json, parts: &[Part]) -> Result<ModelSource, FormatError> {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 1,
                        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 8,
                        "quantization_config": quantization});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let views: Vec<(String, TensorView<'_>)> = parts
        .iter()
        .map(|(suffix, d, s, b)| (format!("{Q}.{suffix}"), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let file = safetensors::serialize(views, &None).unwrap();
    let file_len = file.len();
    std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
    let (result, largest) = largest_allocation(|| ModelSource::open(dir.path()));
    // Repacking 1-bit values into Q4_0 grows them 4.5 times; compiling a target's regular
    // expression takes a fixed few hundred kilobytes.
    let bound = 8 * file_len + (4 << 20);
    assert!(largest <= bound, "allocated {largest} bytes at once for a {file_len}-byte file");
    if let Err(e) = &result {
        let text = e.to_string();
        if std::env::var_os("TESSERA_PRINT_ERRORS").is_some() {
            eprintln!("{text}");
        }
        assert!(text.contains(&dir.path().display().to_string()), "error does not name the file: {text}");
        assert!(text.len() > dir.path().display().to_string().len() + 10, "error says nothing: {text}");
    }
    result
}

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-200i64..300).prop_map(Json::from),
        prop::sample::select(vec![
            "int",
            "float",
            "group",
            "channel",
            "tensor",
            "tensor_group",
            "block",
            "token",
            "weight",
            "static",
            "dynamic",
            "local",
            "torch.uint8",
            "torch.float8_e4m3fn",
            "",
        ])
        .prop_map(Json::from),
        Just(json!([128, 128])),
        Just(json!({})),
    ]
}

fn weights() -> impl Strategy<Value = Json> {
    let key = prop::sample::select(vec![
        "num_bits",
        "type",
        "symmetric",
        "group_size",
        "strategy",
        "actorder",
        "dynamic",
        "block_structure",
        "scale_dtype",
    ]);
    let plausible = prop_oneof![
        Just(json!({"num_bits": 8, "type": "int", "strategy": "channel"})),
        Just(json!({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32})),
        Just(json!({"num_bits": 4, "type": "int", "strategy": "channel", "symmetric": false})),
        Just(json!({"num_bits": 8, "type": "float", "strategy": "tensor"})),
        Just(json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16})),
        Just(json!({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32})),
    ];
    (plausible, prop::collection::vec((key, json_leaf()), 0..3)).prop_map(|(mut w, edits)| {
        for (k, v) in edits {
            w[k] = v;
        }
        w
    })
}

fn quantization() -> impl Strategy<Value = Json> {
    let format = prop::sample::select(vec![
        "int-quantized",
        "float-quantized",
        "naive-quantized",
        "pack-quantized",
        "nvfp4-pack-quantized",
        "mxfp4-pack-quantized",
        "dense",
        "mixed-precision",
        "marlin-24",
        "bogus",
    ]);
    let target = prop::sample::select(vec!["Linear", "re:.*", "re:(", "re:.*q_proj$", Q, "Embedding", "lm_head"]);
    (weights(), prop::option::of(format.clone()), format, target, prop::option::of(json_leaf())).prop_map(
        |(w, group_format, top_format, target, ignore)| {
            let mut group = json!({"targets": [target], "weights": w});
            if let Some(f) = group_format {
                group["format"] = json!(f);
            }
            let mut qc =
                json!({"quant_method": "compressed-tensors", "format": top_format, "config_groups": {"g": group}});
            if let Some(i) = ignore {
                qc["ignore"] = i;
            }
            qc
        },
    )
}

/// A tensor with a dtype and shape drawn from what the formats store, near misses included.
fn part() -> impl Strategy<Value = Part> {
    let suffix = prop::sample::select(vec![
        "weight",
        "weight_packed",
        "weight_scale",
        "weight_shape",
        "weight_zero_point",
        "weight_global_scale",
        "weight_g_idx",
    ]);
    let dtype = prop::sample::select(vec![
        Dtype::I8,
        Dtype::U8,
        Dtype::I32,
        Dtype::I64,
        Dtype::F8_E4M3,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F32,
    ]);
    let dim = prop::sample::select(vec![0usize, 1, 2, 4, 8, 16, 32, 64, 65]);
    let shape = prop::collection::vec(dim, 0..3);
    (suffix, dtype, shape, any::<u64>()).prop_map(|(suffix, dtype, shape, seed)| {
        let len = shape.iter().product::<usize>() * dtype.size();
        // Small values for shape tensors, so that some of them describe the weight.
        let bytes = match (suffix, dtype) {
            ("weight_shape", Dtype::I64) => {
                [64i64, 64].iter().cycle().take(len / 8).flat_map(|v| v.to_le_bytes()).collect()
            }
            _ => (0..len).map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ i as u8).collect(),
        };
        (suffix.to_string(), dtype, shape, bytes)
    })
}

fn parts() -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec(part(), 1..6).prop_map(|mut parts| {
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        parts.dedup_by(|a, b| a.0 == b.0);
        parts
    })
}

/// A well-formed 64 x 64 q_proj in each layout, with its config group.
fn valid_layouts() -> Vec<(Json, Vec<Part>)> {
    let f32s = |n: usize, v: f32| le_f32(&vec![v; n]);
    let f16s = |n: usize, v: f32| (0..n).flat_map(|_| half::f16::from_f32(v).to_le_bytes()).collect::<Vec<u8>>();
    let shape =
        ("weight_shape".to_string(), Dtype::I64, vec![2], [64i64, 64].iter().flat_map(|v| v.to_le_bytes()).collect());
    let group = |w: Json, f: &str| json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": w, "format": f}}});
    vec![
        (
            group(json!({"num_bits": 8, "strategy": "channel"}), "int-quantized"),
            vec![
                ("weight".into(), Dtype::I8, vec![64, 64], vec![3; 4096]),
                ("weight_scale".into(), Dtype::F32, vec![64, 1], f32s(64, 0.5)),
            ],
        ),
        (
            group(json!({"num_bits": 4, "strategy": "group", "group_size": 32}), "pack-quantized"),
            vec![
                ("weight_packed".into(), Dtype::I32, vec![64, 8], vec![0x35; 2048]),
                ("weight_scale".into(), Dtype::F16, vec![64, 2], f16s(128, 0.25)),
                shape.clone(),
            ],
        ),
        (
            group(json!({"num_bits": 4, "strategy": "channel", "symmetric": false}), "pack-quantized"),
            vec![
                ("weight_packed".into(), Dtype::I32, vec![64, 8], vec![0x35; 2048]),
                ("weight_scale".into(), Dtype::F16, vec![64, 1], f16s(64, 0.25)),
                shape,
                ("weight_zero_point".into(), Dtype::I32, vec![8, 1], vec![0x79; 32]),
            ],
        ),
        (
            group(json!({"num_bits": 8, "type": "float", "strategy": "tensor"}), "float-quantized"),
            vec![
                ("weight".into(), Dtype::F8_E4M3, vec![64, 64], vec![0x38; 4096]),
                ("weight_scale".into(), Dtype::F32, vec![1], f32s(1, 2.0)),
            ],
        ),
        (
            group(
                json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16}),
                "nvfp4-pack-quantized",
            ),
            vec![
                ("weight_packed".into(), Dtype::U8, vec![64, 32], vec![0x9A; 2048]),
                ("weight_scale".into(), Dtype::F8_E4M3, vec![64, 4], vec![0x30; 256]),
                ("weight_global_scale".into(), Dtype::F32, vec![1], f32s(1, 100.0)),
            ],
        ),
        (
            group(
                json!({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32}),
                "mxfp4-pack-quantized",
            ),
            vec![
                ("weight_packed".into(), Dtype::U8, vec![64, 32], vec![0x17; 2048]),
                ("weight_scale".into(), Dtype::U8, vec![64, 2], vec![120; 128]),
            ],
        ),
    ]
}

#[derive(Clone, Debug)]
enum Damage {
    Dtype(Dtype),
    Shape(Vec<usize>),
    Remove,
    Bytes(u64),
}

fn damage() -> impl Strategy<Value = Damage> {
    let dtype = prop::sample::select(vec![
        Dtype::I8,
        Dtype::U8,
        Dtype::I32,
        Dtype::I64,
        Dtype::F8_E4M3,
        Dtype::F16,
        Dtype::F32,
    ]);
    let dim = prop::sample::select(vec![0usize, 1, 2, 4, 7, 8, 32, 63, 64, 128]);
    prop_oneof![
        dtype.prop_map(Damage::Dtype),
        prop::collection::vec(dim, 0..4).prop_map(Damage::Shape),
        Just(Damage::Remove),
        any::<u64>().prop_map(Damage::Bytes),
    ]
}

/// compressed-tensors' `pack_to_int32` of one row, written from its definition.
fn pack_row(values: &[i32], bits: u32) -> Vec<u8> {
    let mut words = vec![0u32; (values.len() * bits as usize).div_ceil(32)];
    for (c, &v) in values.iter().enumerate() {
        let bit = c * bits as usize;
        words[bit / 32] |= ((v + (1 << (bits - 1))) as u32) << (bit % 32);
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn hostile_checkpoints_never_panic(quantization in quantization(), parts in parts()) {
        if let Ok(src) = open_checked(quantization, &parts) {
            for t in &src.tensors {
                let want = t.dtype.bytes_for(t.shape.count()).expect("whole blocks");
                prop_assert_eq!(t.bytes.as_ref().len(), want, "{}", t.name);
            }
        }
    }

    #[test]
    fn damaged_tensors_are_named_errors(layout in 0usize..6, which in 0usize..4, damage in damage()) {
        let (config, mut parts) = valid_layouts().swap_remove(layout);
        prop_assert!(open_checked(config.clone(), &parts).is_ok(), "layout {} loads undamaged", layout);
        let which = which % parts.len();
        match damage {
            Damage::Remove => { parts.remove(which); }
            Damage::Dtype(d) => {
                let (_, dtype, shape, bytes) = &mut parts[which];
                *dtype = d;
                bytes.resize(shape.iter().product::<usize>() * d.size(), 0x11);
            }
            Damage::Shape(s) => {
                let (_, dtype, shape, bytes) = &mut parts[which];
                bytes.resize(s.iter().product::<usize>() * dtype.size(), 0x22);
                *shape = s;
            }
            Damage::Bytes(seed) => {
                for (i, b) in parts[which].3.iter_mut().enumerate() {
                    *b = (seed.rotate_left(i as u32 % 64) as u8) ^ (i as u8);
                }
            }
        }
        match open_checked(config, &parts) {
            Ok(src) => {
                for t in &src.tensors {
                    prop_assert_eq!(t.bytes.as_ref().len(), t.dtype.bytes_for(t.shape.count()).expect("whole blocks"));
                }
            }
            Err(e) => prop_assert!(e.to_string().contains(Q), "the error names the module: {}", e),
        }
    }

    #[test]
    fn integer_checkpoints_repack_exactly(
        rows in 1usize..5,
        blocks in 1usize..5,
        bits in prop::sample::select(vec![1u32, 2, 4, 8]),
        strategy in prop::sample::select(vec!["tensor", "channel", "group"]),
        symmetric in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // 8-bit asymmetric has no exact ggml form; tensor-wise zero points are not packed.
        let symmetric = symmetric || bits == 8 || strategy == "tensor";
        let cols = 32 * blocks;
        let group = if strategy == "group" { 32 } else { cols };
        let per_row = if strategy == "tensor" { 0 } else { cols / group };
        let mut rng = seed;
        let mut next = |n: u64| { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (rng >> 33) % n };
        let lo = -(1i32 << (bits - 1));
        let q: Vec<i32> = (0..rows * cols).map(|_| lo + next(1 << bits) as i32).collect();
        let n_scales = if strategy == "tensor" { 1 } else { rows * per_row };
        // Powers of two keep every Q4_1 minimum exact.
        let scales: Vec<f32> = (0..n_scales).map(|_| 2f32.powi(next(12) as i32 - 8) * if next(2) == 0 { 1.0 } else { -1.0 }).collect();
        let zeros: Vec<i32> = (0..n_scales).map(|_| if symmetric { 0 } else { lo + next(1 << bits) as i32 }).collect();
        let scale_shape = match strategy { "tensor" => vec![1], "channel" => vec![rows, 1], _ => vec![rows, per_row] };
        let mut parts: Vec<Part> = vec![
            ("weight_packed".into(), Dtype::I32, vec![rows, (cols * bits as usize).div_ceil(32)],
             q.chunks(cols).flat_map(|r| pack_row(r, bits)).collect()),
            ("weight_scale".into(), Dtype::F32, scale_shape, le_f32(&scales)),
            ("weight_shape".into(), Dtype::I64, vec![2], [rows as i64, cols as i64].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        if !symmetric {
            // Packed along rows: bits of consecutive rows share a word, one word column per group.
            let word_rows = (rows * bits as usize).div_ceil(32);
            let mut words = vec![0u32; word_rows * per_row];
            for r in 0..rows {
                for g in 0..per_row {
                    let bit = r * bits as usize;
                    words[(bit / 32) * per_row + g] |= ((zeros[r * per_row + g] - lo) as u32) << (bit % 32);
                }
            }
            parts.push(("weight_zero_point".into(), Dtype::I32, vec![word_rows, per_row], words.iter().flat_map(|w| w.to_le_bytes()).collect()));
        }
        let mut weights = json!({"num_bits": bits, "type": "int", "strategy": strategy, "symmetric": symmetric});
        if strategy == "group" {
            weights["group_size"] = json!(group);
        }
        let qc = json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                        "config_groups": {"g": {"targets": ["Linear"], "weights": weights}}});
        let src = open_checked(qc, &parts).expect("a well-formed checkpoint loads");
        let entry = src.tensor("blk.0.attn_q.weight").expect("the weight");
        prop_assert_eq!(entry.shape.dims(), &[rows, cols][..]);
        let got = tessera_quant::dequantize_to_vec(entry.dtype, entry.bytes.as_ref()).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let (r, c) = (i / cols, i % cols);
            let s = if strategy == "tensor" { 0 } else { r * per_row + c / group };
            prop_assert_eq!(g, (q[i] - zeros[s]) as f32 * scales[s], "value {} of {}", i, entry.dtype);
        }
    }
}

#[test]
fn a_config_without_groups_is_refused() {
    let e = open_checked(json!({"quant_method": "compressed-tensors", "config_groups": 3}), &[]).unwrap_err();
    assert!(e.to_string().contains("\"config_groups\" is missing or not an object"), "{e}");
}
