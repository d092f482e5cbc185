//! Export directories: translated step graphs saved as `.onnx` files beside one `weights.bin`,
//! with a manifest that says what feeds each input and where each output goes, so that any
//! ONNX runtime (not only Tessera) can drive the model.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tessera_backend::{BufferId, Graph, Op};

use crate::host::leaf_storage;
use crate::proto::data_type;
use crate::translate::{HostInput, Translation};
use crate::OnnxError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "tessera-onnx";

/// Which half of a layer's KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvPart {
    Key,
    Value,
}

/// What a buffer of the exported step holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferRole {
    Tokens,
    Positions,
    Kv { layer: usize, part: KvPart },
    Logits,
}

/// What feeds an input or receives an output, in terms a driver understands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// Token ids, int32 `[tokens]`.
    Tokens,
    /// `cos(p · freq_scale · base^(-2i / rot_dims))` for each token's position `p` and pair
    /// `i < rot_dims / 2`, float32 `[tokens, rot_dims / 2]` (the angle built by repeated f32
    /// multiplication, as ggml builds it).
    RopeCos { rot_dims: usize, base: f32, freq_scale: f32 },
    /// The sine of the same angles.
    RopeSin { rot_dims: usize, base: f32, freq_scale: f32 },
    /// Additive mask float32 `[tokens, context + tokens]` over the cache before the step
    /// followed by the step's own rows: 0 where a token at position `p` may attend, `masked`
    /// elsewhere. For a step whose first token is at position `s`, cache row `j` is visible when
    /// `j < s` and `j <= p`, the step's row `m` when `s + m <= p`; with a window, only positions
    /// `q` with `p - q < window`.
    Mask { window: Option<usize>, masked: f32 },
    /// As an input: the layer's whole cache, `[context, kv_width]`, before the step. As an
    /// output: the rows the step computed, `[tokens, kv_width]`, which the driver writes into
    /// the cache at the tokens' positions.
    Kv { layer: usize, part: KvPart },
    /// Output: logits float32 `[logits_rows, vocab]` for the last `logits_rows` tokens.
    Logits,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    #[serde(flatten)]
    pub binding: Binding,
    pub elem_type: String,
    pub dims: Vec<usize>,
}

/// One exported step graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphManifest {
    pub file: String,
    /// Tokens per run (static).
    pub tokens: usize,
    pub logits_rows: usize,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub architecture: String,
    pub precision: String,
    pub opset: i64,
    /// Positions the KV cache holds.
    pub context: usize,
    pub vocab: usize,
    pub n_layers: usize,
    pub kv_width: usize,
    /// Whether a QDQ export left some values float (see `qdq::QdqOptions::float_above`): NPU
    /// compilers must then run fp16 (QNN: `enable_htp_fp16_precision` with a `soc_model`).
    #[serde(default)]
    pub float16_ops: bool,
    /// Values in the source's weight matrices (tensors of two or more dimensions), for bits
    /// per weight.
    pub weight_values: u64,
    /// The tokenizer: `model.gguf` (a tensor-less GGUF holding the source's metadata, and for
    /// GGUF sources its tokenizer and chat template) or, from a Hugging Face source, its
    /// `tokenizer.json` (with `tokenizer_config.json` beside it).
    pub tokenizer: String,
    pub weights: String,
    /// Graphs, largest step first (prefill, then decode).
    pub graphs: Vec<GraphManifest>,
}

