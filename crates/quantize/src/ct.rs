//! compressed-tensors output: a Hugging Face model directory (`config.json` with a
//! `quantization_config`, `model.safetensors`, tokenizer files) in the layout llm-compressor
//! writes and vLLM loads. Every Linear of the decoder layers is quantized; embeddings, norms and
//! the output head (`lm_head`, listed under `ignore`) keep the model's float type.
//!
//! | format | compressed-tensors `format` | tensors per Linear |
//! |---|---|---|
//! | `w8a8-int8` | `int-quantized` | `weight` I8, `weight_scale` `[out, 1]` |
//! | `fp8-e4m3` | `float-quantized` | `weight` F8_E4M3, `weight_scale` `[out, 1]` (or `[1]`) |
//! | `w4a16-*` | `pack-quantized` | `weight_packed` I32, `weight_scale` `[out, in/g]`, `weight_shape` I64 |
//! | `nvfp4` | `nvfp4-pack-quantized` | `weight_packed` U8, `weight_scale` F8_E4M3 `[out, in/16]`, `weight_global_scale` F32 |
//! | `mxfp4-ct` | `mxfp4-pack-quantized` | `weight_packed` U8, `weight_scale` U8 (E8M0) `[out, in/32]` |
//!
//! INT8 and FP8 declare dynamic per-token activation quantization (llm-compressor's `W8A8` and
//! `FP8_DYNAMIC` schemes); the others are weight-only. `--group-size 0` gives FP8 one scale per
//! tensor. Layers are processed one at a time (calibrated formats in passes of layers whose
//! statistics fit a memory budget); the directory is written as `<output>.partial` and renamed
//! at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::tensor::View;
use safetensors::Dtype;
use serde_json::{json, Value as Json};
use tessera_core::DType;
use tessera_formats::{ModelSource, Origin, TensorEntry};

use crate::awq::{self, Balance};
use crate::calib::{self, Calibration, Site};
use crate::float8;
use crate::floats::FloatType;
use crate::format::Format;
use crate::fp4::{self, MXFP4_GROUP, NVFP4_GROUP};
use crate::gptq;
use crate::hf_layout::{self, Arch};
use crate::integer::{self, Bits};
use crate::mapping::{kv_row_scales, tie_heads, Mapping, MAPPINGS};
use crate::output::{finish, partial_path};
use crate::smooth;
use crate::{Progress, QuantizeError, QuantizeOptions, Summary, TensorReport};

/// The compressed-tensors release whose checkpoint layout and `quantization_config` this
/// follows (written as the config's `version`, as llm-compressor writes the package's).
const CT_VERSION: &str = "0.20.0";
/// Default int4 group size, and the smaller ones tried when it does not divide every Linear.
const DEFAULT_GROUP: usize = 128;
const FALLBACK_GROUPS: [usize; 2] = [64, 32];
/// Memory for calibration statistics per pass over the model.
const CALIBRATION_BUDGET: usize = 2 << 30;
/// The text calibrated on when none is given.
/// The text calibrating quantizers calibrate on when given none.
pub const DEFAULT_CALIBRATION: &str = include_str!("../calibration/default.txt");

fn invalid(what: String) -> QuantizeError {
    QuantizeError::Invalid(what)
}

/// How weights are chosen: int4 by rounding, AWQ or GPTQ; int8 (W8A8) after smoothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Rtn,
    Awq,
    Gptq,
    Smooth,
}

/// What each Linear becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Int8,
    Fp8 { per_tensor: bool },
    Int4 { group: usize, method: Method },
    Nvfp4,
    Mxfp4,
}

