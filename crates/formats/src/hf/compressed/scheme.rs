//! The `quantization_config` of a compressed-tensors checkpoint: its config groups (each a set of
//! targets, the weights' quantization arguments and a storage format), the `ignore` list, and
//! which group, if any, quantizes a given module, decided as compressed-tensors decides it.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::FormatError;

/// What kind of module a weight belongs to; compressed-tensors quantizes only Linear and
/// Embedding modules, and class-name targets match on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModuleKind {
    Linear,
    Embedding,
    /// Norms and anything else: never quantized.
    Other,
}

/// How a weight's scales are laid out (compressed-tensors' `QuantizationStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per output row.
    Channel,
    /// One scale per `n` consecutive values of a row.
    Group(usize),
    /// As `Group`, with a per-tensor global scale dividing every group scale (NVFP4).
    TensorGroup(usize),
    /// Anything else (`block`, `token`, `attn_head`), named for the error message.
    Other(&'static str),
}

/// The element type of quantized weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumType {
    Int,
    Float,
}

/// The weights' quantization arguments (compressed-tensors' `QuantizationArgs`), with the
/// fields that change the stored layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WeightArgs {
    pub bits: u32,
    pub ty: NumType,
    pub symmetric: bool,
    pub strategy: Strategy,
    /// `group_size` as written (compressed-tensors infers the format from it).
    pub group_size: Option<i64>,
    /// `actorder: "group"` (weights stored in a permuted column order with a `g_idx`).
    pub actorder_group: bool,
    /// Weights quantized on the fly rather than stored quantized.
    pub dynamic: bool,
    pub scale_dtype: Option<String>,
}

/// The storage format of a group's weights (compressed-tensors' `CompressionFormat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Weights stored as plain floats (`dense`, and `fakequant` checkpoints).
    Dense,
    /// One integer or FP8 value per byte in `weight` (`naive-quantized`, `int-quantized`,
    /// `float-quantized`: the same layout under three names).
    Unpacked,
    /// Integers packed into int32 words in `weight_packed` (`pack-quantized`).
    PackQuantized,
    /// `nvfp4-pack-quantized`.
    Nvfp4,
    /// `mxfp4-pack-quantized`.
    Mxfp4,
    /// A format Tessera does not read, by name.
    Unsupported(String),
}

impl Format {
    fn from_name(name: &str) -> Format {
        match name {
            "dense" | "fakequant" => Format::Dense,
            "naive-quantized" | "int-quantized" | "float-quantized" => Format::Unpacked,
            "pack-quantized" => Format::PackQuantized,
            "nvfp4-pack-quantized" => Format::Nvfp4,
            "mxfp4-pack-quantized" => Format::Mxfp4,
            other => Format::Unsupported(other.to_string()),
        }
    }
}

/// One config group.
#[derive(Clone, Debug)]
pub(crate) struct Scheme {
    /// The group's key in `config_groups`, for messages.
    pub name: String,
    /// `None` for a group that quantizes only activations.
    pub weights: Option<WeightArgs>,
    pub format: Format,
}

/// One entry of a `targets` or `ignore` list: a module name or class name (compressed-tensors
/// tries both), or a regular expression over module names.
#[derive(Debug)]
enum Target {
    Plain(String),
    Regex { source: String, regex: fancy_regex::Regex },
}

impl Target {
    fn parse(text: &str, path: &Path) -> Result<Target, FormatError> {
        let Some(pattern) = text.strip_prefix("re:") else { return Ok(Target::Plain(text.to_string())) };
        // Python's re.match anchors at the start only.
        let regex = fancy_regex::Regex::new(&format!("^(?:{pattern})")).map_err(|e| FormatError::Unsupported {
            path: path.to_path_buf(),
            what: format!("quantization_config: target {text:?} is not a regular expression Tessera reads: {e}"),
        })?;
        Ok(Target::Regex { source: text.to_string(), regex })
    }

    fn text(&self) -> &str {
        match self {
            Target::Plain(s) => s,
            Target::Regex { source, .. } => source,
        }
    }