impl Manifest {
    pub fn read(dir: &std::path::Path) -> Result<Manifest, OnnxError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| OnnxError::Manifest(format!("reading {}: {e}", path.display())))?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| OnnxError::Manifest(format!("{}: {e}", path.display())))?;
        if m.format != FORMAT {
            return Err(OnnxError::Manifest(format!("{}: format {:?} is not {FORMAT:?}", path.display(), m.format)));
        }
        m.check().map_err(|e| OnnxError::Manifest(format!("{}: {e}", path.display())))?;
        Ok(m)
    }

    /// Refuses manifests whose sizes disagree or would not fit in memory, before anything is
    /// allocated from them.
    pub fn check(&self) -> Result<(), String> {
        const MAX_CACHE_BYTES: u128 = 1 << 40;
        if self.graphs.is_empty() {
            return Err("no graphs".into());
        }
        if self.context == 0 || self.kv_width == 0 || self.vocab == 0 {
            return Err("context, kv_width and vocab must be positive".into());
        }
        let cache = self.n_layers as u128 * 2 * self.context as u128 * self.kv_width as u128 * 4;
        if cache > MAX_CACHE_BYTES {
            return Err(format!("a KV cache of {cache} bytes is not plausible"));
        }
        for g in &self.graphs {
            let t = g.tokens;
            if t == 0 || t > self.context {
                return Err(format!("{}: graphs must take 1 to {} tokens, not {t}", g.file, self.context));
            }
            if g.logits_rows > t {
                return Err(format!("{}: {} logits rows for {t} tokens", g.file, g.logits_rows));
            }
            for p in g.inputs.iter().chain(&g.outputs) {
                let (expected, elem): (Vec<usize>, &str) = match &p.binding {
                    Binding::Tokens => (vec![t], "int32"),
                    Binding::RopeCos { rot_dims, .. } | Binding::RopeSin { rot_dims, .. } => {
                        (vec![t, rot_dims / 2], "float32")
                    }
                    Binding::Mask { .. } => (vec![t, self.context + t], "float32"),
                    Binding::Kv { layer, .. } if *layer >= self.n_layers => {
                        return Err(format!("{}: {} names layer {layer} of {}", g.file, p.name, self.n_layers));
                    }
                    Binding::Kv { .. } if g.inputs.contains(p) => (vec![self.context, self.kv_width], "float32"),
                    Binding::Kv { .. } => (vec![t, self.kv_width], "float32"),
                    Binding::Logits => (vec![g.logits_rows, self.vocab], "float32"),
                };
                if p.dims != expected || p.elem_type != elem {
                    return Err(format!(
                        "{}: {} is {} {:?}, expected {elem} {expected:?}",
                        g.file, p.name, p.elem_type, p.dims
                    ));
                }
            }
            if !g.outputs.iter().any(|p| p.binding == Binding::Logits) {
                return Err(format!("{}: no logits output", g.file));
            }
        }
        Ok(())
    }
}

pub fn elem_name(elem_type: i32) -> &'static str {
    match elem_type {
        data_type::FLOAT => "float32",
        data_type::FLOAT16 => "float16",
        data_type::INT32 => "int32",
        data_type::INT64 => "int64",
        _ => "other",
    }
}

/// Describes a translated step graph's inputs and outputs by what the buffers hold.
pub fn describe(
    graph: &Graph,
    translation: &Translation,
    roles: &HashMap<BufferId, BufferRole>,
    file: &str,
) -> Result<GraphManifest, OnnxError> {
    let role_of = |node: usize| -> Option<BufferRole> {
        let (leaf, _) = leaf_storage(graph, node)?;
        match graph.node(leaf).op {
            Op::Leaf(t) => roles.get(&t.buffer).copied(),
            _ => None,
        }
    };
    let unknown = |what: &str| OnnxError::Manifest(format!("{file}: {what} is not a step input the manifest can name"));
    let mut tokens = 0;
    let mut inputs = Vec::new();
    for input in &translation.inputs {
        let binding = match &input.source {
            HostInput::Leaf { node } => match role_of(*node) {
                Some(BufferRole::Tokens) => {
                    tokens = graph.node(*node).shape.count();
                    Binding::Tokens
                }
                Some(BufferRole::Kv { layer, part }) => Binding::Kv { layer, part },
                _ => return Err(unknown(&format!("leaf {node}"))),
            },
            HostInput::RopeCos { pos, rot_dims, base, freq_scale } if role_of(*pos) == Some(BufferRole::Positions) => {
                Binding::RopeCos { rot_dims: *rot_dims, base: *base, freq_scale: *freq_scale }
            }
            HostInput::RopeSin { pos, rot_dims, base, freq_scale } if role_of(*pos) == Some(BufferRole::Positions) => {
                Binding::RopeSin { rot_dims: *rot_dims, base: *base, freq_scale: *freq_scale }
            }
            HostInput::AppendMask { pos, window, masked, .. } if role_of(*pos) == Some(BufferRole::Positions) => {
                Binding::Mask { window: *window, masked: *masked }
            }
            other => return Err(unknown(&format!("{other:?}"))),
        };
        inputs.push(Port {
            name: input.name.clone(),
            binding,
            elem_type: elem_name(input.elem_type).into(),
            dims: input.dims.clone(),
        });
    }
    let mut outputs = Vec::new();
    let mut logits_rows = 0;
    for out in &translation.outputs {
        let store = graph.node(out.store);
        let dst = store.inputs[1];
        let width = graph.node(dst).shape.cols();
        let rows = graph.node(store.inputs[0]).shape.count() / width.max(1);
        let binding = match role_of(dst) {
            Some(BufferRole::Kv { layer, part }) => Binding::Kv { layer, part },
            Some(BufferRole::Logits) => {
                logits_rows = rows;
                Binding::Logits
            }
            _ => return Err(unknown(&format!("the destination of store {}", out.store))),
        };
        outputs.push(Port { name: out.name.clone(), binding, elem_type: "float32".into(), dims: vec![rows, width] });
    }
    Ok(GraphManifest { file: file.into(), tokens, logits_rows, inputs, outputs })
}