impl Scheme {
    /// The scheme of `options`, checked against the input widths of the Linears.
    fn new(
        options: &QuantizeOptions,
        linears: &[(&str, usize)],
        progress: &mut dyn Progress,
    ) -> Result<Scheme, QuantizeError> {
        let format = options.format;
        let fixed = |g: usize| -> Result<(), QuantizeError> {
            match options.group_size {
                Some(x) if x != g => {
                    Err(invalid(format!("{format} has fixed groups of {g} values; leave --group-size out")))
                }
                _ => Ok(()),
            }
        };
        let divides = |g: usize| linears.iter().find(|(_, cols)| cols % g != 0).copied();
        let scheme = match format {
            Format::W8A8Int8 => {
                if options.group_size.is_some() {
                    return Err(invalid(format!("{format} has one scale per output channel; leave --group-size out")));
                }
                Scheme::Int8
            }
            Format::Fp8E4M3 => match options.group_size {
                None => Scheme::Fp8 { per_tensor: false },
                Some(0) => Scheme::Fp8 { per_tensor: true },
                Some(g) => {
                    return Err(invalid(format!(
                        "{format} takes no --group-size (one scale per output channel) or --group-size 0 (one per \
                         tensor), not {g}"
                    )))
                }
            },
            Format::W4A16Rtn | Format::W4A16Awq | Format::W4A16Gptq => {
                let method = match format {
                    Format::W4A16Awq => Method::Awq,
                    Format::W4A16Gptq => Method::Gptq,
                    _ => Method::Rtn,
                };
                let group = match options.group_size {
                    Some(0) => return Err(invalid("--group-size must be at least 1".into())),
                    Some(g) => {
                        if let Some((name, cols)) = divides(g) {
                            return Err(invalid(format!(
                                "group size {g} does not divide the {cols} inputs of {name}; compressed-tensors needs \
                                 whole groups"
                            )));
                        }
                        g
                    }
                    None => {
                        let g = [DEFAULT_GROUP].iter().chain(&FALLBACK_GROUPS).copied().find(|&g| divides(g).is_none());
                        let Some(g) = g else {
                            let (name, cols) = divides(FALLBACK_GROUPS[1]).unwrap_or(("?", 0));
                            return Err(invalid(format!(
                                "no group size of 128, 64 or 32 divides the {cols} inputs of {name}; give --group-size"
                            )));
                        };
                        if g != DEFAULT_GROUP {
                            let (name, cols) = divides(DEFAULT_GROUP).unwrap_or(("?", 0));
                            progress.message(&format!(
                                "group size {DEFAULT_GROUP} does not divide the {cols} inputs of {name}; using {g}"
                            ));
                        }
                        g
                    }
                };
                Scheme::Int4 { group, method }
            }
            Format::Nvfp4 | Format::Mxfp4Ct => {
                let g = if format == Format::Nvfp4 { NVFP4_GROUP } else { MXFP4_GROUP };
                fixed(g)?;
                if let Some((name, cols)) = divides(g) {
                    return Err(invalid(format!("{format} needs inputs in whole groups of {g}; {name} has {cols}")));
                }
                if format == Format::Nvfp4 {
                    Scheme::Nvfp4
                } else {
                    Scheme::Mxfp4
                }
            }
            other => return Err(invalid(format!("{other} is not a compressed-tensors format"))),
        };
        Ok(scheme)
    }

    /// compressed-tensors' `format` string.
    fn ct_format(self) -> &'static str {
        match self {
            Scheme::Int8 => "int-quantized",
            Scheme::Fp8 { .. } => "float-quantized",
            Scheme::Int4 { .. } => "pack-quantized",
            Scheme::Nvfp4 => "nvfp4-pack-quantized",
            Scheme::Mxfp4 => "mxfp4-pack-quantized",
        }
    }

    /// The type column of the summary.
    fn type_name(self) -> &'static str {
        match self {
            Scheme::Int8 => "int8",
            Scheme::Fp8 { .. } => "fp8",
            Scheme::Int4 { .. } => "int4",
            Scheme::Nvfp4 => "nvfp4",
            Scheme::Mxfp4 => "mxfp4",
        }
    }

    /// `quantization_config` as llm-compressor writes it (`ModelCompressor.update_config`: the
    /// `QuantizationConfig` dump with version, method and empty sparsity/transform configs).
    fn quantization_config(self) -> Json {
        let (weights, activations) = match self {
            Scheme::Int8 => (
                json!({"dynamic": false, "group_size": null, "num_bits": 8, "strategy": "channel",
                       "symmetric": true, "type": "int"}),
                json!({"dynamic": true, "group_size": null, "num_bits": 8, "strategy": "token",
                       "symmetric": true, "type": "int"}),
            ),
            Scheme::Fp8 { per_tensor } => (
                json!({"dynamic": false, "group_size": null, "num_bits": 8,
                       "strategy": if per_tensor { "tensor" } else { "channel" }, "symmetric": true, "type": "float"}),
                json!({"dynamic": true, "group_size": null, "num_bits": 8, "strategy": "token",
                       "symmetric": true, "type": "float"}),
            ),
            Scheme::Int4 { group, .. } => (
                json!({"dynamic": false, "group_size": group, "num_bits": 4, "strategy": "group",
                       "symmetric": true, "type": "int"}),
                Json::Null,
            ),
            Scheme::Nvfp4 => (
                json!({"dynamic": false, "group_size": NVFP4_GROUP, "num_bits": 4,
                       "scale_dtype": "torch.float8_e4m3fn", "strategy": "tensor_group", "symmetric": true,
                       "type": "float"}),
                Json::Null,
            ),
            Scheme::Mxfp4 => (
                json!({"dynamic": false, "group_size": MXFP4_GROUP, "num_bits": 4, "scale_dtype": "torch.uint8",
                       "strategy": "group", "symmetric": true, "type": "float"}),
                Json::Null,
            ),
        };
        json!({
            "config_groups": {"group_0": {
                "format": self.ct_format(), "input_activations": activations, "output_activations": null,
                "targets": ["Linear"], "weights": weights,
            }},
            "format": self.ct_format(),
            "global_compression_ratio": null,
            "ignore": ["lm_head"],
            "kv_cache_scheme": null,
            "moe_sparsity_config": null,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
            "sparsity_config": {},
            "transform_config": {},
            "version": CT_VERSION,
        })
    }

    fn calibration(self) -> Option<Method> {
        match self {
            Scheme::Int4 { method: m @ (Method::Awq | Method::Gptq), .. } => Some(m),
            Scheme::Int8 => Some(Method::Smooth),
            _ => None,
        }
    }
}