    fn matches_name(&self, module: &str, path: &Path) -> Result<bool, FormatError> {
        match self {
            Target::Plain(name) => Ok(name == module),
            Target::Regex { source, regex } => regex.is_match(module).map_err(|e| FormatError::Unsupported {
                path: path.to_path_buf(),
                what: format!("quantization_config: matching target {source:?} against {module:?} failed: {e}"),
            }),
        }
    }

    fn matches_class(&self, kind: ModuleKind) -> bool {
        match (self, kind) {
            (Target::Plain(c), ModuleKind::Linear) => c == "Linear",
            (Target::Plain(c), ModuleKind::Embedding) => c == "Embedding",
            _ => false,
        }
    }
}

/// A parsed `quantization_config` with `quant_method: "compressed-tensors"`.
#[derive(Debug)]
pub(crate) struct QuantConfig {
    pub path: PathBuf,
    schemes: Vec<Scheme>,
    /// Targets in compressed-tensors' priority order (exact names, then regexes, each sorted),
    /// each with the scheme of the last group that lists it.
    targets: Vec<(Target, usize)>,
    ignore: Vec<Target>,
    /// `false` when `quantization_status` says the weights were saved uncompressed.
    compressed: bool,
}

/// The `quantization_config` of `config` if it is a compressed-tensors one.
pub(crate) fn parse(config: &Json, path: &Path) -> Result<Option<QuantConfig>, FormatError> {
    let Some(qc) = config.get("quantization_config").filter(|q| !q.is_null()) else { return Ok(None) };
    if qc.get("quant_method").and_then(Json::as_str) != Some("compressed-tensors") {
        return Ok(None);
    }
    let bad =
        |what: String| FormatError::Corrupt { path: path.to_path_buf(), what: format!("quantization_config: {what}") };
    let unsupported = |what: String| FormatError::Unsupported {
        path: path.to_path_buf(),
        what: format!("quantization_config: {what}"),
    };
    let Some(qc) = qc.as_object() else { return Ok(None) };
    for (key, what) in [
        ("sparsity_config", "sparsity compression (2:4 and bitmask formats)"),
        ("transform_config", "weight transforms (rotations)"),
    ] {
        if qc.get(key).is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty())) {
            // compressed-tensors writes an empty object when there is none; anything else
            // changes how the stored weights are read.
            let detail = qc.get(key).map(|v| v.to_string()).unwrap_or_default();
            return Err(unsupported(format!("{key} is set ({detail}): {what} is not supported")));
        }
    }
    let top_format = match qc.get("format") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.as_str()),
        Some(other) => return Err(bad(format!("\"format\" should be a string, found {other}"))),
    };
    let compressed = match qc.get("quantization_status") {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s == "compressed",
        Some(other) => return Err(bad(format!("\"quantization_status\" should be a string, found {other}"))),
    };
    let groups = qc
        .get("config_groups")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("\"config_groups\" is missing or not an object".into()))?;
    let mut schemes = Vec::new();
    let mut by_target: Vec<(String, usize)> = Vec::new();
    for (name, group) in groups {
        let (group, targets) = resolve_group(name, group).map_err(|e| bad(format!("config group {name:?}: {e}")))?;
        let weights = match group.get("weights") {
            None | Some(Json::Null) => None,
            Some(w) => Some(weight_args(w).map_err(|e| bad(format!("config group {name:?}: weights: {e}")))?),
        };
        let format = match group.get("format") {
            Some(Json::String(f)) => Format::from_name(f),
            None | Some(Json::Null) => match top_format {
                Some(f) if f != "mixed-precision" => Format::from_name(f),
                _ => infer_format(weights.as_ref(), group.get("input_activations")),
            },
            Some(other) => {
                return Err(bad(format!("config group {name:?}: \"format\" should be a string, found {other}")))
            }
        };
        let index = schemes.len();
        schemes.push(Scheme { name: name.clone(), weights, format });
        for t in targets {
            // As compressed-tensors builds its target map, a later group listing the same
            // target takes it over.
            by_target.retain(|(text, _)| *text != t);
            by_target.push((t, index));
        }
    }
    let mut targets = by_target
        .into_iter()
        .map(|(t, i)| Ok((Target::parse(&t, path)?, i)))
        .collect::<Result<Vec<_>, FormatError>>()?;
    // compressed-tensors' `match_targets` order: plain names before regexes, each sorted.
    targets.sort_by(|a, b| {
        let key = |t: &Target| (matches!(t, Target::Regex { .. }), t.text().to_string());
        key(&a.0).cmp(&key(&b.0))
    });
    let ignore = match qc.get("ignore") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(list)) => list
            .iter()
            .map(|v| {
                let text = v.as_str().ok_or_else(|| bad(format!("\"ignore\" holds {v}, not a module name")))?;
                Target::parse(text, path)
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(bad(format!("\"ignore\" should be a list, found {other}"))),
    };
    Ok(Some(QuantConfig { path: path.to_path_buf(), schemes, targets, ignore, compressed }))
}