/// What a QDQ export is calibrated with.
pub struct Calibration<'a> {
    /// A step graph's value ranges (`None`: that graph was never run).
    pub ranges: &'a dyn Fn(&Graph) -> Option<crate::qdq::Ranges>,
    /// Int8 codes and row scales already chosen for weights (GPTQ), by tensor name; weights not
    /// in it are rounded to nearest.
    pub weights: &'a std::collections::BTreeMap<String, tessera_quantize::RowCodes>,
}

/// What `export_model` writes.
#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    pub precision: crate::Precision,
    /// QDQ form (int8 weights); needs calibration ranges.
    pub quantize: Option<crate::qdq::QdqOptions>,
    /// Tokens per prefill run.
    pub seq_len: usize,
    /// Positions the KV cache holds.
    pub context: usize,
}

/// Reads weights through the backend the model was loaded on.
struct BackendReader<'a>(&'a dyn tessera_backend::Backend);

impl crate::BufferReader for BackendReader<'_> {
    fn read(&self, buffer: BufferId, offset: usize, len: usize) -> Result<Vec<u8>, String> {
        let mut out = vec![0; len];
        self.0.download(buffer, offset, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OnnxError + '_ {
    move |e| OnnxError::Manifest(format!("writing {}: {e}", path.display()))
}

/// Exports `model` into `out`: `prefill.onnx` (`seq_len` tokens) and `decode.onnx` (one token)
/// over an F32 KV cache of `context` positions, `weights.bin` shared by both, `model.gguf` (the
/// source's metadata and tokenizer, no tensors) and `manifest.json`.
///
/// A QDQ export (`options.quantize`) takes each graph's value ranges from `calibration`, which
/// gets the graph (see `OrtBackend::ranges`: runs of the same shapes with `observe`, on a model
/// translating with [`crate::TranslateOptions::quantized`]), and the weights' int8 codes from it
/// where it has them.
pub fn export_model(
    model: &tessera_runtime::LoadedModel,
    out: &std::path::Path,
    options: ExportOptions,
    calibration: Option<&Calibration<'_>>,
) -> Result<Manifest, OnnxError> {
    use prost::Message;
    let err = |e: tessera_runtime::RuntimeError| OnnxError::Manifest(e.to_string());
    if options.seq_len == 0 || options.seq_len > options.context {
        return Err(OnnxError::Manifest(format!(
            "--seq-len must be between 1 and the context ({}), got {}",
            options.context, options.seq_len
        )));
    }
    let cfg = model.config().clone();
    let ctx = model
        .new_context(tessera_runtime::ContextOptions {
            n_ctx: options.context,
            n_batch: options.seq_len,
            kv_type: tessera_backend::DType::F32,
        })
        .map_err(err)?;
    let backend = model.backend();
    let mut roles = HashMap::new();
    for (layer, (k, v)) in ctx.kv_cache().layers().iter().enumerate() {
        roles.insert(k.id(), BufferRole::Kv { layer, part: KvPart::Key });
        roles.insert(v.id(), BufferRole::Kv { layer, part: KvPart::Value });
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let mut blob = crate::WeightBlob::new();
    let mut quantized = crate::qdq::QuantizedBlob::default();
    let translate_options = match options.quantize {
        Some(_) => crate::TranslateOptions::quantized(),
        None => crate::TranslateOptions::float(options.precision),
    };
    let mut graphs = Vec::new();
    let steps: &[(usize, &str)] = if options.seq_len == 1 {
        &[(1, "decode.onnx")]
    } else {
        &[(options.seq_len, "prefill.onnx"), (1, "decode.onnx")]
    };
    for &(n, file) in steps {
        let logits = tessera_backend::OwnedBuffer::alloc(backend, n * cfg.vocab_size * 4).map_err(|e| err(e.into()))?;
        let (graph, [ids, pos]) = ctx.step_graph(n, tessera_runtime::Logits::All, &logits).map_err(err)?;
        let mut roles = roles.clone();
        roles.insert(ids.id(), BufferRole::Tokens);
        roles.insert(pos.id(), BufferRole::Positions);
        roles.insert(logits.id(), BufferRole::Logits);
        let leaf_roles = crate::classify_leaves(&graph);
        let reader = BackendReader(backend.as_ref());
        let t = crate::translate(&graph, &leaf_roles, &translate_options, &mut blob, &reader)?;
        graphs.push(describe(&graph, &t, &roles, file)?);
        let onnx = match options.quantize {
            None => t.model,
            Some(qdq) => {
                let ranges = calibration.and_then(|c| (c.ranges)(&graph)).ok_or_else(|| {
                    OnnxError::Manifest(format!("{file}: no calibration ranges for a graph of {n} tokens"))
                })?;
                // Initializers of whole weights are named `w.BUFFER.0` (see `translate`).
                let chosen = |initializer: &str| {
                    let buffer = initializer.strip_prefix("w.")?.strip_suffix(".0")?.parse().ok()?;
                    let name = model.weight_name(BufferId(buffer))?;
                    calibration?.weights.get(name)
                };
                crate::qdq::quantize_model(&t.model, &ranges, &blob.data, &mut quantized, qdq, &chosen)?
            }
        };
        let path = out.join(file);
        std::fs::write(&path, onnx.encode_to_vec()).map_err(io_error(&path))?;
    }
    let path = out.join(crate::WEIGHTS_FILE);
    let weights = if options.quantize.is_some() { &quantized.data } else { &blob.data };
    std::fs::write(&path, weights).map_err(io_error(&path))?;
    let mut w = tessera_formats::GgufWriter::new();
    for (k, v) in model.source.metadata.iter() {
        w.add_metadata(k.clone(), v.clone()).map_err(|e| OnnxError::Manifest(format!("model.gguf: {e}")))?;
    }
    let path = out.join("model.gguf");
    w.write_file(&path).map_err(|e| OnnxError::Manifest(format!("writing {}: {e}", path.display())))?;
    // A Hugging Face source's tokenizer is its own files, copied as they are.
    let mut tokenizer = "model.gguf".to_string();
    for (from, name) in [
        (&model.source.tokenizer_json, "tokenizer.json"),
        (&model.source.tokenizer_config_json, "tokenizer_config.json"),
    ] {
        if let Some(from) = from {
            let to = out.join(name);
            std::fs::copy(from, &to).map_err(io_error(&to))?;
            if name == "tokenizer.json" {
                tokenizer = name.into();
            }
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: 1,
        architecture: model.source.metadata.architecture().unwrap_or("unknown").to_string(),
        precision: match options.quantize.map(|q| q.activations) {
            None => options.precision.name().into(),
            Some(crate::qdq::Activations::U8) => "qdq-int8".into(),
            Some(crate::qdq::Activations::U16) => "qdq-a16w8".into(),
        },
        float16_ops: options.quantize.is_some_and(|q| q.float_above.is_some() || q.float_attention),
        opset: crate::OPSET,
        context: options.context,
        vocab: cfg.vocab_size,
        n_layers: cfg.n_layers,
        kv_width: cfg.kv_dim(),
        weight_values: model
            .source
            .tensors
            .iter()
            .filter(|t| t.shape.rank() >= 2)
            .map(|t| t.shape.count() as u64)
            .sum(),
        tokenizer,
        weights: crate::WEIGHTS_FILE.into(),
        graphs,
    };
    let path = out.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| OnnxError::Manifest(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(io_error(&path))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, binding: Binding, elem: &str, dims: &[usize]) -> Port {
        Port { name: name.into(), binding, elem_type: elem.into(), dims: dims.to_vec() }
    }

    fn manifest() -> Manifest {
        let kv = Binding::Kv { layer: 0, part: KvPart::Key };
        Manifest {
            format: FORMAT.into(),
            version: 1,
            architecture: "llama".into(),
            precision: "fp32".into(),
            opset: crate::OPSET,
            context: 16,
            vocab: 10,
            n_layers: 1,
            kv_width: 4,
            float16_ops: false,
            weight_values: 0,
            tokenizer: "model.gguf".into(),
            weights: crate::WEIGHTS_FILE.into(),
            graphs: vec![GraphManifest {
                file: "decode.onnx".into(),
                tokens: 1,
                logits_rows: 1,
                inputs: vec![
                    port("t", Binding::Tokens, "int32", &[1]),
                    port("m", Binding::Mask { window: None, masked: -1.0 }, "float32", &[1, 17]),
                    port("k", kv.clone(), "float32", &[16, 4]),
                ],
                outputs: vec![port("k.new", kv, "float32", &[1, 4]), port("l", Binding::Logits, "float32", &[1, 10])],
            }],
        }
    }

    #[test]
    fn a_consistent_manifest_passes_and_each_inconsistency_is_named() {
        assert_eq!(manifest().check(), Ok(()));
        type Break = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Break)> = vec![
            ("no graphs", Box::new(|m| m.graphs.clear())),
            ("tokens", Box::new(|m| m.graphs[0].tokens = 17)),
            ("expected int32 [1]", Box::new(|m| m.graphs[0].inputs[0].dims = vec![2])),
            (
                "names layer 3",
                Box::new(|m| m.graphs[0].inputs[2].binding = Binding::Kv { layer: 3, part: KvPart::Value }),
            ),
            ("not plausible", Box::new(|m| m.kv_width = usize::MAX / 2)),
            (
                "no logits output",
                Box::new(|m| {
                    m.graphs[0].outputs.pop();
                }),
            ),
        ];
        for (needle, break_it) in cases {
            let mut m = manifest();
            break_it(&mut m);
            let err = m.check().unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn manifest_files_of_any_content_are_refused_without_panicking() {
        let dir = std::env::temp_dir().join(format!("tessera-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let valid = serde_json::to_string(&manifest()).unwrap();
        let mut rng = 0x9E3779B97F4A7C15u64;
        for round in 0..500 {
            let mut bytes = valid.clone().into_bytes();
            // Flip, cut or splice a few bytes: most results are not JSON, some are JSON with
            // wrong values, a few stay valid.
            for _ in 0..1 + round % 4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % bytes.len();
                match rng % 3 {
                    0 => bytes[i] = (rng >> 8) as u8,
                    1 => bytes.truncate(i.max(1)),
                    _ => {
                        let alphabet = b"0123456789-,:{}[]\"e";
                        bytes.insert(i, alphabet[(rng >> 16) as usize % alphabet.len()]);
                    }
                }
            }
            std::fs::write(dir.join(MANIFEST_FILE), &bytes).unwrap();
            let _ = Manifest::read(&dir);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