/// One tensor of the output file.
struct OutTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &OutTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// GGUF names of the weights that are quantized: every Linear of a decoder layer.
fn is_linear(name: &str) -> bool {
    const LINEARS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
    name.strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(_, r)| r.strip_suffix(".weight"))
        .is_some_and(|m| LINEARS.contains(&m))
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()
}

/// A source tensor and what becomes of it.
struct Planned<'a> {
    entry: &'a TensorEntry,
    hf: String,
    linear: bool,
    /// Companion `.scale` of a weight read from a checkpoint that keeps scales beside weights.
    scale: Option<&'a TensorEntry>,
    /// Heads of llama.cpp's Q/K row permutation to undo.
    unpermute: Option<usize>,
    /// Gemma norm stored as `1 + w`.
    shifted_norm: bool,
}

/// The float type of the output: F16 for a Hugging Face source whose tensors are all F16, else
/// BF16 (its range is f32's, so no dequantized value overflows; the models Tessera runs were
/// trained in it, and Gemma 3's activations overflow F16).
fn output_float_type(source: &ModelSource) -> FloatType {
    let all_f16 = source.tensors.iter().all(|t| t.dtype == DType::F16);
    if source.origin == Origin::HuggingFace && all_f16 {
        FloatType::F16
    } else {
        FloatType::BF16
    }
}

/// Refuses an output that exists as a file or a directory with something in it.
fn check_output(output: &Path) -> Result<(), QuantizeError> {
    let io = |source| QuantizeError::Io { path: output.to_path_buf(), source };
    if output.is_file() {
        return Err(invalid(format!("{}: is a file; compressed-tensors formats write a directory", output.display())));
    }
    if output.is_dir() && std::fs::read_dir(output).map_err(io)?.next().is_some() {
        return Err(invalid(format!(
            "{}: the directory exists and is not empty; refusing to overwrite it (remove it or choose another)",
            output.display()
        )));
    }
    if output.file_name().is_none() {
        return Err(invalid(format!("{}: not a directory name", output.display())));
    }
    Ok(())
}

pub(crate) fn write(
    source_path: &Path,
    output: &Path,
    options: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Summary, QuantizeError> {
    check_output(output)?;
    let source = ModelSource::open(source_path)?;
    let partial = partial_path(output);
    if partial.exists() {
        return Err(invalid(format!("{}: left over from an earlier run; remove it first", partial.display())));
    }
    std::fs::create_dir_all(&partial).map_err(|source| QuantizeError::Io { path: partial.clone(), source })?;
    let written = Writer::new(&source, source_path, options, progress).and_then(|w| w.run(&partial, progress));
    finish(&partial, output, written)
}

/// The state of one conversion.
struct Writer<'a> {
    source: &'a ModelSource,
    source_path: &'a Path,
    arch: Arch,
    scheme: Scheme,
    dtype: FloatType,
    calib_text: &'a str,
    /// Planned tensors outside the decoder layers, and per layer.
    globals: Vec<Planned<'a>>,
    layers: BTreeMap<usize, Vec<Planned<'a>>>,
    out: BTreeMap<String, OutTensor>,
    reports: Vec<TensorReport>,
}