impl QuantConfig {
    /// The group that quantizes `module` (a Hugging Face module name such as
    /// `model.layers.0.self_attn.q_proj`), or `None` when no group targets it, it is ignored,
    /// or the checkpoint's weights are stored uncompressed.
    pub(crate) fn scheme_for(&self, module: &str, kind: ModuleKind) -> Result<Option<&Scheme>, FormatError> {
        if !self.compressed || kind == ModuleKind::Other {
            return Ok(None);
        }
        for t in &self.ignore {
            if t.matches_name(module, &self.path)? || t.matches_class(kind) {
                return Ok(None);
            }
        }
        // Name matches take precedence over class matches, as in compressed-tensors.
        for (t, index) in &self.targets {
            if t.matches_name(module, &self.path)? {
                return Ok(Some(&self.schemes[*index]));
            }
        }
        Ok(self.targets.iter().find(|(t, _)| t.matches_class(kind)).map(|(_, index)| &self.schemes[*index]))
    }
}

/// A group is a scheme object, or a list of targets under a preset scheme's name.
fn resolve_group(name: &str, group: &Json) -> Result<(Json, Vec<String>), String> {
    let (scheme, targets) = match group {
        Json::Object(o) => (Json::Object(o.clone()), o.get("targets")),
        Json::Array(_) => {
            (preset(name).ok_or_else(|| format!("{name:?} is not a preset scheme Tessera knows"))?, Some(group))
        }
        other => return Err(format!("should be a scheme object or a list of targets, found {other}")),
    };
    let targets = targets
        .and_then(Json::as_array)
        .ok_or_else(|| "\"targets\" is missing or not a list".to_string())?
        .iter()
        .map(|t| t.as_str().map(str::to_string).ok_or_else(|| format!("\"targets\" holds {t}, not a string")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((scheme, targets))
}

/// compressed-tensors' preset schemes (`PRESET_SCHEMES`), as far as the stored weights go.
fn preset(name: &str) -> Option<Json> {
    use serde_json::json;
    let int_group = |bits: u32| json!({"num_bits": bits, "type": "int", "strategy": "group", "group_size": 128});
    let int_act = json!({"num_bits": 8, "type": "int", "strategy": "token", "dynamic": true});
    let fp4 = |strategy: &str, group: u32, scale: &str| json!({"num_bits": 4, "type": "float", "strategy": strategy, "group_size": group, "scale_dtype": scale});
    let fp8 = |strategy: &str| json!({"num_bits": 8, "type": "float", "strategy": strategy});
    let name = name.to_ascii_uppercase();
    Some(match name.as_str() {
        "UNQUANTIZED" => json!({}),
        "W8A8" | "INT8" => {
            json!({"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}, "input_activations": int_act})
        }
        "W4A16_ASYM" => {
            json!({"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": false}})
        }
        "W4AFP8" => json!({"weights": int_group(4), "input_activations": fp8("token")}),
        "FP8" => json!({"weights": fp8("tensor"), "input_activations": fp8("tensor")}),
        "FP8_DYNAMIC" => json!({"weights": fp8("channel"), "input_activations": fp8("token")}),
        "FP8_BLOCK" => {
            json!({"weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]}})
        }
        "NVFP4A16" => json!({"weights": fp4("tensor_group", 16, "torch.float8_e4m3fn")}),
        "NVFP4" => json!({"weights": fp4("tensor_group", 16, "torch.float8_e4m3fn"),
                          "input_activations": fp4("tensor_group", 16, "torch.float8_e4m3fn")}),
        "MXFP4A16" => json!({"weights": fp4("group", 32, "torch.uint8")}),
        "MXFP4" | "MXFP4XFP8" => json!({"weights": fp4("group", 32, "torch.uint8"), "input_activations": fp8("group")}),
        "MXFP6A16" | "MXFP6A8" | "MXFP8A16" | "MXFP8" => {
            let bits = if name.starts_with("MXFP6") { 6 } else { 8 };
            json!({"weights": {"num_bits": bits, "type": "float", "strategy": "group", "group_size": 32, "scale_dtype": "torch.uint8"}})
        }
        _ => {
            // W{2..8}A{4,8,16}: int weights in groups of 128, int activations per token below 16 bits.
            let rest = name.strip_prefix('W')?;
            let (w, a) = rest.split_once('A')?;
            let (w, a): (u32, u32) = (w.parse().ok()?, a.parse().ok()?);
            if !(2..=8).contains(&w) || ![4, 8, 16].contains(&a) || w > a {
                return None;
            }
            if a < 16 {
                json!({"weights": int_group(w), "input_activations": {"num_bits": a, "type": "int", "strategy": "token", "dynamic": true}})
            } else {
                json!({"weights": int_group(w)})
            }
        }
    })
}

/// Parses a `QuantizationArgs` object, applying compressed-tensors' defaults and its rule for
/// inferring the strategy from `group_size`.
fn weight_args(w: &Json) -> Result<WeightArgs, String> {
    let w = w.as_object().ok_or_else(|| format!("should be an object, found {w}"))?;
    let field = |k: &str| w.get(k).filter(|v| !v.is_null());
    let bits = match field("num_bits") {
        None => 8,
        Some(v) => v.as_u64().filter(|b| (1..=64).contains(b)).ok_or_else(|| format!("\"num_bits\" is {v}"))? as u32,
    };
    let ty = match field("type").map(|v| v.as_str().map(str::to_ascii_lowercase)) {
        None => NumType::Int,
        Some(Some(t)) if t == "int" => NumType::Int,
        Some(Some(t)) if t == "float" => NumType::Float,
        Some(_) => return Err(format!("\"type\" is {}, not \"int\" or \"float\"", w["type"])),
    };
    let symmetric = match field("symmetric") {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| format!("\"symmetric\" is {v}, not true or false"))?,
    };
    let group_size = match field("group_size") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| format!("\"group_size\" is {v}, not an integer"))?),
    };
    let group = |g: Option<i64>| -> Result<usize, String> {
        g.filter(|&g| g > 0)
            .and_then(|g| usize::try_from(g).ok())
            .ok_or_else(|| format!("a grouped strategy needs a positive \"group_size\", found {g:?}"))
    };
    let strategy = match field("strategy").map(|v| v.as_str().map(str::to_ascii_lowercase)) {
        None => match group_size {
            None => Strategy::Tensor,
            Some(-1) => Strategy::Channel,
            Some(g) => Strategy::Group(group(Some(g))?),
        },
        Some(Some(s)) => match s.as_str() {
            "tensor" => Strategy::Tensor,
            "channel" => Strategy::Channel,
            "group" => Strategy::Group(group(group_size)?),
            "tensor_group" => Strategy::TensorGroup(group(group_size)?),
            "block" => Strategy::Other("block"),
            "token" => Strategy::Other("token"),
            "attn_head" => Strategy::Other("attn_head"),
            other => return Err(format!("unknown strategy {other:?}")),
        },
        Some(None) => return Err(format!("\"strategy\" is {}, not a string", w["strategy"])),
    };
    let strategy = if field("block_structure").is_some() { Strategy::Other("block") } else { strategy };
    let actorder_group = match field("actorder") {
        None => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "group" | "dynamic"),
        Some(other) => return Err(format!("\"actorder\" is {other}")),
    };
    let dynamic = match field("dynamic") {
        None => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::String(_)) => true,
        Some(other) => return Err(format!("\"dynamic\" is {other}")),
    };
    let scale_dtype = field("scale_dtype").and_then(Json::as_str).map(str::to_string);
    Ok(WeightArgs { bits, ty, symmetric, strategy, group_size, actorder_group, dynamic, scale_dtype })
}