impl<'a> Writer<'a> {
    fn new(
        source: &'a ModelSource,
        source_path: &'a Path,
        options: &'a QuantizeOptions,
        progress: &mut dyn Progress,
    ) -> Result<Writer<'a>, QuantizeError> {
        let arch = Arch::from_metadata(&source.metadata)?;
        let scale_names: BTreeSet<&str> =
            source.tensors.iter().map(|t| t.name.as_str()).filter(|n| n.ends_with(".scale")).collect();
        let mut globals = Vec::new();
        let mut layers: BTreeMap<usize, Vec<Planned<'a>>> = BTreeMap::new();
        let mut linears = Vec::new();
        for entry in &source.tensors {
            if scale_names.contains(entry.name.as_str()) {
                let weight = format!("{}.weight", entry.name.trim_end_matches(".scale"));
                if source.tensor(&weight).is_none() {
                    return Err(invalid(format!("{}: scale without a weight {weight}", entry.name)));
                }
                continue;
            }
            let linear = is_linear(&entry.name);
            if linear {
                if entry.shape.rank() != 2 {
                    return Err(invalid(format!(
                        "{}: a Linear weight must be a matrix, not {}",
                        entry.name, entry.shape
                    )));
                }
                linears.push((entry.name.as_str(), entry.shape.cols()));
            }
            let scale_name = format!("{}.scale", entry.name.trim_end_matches(".weight"));
            let planned = Planned {
                entry,
                hf: hf_layout::hf_name(arch, &entry.name)?,
                linear,
                scale: if entry.name.ends_with(".weight") { source.tensor(&scale_name) } else { None },
                unpermute: hf_layout::permuted_heads(arch, source.origin, &entry.name, &source.metadata)?,
                shifted_norm: hf_layout::is_shifted_norm(arch, source.origin, &entry.name),
            };
            match layer_of(&entry.name) {
                Some(l) => layers.entry(l).or_default().push(planned),
                None => globals.push(planned),
            }
        }
        if linears.is_empty() {
            return Err(invalid(format!("{}: no Linear weights to quantize", source_path.display())));
        }
        let scheme = Scheme::new(options, &linears, progress)?;
        let calib_text = options.calib_text.as_deref().unwrap_or(DEFAULT_CALIBRATION);
        Ok(Writer {
            source,
            source_path,
            arch,
            scheme,
            dtype: output_float_type(source),
            calib_text,
            globals,
            layers,
            out: BTreeMap::new(),
            reports: Vec::new(),
        })
    }

    fn run(mut self, dir: &Path, progress: &mut dyn Progress) -> Result<Summary, QuantizeError> {
        progress.start(self.globals.len() + self.layers.values().map(Vec::len).sum::<usize>());
        for p in std::mem::take(&mut self.globals) {
            let values = self.load(&p)?;
            self.emit(&p, values, None, progress)?;
        }
        let layers = std::mem::take(&mut self.layers);
        match self.scheme.calibration() {
            None => {
                for (_, tensors) in layers {
                    self.layer(tensors, &mut Calibration::new(), progress)?;
                }
            }
            Some(method) => self.calibrated(layers, method, progress)?,
        }

        let mut config = match self.source.origin {
            Origin::HuggingFace => hf_layout::config_from_hf(&self.source.path, self.dtype)?,
            Origin::Gguf { .. } => hf_layout::config_from_gguf(self.source, self.arch, self.dtype)?,
        };
        config.insert("quantization_config".into(), self.scheme.quantization_config());
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&Json::Object(config)).map_err(|e| invalid(e.to_string()))?;
        std::fs::write(&config_path, text + "\n").map_err(|source| QuantizeError::Io { path: config_path, source })?;

        let st_path = dir.join("model.safetensors");
        let metadata = Some([("format".to_string(), "pt".to_string())].into_iter().collect());
        safetensors::serialize_to_file(self.out.iter(), &metadata, &st_path)
            .map_err(|e| invalid(format!("{}: {e}", st_path.display())))?;
        hf_layout::write_tokenizer(self.source, dir)?;

        let dequantized_from: BTreeSet<String> = self
            .source
            .tensors
            .iter()
            .filter(|t| !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16))
            .map(|t| t.dtype.name().to_string())
            .collect();
        Ok(Summary {
            tensors: self.reports,
            dequantized_from: dequantized_from.into_iter().collect(),
            output: dir.into(),
        })
    }

    /// Calibrates in passes over groups of layers whose statistics fit the memory budget, and
    /// quantizes each group before gathering the next.
    fn calibrated(
        &mut self,
        layers: BTreeMap<usize, Vec<Planned<'a>>>,
        method: Method,
        progress: &mut dyn Progress,
    ) -> Result<(), QuantizeError> {
        const SITES: [Site; 4] = [Site::AttnIn, Site::AttnOut, Site::FfnIn, Site::FfnDown];
        let wanted: BTreeSet<(usize, Site)> = layers
            .keys()
            .flat_map(|&l| SITES.into_iter().map(move |s| (l, s)))
            .filter(|&(l, s)| self.wants(method, l, s))
            .collect();
        // Statistics bytes of a layer: at most a d × d f64 matrix per site.
        let bytes_of = |l: usize, tensors: &[Planned<'_>]| -> usize {
            tensors
                .iter()
                .filter(|p| p.linear)
                .filter_map(|p| {
                    Site::of(&p.entry.name).filter(|ls| ls.0 == l && wanted.contains(ls)).map(|ls| (ls.1, p))
                })
                .collect::<BTreeMap<Site, &Planned<'_>>>()
                .values()
                .map(|p| p.entry.shape.cols().pow(2) * 8)
                .sum()
        };
        progress.message(&format!("loading {} for calibration", self.source_path.display()));
        let model = calib::load_model(self.source_path)?;
        let sequences = calib::sequences(&model, self.calib_text)?;
        let layers: Vec<(usize, Vec<Planned<'a>>)> = layers.into_iter().collect();
        for group in calib::windows(layers, CALIBRATION_BUDGET, |l, t| bytes_of(l, t)) {
            let range = group[0].0..group[group.len() - 1].0 + 1;
            let mut stats = calib::collect(&model, &sequences, range, &|l, s| wanted.contains(&(l, s)), progress)?;
            for (_, tensors) in group {
                self.layer(tensors, &mut stats, progress)?;
            }
        }
        Ok(())
    }

    /// Which statistics a calibrated method needs.
    fn wants(&self, method: Method, layer: usize, site: Site) -> bool {
        match (method, site) {
            (Method::Gptq, _) => true,
            // llm-compressor leaves Gemma 3's Q/K/V unscaled: their outputs are RMS-normed
            // (q_norm, k_norm), which an output-error objective does not see.
            (Method::Awq, Site::AttnIn) => self.arch != Arch::Gemma3,
            (Method::Awq, Site::AttnOut) => self.v_feeds_o(layer),
            (Method::Awq, _) => true,
            (Method::Smooth, Site::AttnOut) => self.v_groups(layer).is_some(),
            (Method::Smooth, _) => true,
            (Method::Rtn, _) => false,
        }
    }

    /// Whether V's outputs are O's inputs one to one (no grouped-query sharing), so that O's
    /// scales fold into V's rows.
    fn v_feeds_o(&self, layer: usize) -> bool {
        let v = self.source.tensor(&format!("blk.{layer}.attn_v.weight"));
        let o = self.source.tensor(&format!("blk.{layer}.attn_output.weight"));
        matches!((v, o), (Some(v), Some(o)) if v.shape.rows() == o.shape.cols())
    }

    /// How O's inputs come from V's outputs: `(heads per KV head, head dim)`, input
    /// `h * head_dim + d` of O being output `(h / ratio) * head_dim + d` of V (grouped-query
    /// attention; a ratio of 1 is one to one). `None` when the shapes do not say.
    fn v_groups(&self, layer: usize) -> Option<(usize, usize)> {
        let v = self.source.tensor(&format!("blk.{layer}.attn_v.weight"))?;
        let o = self.source.tensor(&format!("blk.{layer}.attn_output.weight"))?;
        let (v_rows, o_cols) = (v.shape.rows(), o.shape.cols());
        if v_rows == 0 || !o_cols.is_multiple_of(v_rows) {
            return None;
        }
        let arch = self.arch.gguf_name();
        let m = &self.source.metadata;
        let heads = m.usize(&format!("{arch}.attention.head_count")).ok()?;
        let kv_heads = m.usize(&format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
        let ratio = o_cols / v_rows;
        (kv_heads > 0 && v_rows.is_multiple_of(kv_heads) && heads == kv_heads * ratio)
            .then(|| (ratio, v_rows / kv_heads))
    }

    /// The tensor as f32 in Hugging Face form: dequantized, times its companion scale, Q/K
    /// rows un-permuted, Gemma norms shifted back to `w`.
    fn load(&self, p: &Planned<'_>) -> Result<Vec<f32>, QuantizeError> {
        let e = p.entry;
        let bad = |what: String| invalid(format!("tensor {}: {what}", e.name));
        let n = e.shape.checked_count().map_err(|err| bad(err.to_string()))?;
        let mut values = vec![0f32; n];
        tessera_quant::dequantize(e.dtype, e.bytes.as_ref(), &mut values).map_err(|err| bad(err.to_string()))?;
        if let Some(s) = p.scale {
            let mut scale = vec![0f32; s.shape.checked_count().map_err(|err| bad(err.to_string()))?];
            tessera_quant::dequantize(s.dtype, s.bytes.as_ref(), &mut scale).map_err(|err| bad(err.to_string()))?;
            let rows = e.shape.rows();
            match scale.len() {
                1 => values.iter_mut().for_each(|v| *v *= scale[0]),
                l if l == rows => {
                    for (row, &f) in values.chunks_exact_mut(e.shape.cols().max(1)).zip(&scale) {
                        row.iter_mut().for_each(|v| *v *= f);
                    }
                }
                l => return Err(bad(format!("{} holds {l} scales for {rows} rows", s.name))),
            }
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("value {i} is {}", values[i])));
        }
        if let Some(heads) = p.unpermute {
            let cols = if e.shape.rank() == 1 { 1 } else { e.shape.cols() };
            values =
                hf_layout::unpermute_rows(&values, n / cols.max(1), cols, heads).map_err(|err| bad(err.to_string()))?;
        }
        if p.shifted_norm {
            values.iter_mut().for_each(|v| *v -= 1.0);
        }
        Ok(values)
    }

    /// Converts one decoder layer: loads its tensors, applies AWQ's scales if asked, and writes
    /// every tensor.
    fn layer(
        &mut self,
        tensors: Vec<Planned<'a>>,
        stats: &mut Calibration,
        progress: &mut dyn Progress,
    ) -> Result<(), QuantizeError> {
        let mut values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for p in &tensors {
            values.insert(p.entry.name.clone(), self.load(p)?);
        }
        let Some(layer) = tensors.first().and_then(|p| layer_of(&p.entry.name)) else { return Ok(()) };
        match self.scheme {
            Scheme::Int4 { method: Method::Awq, .. } => self.awq_layer(layer, &mut values, stats, progress)?,
            Scheme::Int8 => self.smooth_layer(layer, &mut values, stats, progress)?,
            _ => {}
        }
        // GPTQ's factors, one per input site (shared by Q/K/V and by gate/up).
        let mut factors: BTreeMap<Site, gptq::Prepared> = BTreeMap::new();
        for p in &tensors {
            let v = values.remove(&p.entry.name).unwrap_or_default();
            let factor = match (self.scheme, Site::of(&p.entry.name)) {
                (Scheme::Int4 { method: Method::Gptq, .. }, Some((l, site))) if p.linear => match factors.entry(site) {
                    std::collections::btree_map::Entry::Occupied(e) => Some(&*e.into_mut()),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let s = stats.get(&(l, site)).ok_or_else(|| {
                            invalid(format!("{}: the calibration run recorded no inputs for it", p.entry.name))
                        })?;
                        let prepared = gptq::prepare(&s.hessian(), s.dim(), s.count());
                        if prepared.report.fell_back_to_rtn {
                            return Err(invalid(format!(
                                "{}: GPTQ could not factor its inputs' second moment even with damping",
                                p.entry.name
                            )));
                        }
                        if prepared.report.dead_inputs > 0 {
                            progress.message(&format!(
                                "GPTQ blk.{l}: {} inputs of {} were always zero; their weights are zeroed",
                                prepared.report.dead_inputs, p.entry.name
                            ));
                        }
                        Some(&*e.insert(prepared))
                    }
                },
                _ => None,
            };
            self.emit(p, v, factor, progress)?;
        }
        stats.retain(|(l, _), _| *l != layer);
        Ok(())
    }

    /// AWQ for one layer, mapping by mapping as llm-compressor orders them: norm → Q/K/V,
    /// V → O, norm → gate/up, up → down.
    fn awq_layer(
        &self,
        layer: usize,
        values: &mut BTreeMap<String, Vec<f32>>,
        stats: &Calibration,
        progress: &mut dyn Progress,
    ) -> Result<(), QuantizeError> {
        let Scheme::Int4 { group, .. } = self.scheme else { return Ok(()) };
        let dtype = self.dtype;
        self.balance_layer(layer, values, stats, progress, "AWQ", &|mapping, st, bal, cols| {
            let quant = |w: &[f32], rows: usize| integer::fake_quantize_rtn(w, rows, cols, group, Bits(4), dtype);
            let choice = awq::search(bal, &st.mean_abs(), &st.factor(), &quant);
            let scales = (choice.alpha != 0.0).then(|| choice.scales.clone());
            (scales, awq_message(mapping.site, &choice))
        })
    }

    /// W8A8 smoothing for one layer, over the same mappings as AWQ.
    fn smooth_layer(
        &self,
        layer: usize,
        values: &mut BTreeMap<String, Vec<f32>>,
        stats: &Calibration,
        progress: &mut dyn Progress,
    ) -> Result<(), QuantizeError> {
        let dtype = self.dtype;
        self.balance_layer(layer, values, stats, progress, "smoothing", &|mapping, st, bal, cols| {
            let quant = |w: &[f32], rows: usize| integer::fake_quantize_rtn(w, rows, cols, cols, Bits(8), dtype);
            let shared = self.shared_v_rows(layer, mapping);
            let tie = |s: Vec<f32>| match shared {
                Some((ratio, head_dim)) => tie_heads(&s, ratio, head_dim),
                None => s,
            };
            let choice = smooth::search(bal, st.abs_max(), st.samples(), &quant, &tie);
            let message = match choice.alpha {
                Some(a) => format!(
                    "{} alpha {a:.2} ({:+.0}%)",
                    mapping.site_name(),
                    change_percent(choice.loss, choice.plain_loss)
                ),
                None => format!("{} not smoothed", mapping.site_name()),
            };
            (choice.alpha.map(|_| choice.scales), message)
        })
    }

    /// Runs `search` on every mapping of a layer whose weights and statistics are there (it
    /// returns the scales to fold, if any, and a line for the report), folds what it chose, and
    /// reports one line per layer under `label`.
    fn balance_layer(
        &self,
        layer: usize,
        values: &mut BTreeMap<String, Vec<f32>>,
        stats: &Calibration,
        progress: &mut dyn Progress,
        label: &str,
        search: &BalanceSearch<'_>,
    ) -> Result<(), QuantizeError> {
        let mut report = Vec::new();
        for mapping in &MAPPINGS {
            let Some((st, names)) = mapping.find(layer, values, stats)? else { continue };
            let cols = st.dim();
            let (scales, message) = {
                let bal: Vec<Balance> =
                    names.iter().map(|n| Balance { w: &values[n], rows: values[n].len() / cols }).collect();
                search(mapping, st, &bal, cols)
            };
            report.push(message);
            if let Some(scales) = scales {
                self.fold_scales(layer, mapping, &names, &scales, values);
            }
        }
        if !report.is_empty() {
            progress.message(&format!("{label} blk.{layer}: {}", report.join(", ")));
        }
        Ok(())
    }

    /// Multiplies the balance weights' input channels by `scales` and divides the tensor that
    /// produces those inputs (a norm, or a projection's rows and bias) by them: the float model
    /// computes the same function.
    fn fold_scales(
        &self,
        layer: usize,
        mapping: &Mapping,
        names: &[String],
        scales: &[f32],
        values: &mut BTreeMap<String, Vec<f32>>,
    ) {
        let cols = scales.len();
        for n in names {
            if let Some(w) = values.get_mut(n) {
                awq::scale_columns(w, cols, scales);
            }
        }
        let smooth = format!("blk.{layer}.{}", mapping.smooth);
        if mapping.is_norm {
            if let Some(norm) = values.get_mut(&smooth) {
                awq::fold_into_norm(norm, scales, self.arch.one_plus_norms());
            }
            return;
        }
        // The producing projection's output rows: the balance weights' own scales, except for
        // V under grouped-query attention, where one V row feeds O's inputs of every head in its
        // group (whose scales `tie_heads` made equal).
        let rows_scales = match self.shared_v_rows(layer, mapping) {
            Some((ratio, head_dim)) => kv_row_scales(scales, ratio, head_dim),
            None => scales.to_vec(),
        };
        if let Some(producer) = values.get_mut(&smooth) {
            let producer_cols = producer.len() / rows_scales.len();
            awq::divide_rows(producer, producer_cols, &rows_scales);
        }
        if let Some(b) = values.get_mut(&smooth.replace(".weight", ".bias")) {
            awq::divide_rows(b, 1, &rows_scales);
        }
    }

    /// `(heads per KV head, head dim)` when `mapping` is V → O and several heads share each V
    /// row; `None` otherwise (one to one, or another mapping).
    fn shared_v_rows(&self, layer: usize, mapping: &Mapping) -> Option<(usize, usize)> {
        (mapping.site == Site::AttnOut).then(|| self.v_groups(layer)).flatten().filter(|&(ratio, _)| ratio > 1)
    }

    /// Writes one tensor: quantized if it is a Linear, else in the output float type.
    fn emit(
        &mut self,
        p: &Planned<'_>,
        values: Vec<f32>,
        factor: Option<&gptq::Prepared>,
        progress: &mut dyn Progress,
    ) -> Result<(), QuantizeError> {
        let e = p.entry;
        let shape = e.shape.dims().to_vec();
        let (output_type, bytes) = if p.linear {
            let (rows, cols) = (e.shape.rows(), e.shape.cols());
            let prefix = p.hf.strip_suffix(".weight").unwrap_or(&p.hf).to_string();
            let parts = self.quantize(&values, rows, cols, factor, &e.name)?;
            let mut bytes = 0;
            for (suffix, t) in parts {
                bytes += t.data.len() as u64;
                self.out.insert(format!("{prefix}.{suffix}"), t);
            }
            (self.scheme.type_name().to_string(), bytes)
        } else {
            let data = self.dtype.encode(&values, &e.name)?;
            let bytes = data.len() as u64;
            self.out.insert(p.hf.clone(), OutTensor { dtype: self.dtype.safetensors(), shape, data });
            (self.dtype.name().to_string(), bytes)
        };
        self.reports.push(TensorReport {
            name: p.hf.clone(),
            source_type: e.dtype.name().to_string(),
            output_type,
            values: e.shape.count() as u64,
            bytes,
        });
        progress.tensor_done(&p.hf);
        Ok(())
    }

    /// The tensors standing for one Linear, by suffix.
    fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        factor: Option<&gptq::Prepared>,
        name: &str,
    ) -> Result<Vec<(&'static str, OutTensor)>, QuantizeError> {
        let dtype = self.dtype;
        let scale_tensor = |scales: &[f32], shape: Vec<usize>| -> Result<OutTensor, QuantizeError> {
            Ok(OutTensor { dtype: dtype.safetensors(), shape, data: dtype.encode(scales, name)? })
        };
        Ok(match self.scheme {
            Scheme::Int8 => {
                let q = integer::quantize_rtn(w, rows, cols, cols, Bits(8), dtype);
                let data = q.codes.iter().map(|&c| c as u8).collect();
                vec![
                    ("weight", OutTensor { dtype: Dtype::I8, shape: vec![rows, cols], data }),
                    ("weight_scale", scale_tensor(&q.scales, vec![rows, 1])?),
                ]
            }
            Scheme::Fp8 { per_tensor } => {
                let q = float8::quantize(w, rows, cols, per_tensor, dtype);
                let scale_shape = if per_tensor { vec![1] } else { vec![rows, 1] };
                vec![
                    ("weight", OutTensor { dtype: Dtype::F8_E4M3, shape: vec![rows, cols], data: q.codes }),
                    ("weight_scale", scale_tensor(&q.scales, scale_shape)?),
                ]
            }
            Scheme::Int4 { group, method } => {
                let q = match (method, factor) {
                    (Method::Gptq, Some(f)) => gptq::quantize(w, rows, f, group, Bits(4), dtype),
                    (Method::Gptq, None) => return Err(invalid(format!("{name}: no calibration statistics for GPTQ"))),
                    _ => integer::quantize_rtn(w, rows, cols, group, Bits(4), dtype),
                };
                let shape: Vec<u8> = [rows as i64, cols as i64].iter().flat_map(|v| v.to_le_bytes()).collect();
                vec![
                    (
                        "weight_packed",
                        OutTensor {
                            dtype: Dtype::I32,
                            shape: vec![rows, cols.div_ceil(8)],
                            data: integer::pack_int4(&q.codes, rows, cols),
                        },
                    ),
                    ("weight_scale", scale_tensor(&q.scales, vec![rows, cols / group])?),
                    ("weight_shape", OutTensor { dtype: Dtype::I64, shape: vec![2], data: shape }),
                ]
            }
            Scheme::Nvfp4 => {
                let q = fp4::quantize_nvfp4(w);
                let global = q.global_scale.unwrap_or(1.0).to_le_bytes().to_vec();
                vec![
                    ("weight_packed", OutTensor { dtype: Dtype::U8, shape: vec![rows, cols / 2], data: q.packed }),
                    (
                        "weight_scale",
                        OutTensor { dtype: Dtype::F8_E4M3, shape: vec![rows, cols / NVFP4_GROUP], data: q.scales },
                    ),
                    ("weight_global_scale", OutTensor { dtype: Dtype::F32, shape: vec![1], data: global }),
                ]
            }
            Scheme::Mxfp4 => {
                let q = fp4::quantize_mxfp4(w);
                vec![
                    ("weight_packed", OutTensor { dtype: Dtype::U8, shape: vec![rows, cols / 2], data: q.packed }),
                    (
                        "weight_scale",
                        OutTensor { dtype: Dtype::U8, shape: vec![rows, cols / MXFP4_GROUP], data: q.scales },
                    ),
                ]
            }
        })
    }
}

/// A scale search over one mapping: given the site's statistics, the balance weights and their
/// input width, the scales to fold (if any) and a line for the report.
type BalanceSearch<'a> = dyn Fn(&Mapping, &calib::InputStats, &[Balance<'_>], usize) -> (Option<Vec<f32>>, String) + 'a;

/// How much smaller (negative) or larger a search's error is than its baseline's, in percent.
fn change_percent(loss: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        (loss / baseline - 1.0) * 100.0
    } else {
        0.0
    }
}

/// What AWQ chose for a site: α and the output error against round-to-nearest.
fn awq_message(site: Site, choice: &awq::Choice) -> String {
    let what = MAPPINGS.iter().find(|m| m.site == site).map_or("?", Mapping::site_name);
    format!("{what} alpha {:.2} ({:+.0}%)", choice.alpha, change_percent(choice.loss, choice.rtn_loss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    fn options(format: Format, group_size: Option<usize>) -> QuantizeOptions {
        QuantizeOptions { group_size, ..QuantizeOptions::new(format) }
    }

    #[test]
    fn schemes_check_group_sizes() {
        let lin = [("blk.0.attn_q.weight", 576), ("blk.0.ffn_down.weight", 1536)];
        let new = |f, g| Scheme::new(&options(f, g), &lin, &mut NoProgress);
        assert_eq!(new(Format::W4A16Rtn, None).unwrap(), Scheme::Int4 { group: 64, method: Method::Rtn });
        assert_eq!(new(Format::W4A16Gptq, Some(32)).unwrap(), Scheme::Int4 { group: 32, method: Method::Gptq });
        let e = new(Format::W4A16Awq, Some(128)).unwrap_err().to_string();
        assert!(e.contains("576") && e.contains("blk.0.attn_q.weight"), "{e}");
        assert_eq!(new(Format::Fp8E4M3, Some(0)).unwrap(), Scheme::Fp8 { per_tensor: true });
        assert!(new(Format::Fp8E4M3, Some(64)).is_err());
        assert!(new(Format::W8A8Int8, Some(64)).is_err());
        assert_eq!(new(Format::Nvfp4, Some(16)).unwrap(), Scheme::Nvfp4);
        assert!(new(Format::Mxfp4Ct, Some(16)).unwrap_err().to_string().contains("fixed groups of 32"));
        let odd = [("blk.0.attn_q.weight", 40)];
        assert!(Scheme::new(&options(Format::Mxfp4Ct, None), &odd, &mut NoProgress).is_err());
        assert!(Scheme::new(&options(Format::W4A16Rtn, None), &odd, &mut NoProgress).is_err());
        assert!(new(Format::Q4_0, None).is_err());
    }

    #[test]
    fn quantization_configs_parse_as_compressed_tensors_writes_them() {
        let c = Scheme::Int4 { group: 128, method: Method::Awq }.quantization_config();
        assert_eq!(c["format"], "pack-quantized");
        assert_eq!(c["config_groups"]["group_0"]["weights"]["group_size"], 128);
        assert_eq!(c["config_groups"]["group_0"]["input_activations"], Json::Null);
        assert_eq!(c["ignore"], json!(["lm_head"]));
        let c = Scheme::Int8.quantization_config();
        assert_eq!(c["config_groups"]["group_0"]["input_activations"]["strategy"], "token");
        assert_eq!(c["config_groups"]["group_0"]["input_activations"]["dynamic"], true);
        let c = Scheme::Fp8 { per_tensor: true }.quantization_config();
        assert_eq!(c["config_groups"]["group_0"]["weights"]["strategy"], "tensor");
        assert_eq!(
            Scheme::Nvfp4.quantization_config()["config_groups"]["group_0"]["weights"]["strategy"],
            "tensor_group"
        );
        assert_eq!(Scheme::Mxfp4.quantization_config()["format"], "mxfp4-pack-quantized");
    }

    #[test]
    fn linears_are_the_decoder_matrices() {
        assert!(is_linear("blk.0.attn_q.weight") && is_linear("blk.11.ffn_down.weight"));
        assert!(!is_linear("blk.0.attn_q.bias") && !is_linear("blk.0.attn_norm.weight"));
        assert!(!is_linear("token_embd.weight") && !is_linear("output.weight"));
        assert_eq!(layer_of("blk.17.ffn_up.weight"), Some(17));
        assert_eq!(layer_of("output.weight"), None);
    }

    #[test]
    fn outputs_are_checked_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_output(&file).unwrap_err().to_string().contains("is a file"));
        assert!(check_output(dir.path()).unwrap_err().to_string().contains("not empty"));
        assert!(check_output(&dir.path().join("new")).is_ok());
    }
}