/// The format compressed-tensors picks for a Linear module when a group names none
/// (`infer_module_format`, in its priority order).
fn infer_format(weights: Option<&WeightArgs>, inputs: Option<&Json>) -> Format {
    let Some(w) = weights else { return Format::Dense };
    let inputs = inputs.filter(|v| !v.is_null());
    let inputs_float =
        inputs.and_then(|i| i.get("type")).and_then(Json::as_str).is_some_and(|t| t.eq_ignore_ascii_case("float"));
    let float = w.ty == NumType::Float;
    let uint8_scales = w.scale_dtype.as_deref() == Some("torch.uint8");
    match (float, w.bits, w.group_size) {
        (true, 4, Some(32)) => Format::Mxfp4,
        (true, 6, Some(32)) => Format::Unsupported("mxfp6-pack-quantized".into()),
        (true, 8, Some(32)) if uint8_scales => Format::Unsupported("mxfp8-quantized".into()),
        (true, 4, Some(16)) => Format::Nvfp4,
        (false, _, _) if inputs.is_some() => Format::Unpacked,
        (false, 1..=8, _) if !inputs_float => Format::PackQuantized,
        _ => Format::Unpacked,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(qc: Json) -> QuantConfig {
        parse(&json!({"quantization_config": qc}), Path::new("config.json")).unwrap().unwrap()
    }

    fn scheme_name(c: &QuantConfig, module: &str, kind: ModuleKind) -> Option<String> {
        c.scheme_for(module, kind).unwrap().map(|s| s.name.clone())
    }

    #[test]
    fn other_quantization_methods_are_not_ours() {
        let path = Path::new("config.json");
        assert!(parse(&json!({}), path).unwrap().is_none());
        assert!(parse(&json!({"quantization_config": {"quant_method": "fp8"}}), path).unwrap().is_none());
    }

    #[test]
    fn names_and_regexes_take_precedence_over_classes_and_ignore_wins() {
        let c = config(json!({
            "quant_method": "compressed-tensors", "format": "mixed-precision",
            "config_groups": {
                "fp8": {"targets": ["re:.*self_attn\\.[qkv]_proj$"], "weights": {"num_bits": 8, "type": "float"},
                        "input_activations": {"num_bits": 8, "type": "float"}, "format": "float-quantized"},
                "w4": {"targets": ["Linear"], "weights": {"num_bits": 4, "group_size": 128}},
                "exact": {"targets": ["model.layers.1.mlp.up_proj"], "weights": {"num_bits": 8, "group_size": -1}}
            },
            "ignore": ["lm_head", "re:.*layers\\.3\\..*"]
        }));
        let linear = ModuleKind::Linear;
        assert_eq!(scheme_name(&c, "model.layers.0.self_attn.q_proj", linear).as_deref(), Some("fp8"));
        assert_eq!(scheme_name(&c, "model.layers.0.self_attn.o_proj", linear).as_deref(), Some("w4"));
        assert_eq!(scheme_name(&c, "model.layers.1.mlp.up_proj", linear).as_deref(), Some("exact"));
        assert_eq!(scheme_name(&c, "lm_head", linear), None);
        assert_eq!(scheme_name(&c, "model.layers.3.mlp.up_proj", linear), None);
        assert_eq!(scheme_name(&c, "model.embed_tokens", ModuleKind::Embedding), None);
        assert_eq!(scheme_name(&c, "model.layers.0.self_attn.q_proj", ModuleKind::Other), None);
        let w4 = c.scheme_for("model.layers.0.mlp.up_proj", linear).unwrap().unwrap();
        assert_eq!(w4.format, Format::PackQuantized);
        let w = w4.weights.as_ref().unwrap();
        assert_eq!((w.bits, w.ty, w.symmetric, w.strategy), (4, NumType::Int, true, Strategy::Group(128)));
        let exact = c.scheme_for("model.layers.1.mlp.up_proj", linear).unwrap().unwrap();
        assert_eq!(exact.weights.as_ref().unwrap().strategy, Strategy::Channel);
    }

    #[test]
    fn formats_come_from_the_group_then_the_config_then_the_arguments() {
        let c = config(json!({
            "quant_method": "compressed-tensors", "format": "int-quantized",
            "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8}}}
        }));
        assert_eq!(c.schemes[0].format, Format::Unpacked);
        let inferred = |weights: Json, inputs: Json| {
            let c = config(json!({"quant_method": "compressed-tensors",
                "config_groups": {"g": {"targets": ["Linear"], "weights": weights, "input_activations": inputs}}}));
            c.schemes[0].format.clone()
        };
        let fp4 = |g: u32| json!({"num_bits": 4, "type": "float", "strategy": "group", "group_size": g});
        assert_eq!(inferred(fp4(16), Json::Null), Format::Nvfp4);
        assert_eq!(inferred(fp4(32), Json::Null), Format::Mxfp4);
        assert_eq!(inferred(json!({"num_bits": 4, "group_size": 128}), Json::Null), Format::PackQuantized);
        assert_eq!(inferred(json!({"num_bits": 8}), json!({"num_bits": 8})), Format::Unpacked);
        assert_eq!(inferred(json!({"num_bits": 8, "type": "float"}), Json::Null), Format::Unpacked);
        let mxfp8 = json!({"num_bits": 8, "type": "float", "group_size": 32, "scale_dtype": "torch.uint8"});
        assert_eq!(inferred(mxfp8, Json::Null), Format::Unsupported("mxfp8-quantized".into()));
    }

    #[test]
    fn presets_resolve_to_their_weight_arguments() {
        let c = config(json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                              "config_groups": {"W4A16": ["Linear"]}}));
        let w = c.schemes[0].weights.as_ref().unwrap();
        assert_eq!((w.bits, w.strategy), (4, Strategy::Group(128)));
        let c = config(json!({"quant_method": "compressed-tensors", "config_groups": {"NVFP4": ["Linear"]}}));
        assert_eq!(c.schemes[0].format, Format::Nvfp4);
        assert_eq!(c.schemes[0].weights.as_ref().unwrap().strategy, Strategy::TensorGroup(16));
        let e = parse(
            &json!({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"W9A16": ["Linear"]}}}),
            Path::new("config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"W9A16\" is not a preset scheme"), "{e}");
    }

    #[test]
    fn uncompressed_checkpoints_quantize_nothing() {
        let c = config(json!({"quant_method": "compressed-tensors", "quantization_status": "frozen",
                              "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8}}}}));
        assert_eq!(scheme_name(&c, "model.layers.0.mlp.up_proj", ModuleKind::Linear), None);
    }

    #[test]
    fn hostile_configs_are_named_errors() {
        let cases = [
            (json!({"quant_method": "compressed-tensors", "format": 3}), "\"format\" should be a string"),
            (json!({"quant_method": "compressed-tensors"}), "\"config_groups\" is missing"),
            (json!({"quant_method": "compressed-tensors", "config_groups": {"g": 3}}), "should be a scheme object"),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {}}}}),
                "\"targets\" is missing",
            ),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 0}}}}),
                "\"num_bits\" is 0",
            ),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {"strategy": "group"}}}}),
                "positive \"group_size\"",
            ),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["re:("]}}}),
                "not a regular expression",
            ),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {}, "sparsity_config": {"format": "sparse-24-bitmask"}}),
                "sparsity compression",
            ),
            (
                json!({"quant_method": "compressed-tensors", "config_groups": {}, "transform_config": {"config_groups": {}}}),
                "weight transforms",
            ),
            (json!({"quant_method": "compressed-tensors", "config_groups": {}, "ignore": [1]}), "\"ignore\" holds 1"),
        ];
        for (qc, want) in cases {
            let e = parse(&json!({"quantization_config": qc}), Path::new("config.json")).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want:?})");
        }
    }
}
