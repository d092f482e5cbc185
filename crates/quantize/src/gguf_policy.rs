//! Which tensor gets which type in a GGUF output: llama.cpp's `llama_tensor_get_type`
//! (`src/llama-quant.cpp`) for the file types Tessera writes, as `llama-quantize` applies it
//! without an importance matrix, so that a file from `tessera quantize` holds the same types, and
//! (the quantizers being ggml's reference ones) the same bytes, as llama.cpp's.
//!
//! Each format is one llama.cpp file type (`general.file_type`):
//!
//! | format | llama.cpp file type | what changes from the format's type (unless `pure`) |
//! |---|---|---|
//! | `q8_0` | `MOSTLY_Q8_0` (7) | nothing |
//! | `q4_0`, `q4_1`, `q5_0`, `q5_1` | `MOSTLY_Q4_0` (2), `Q4_1` (3), `Q5_0` (8), `Q5_1` (9) | output in Q6_K |
//! | `q4_k` | `MOSTLY_Q4_K_M` (15) | output Q6_K; `attn_v` and `ffn_down` of about half the layers Q6_K |
//! | `q5_k` | `MOSTLY_Q5_K_M` (17) | the same bumps as `q4_k` |
//! | `q6_k` | `MOSTLY_Q6_K` (18) | nothing |
//! | `mxfp4` | `MOSTLY_MXFP4_MOE` (38) | output and token embedding Q8_0 |
//!
//! "Output" is `output.weight`, or `token_embd.weight` when the model ties its embeddings (has
//! no `output.weight`). `q4_k` and `q5_k` are llama.cpp's `_M` mixes because those are the K-quant
//! files people use and compare; `pure` gives the plain type everywhere instead (llama-quantize's
//! `--pure`). One deliberate difference: llama.cpp's MXFP4 file type puts only MoE expert tensors
//! in MXFP4 and every other weight in Q8_0, which leaves a dense model with no MXFP4 at all;
//! Tessera's `mxfp4` puts every weight in MXFP4 except the token embedding and output, which stay
//! Q8_0 as llama.cpp keeps them (`llama-quantize --pure --token-embedding-type q8_0
//! --output-tensor-type q8_0 MXFP4_MOE` writes the same file).
//!
//! Rules of llama.cpp's that apply to every format: only weights of two or more dimensions are
//! quantized, and not norms, MoE router gates and a list of small or position tensors; a tensor
//! whose row length is not a whole number of the chosen type's blocks falls back (Q4_K to Q5_0,
//! Q5_K to Q5_1, Q6_K to Q8_0; to F16 when even 32 does not divide it), so Gemma 3's 640-wide
//! rows get Q5_0 under `q4_k`; an 8-expert model gets Q8_0 `attn_v`/`attn_k`; a 70B model gets
//! Q5_K rather than Q4_K `attn_v`. A tensor left unquantized keeps its source type.

use std::cmp::Ordering;

use tessera_core::{DType, Shape};
use tessera_formats::Metadata;

use crate::Format;

/// What the policy needs to know of the model (llama.cpp's hparams that the rules read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModelInfo {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
}

impl ModelInfo {
    /// Reads the hyperparameters from GGUF metadata.
    pub fn from_metadata(m: &Metadata) -> Result<ModelInfo, String> {
        let arch = m.architecture().map_err(|e| e.to_string())?.to_string();
        // Per-layer arrays (a few architectures) count by their first layer, as llama.cpp's
        // n_head() does.
        let first = |key: &str| {
            let v = m.get(&format!("{arch}.{key}"))?;
            v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()).map(|x| x as usize)
        };
        let n_layer = first("block_count").ok_or_else(|| format!("metadata key {arch}.block_count is missing"))?;
        let n_head = first("attention.head_count").unwrap_or(0);
        let n_head_kv = first("attention.head_count_kv").unwrap_or(n_head);
        let n_expert = first("expert_count").unwrap_or(0);
        Ok(ModelInfo { arch, n_layer, n_head, n_head_kv, n_expert })
    }

    /// llama.cpp's `LLM_TYPE_70B`, the only model size its quantization rules look at.
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// llama.cpp's `llama_ftype` value for a GGUF format, written as `general.file_type`, and the
/// type its weights default to.
pub(crate) fn file_type(format: Format) -> Option<(u32, DType)> {
    Some(match format {
        Format::F32 => (0, DType::F32),
        Format::F16 => (1, DType::F16),
        Format::Bf16 => (32, DType::BF16),
        Format::Q4_0 => (2, DType::Q4_0),
        Format::Q4_1 => (3, DType::Q4_1),
        Format::Q8_0 => (7, DType::Q8_0),
        Format::Q5_0 => (8, DType::Q5_0),
        Format::Q5_1 => (9, DType::Q5_1),
        Format::Q4K => (15, DType::Q4_K),
        Format::Q5K => (17, DType::Q5_K),
        Format::Q6K => (18, DType::Q6_K),
        Format::Mxfp4 => (38, DType::MXFP4),
        _ => return None,
    })
}

/// The order llama.cpp writes tensors in (`llama_model_loader::weight_name_comparer`): by block
/// number (tensors outside blocks first), then by name. The `_M` mixes count `attn_v` and
/// `ffn_down` tensors in this order.
pub(crate) fn llama_cpp_order(a: &str, b: &str) -> Ordering {
    layer_of(a).cmp(&layer_of(b)).then_with(|| a.cmp(b))
}

/// The `N` of a `blk.N.` prefix, or -1, as llama.cpp's `sscanf(name, "blk.%d.", ...)` reads it.
fn layer_of(name: &str) -> i64 {
    let Some(rest) = name.strip_prefix("blk.") else { return -1 };
    let digits = rest.find(|c: char| !c.is_ascii_digit()).map_or(rest, |end| &rest[..end]);
    digits.parse().unwrap_or(-1)
}

/// One tensor as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorInfo<'a> {
    pub name: &'a str,
    pub shape: &'a Shape,
    pub dtype: DType,
}

/// Chooses the output type of each tensor (same order as `tensors`, which should be in
/// [`llama_cpp_order`]); a tensor whose choice equals its source type is copied as it is.
pub(crate) fn plan(
    format: Format,
    pure: bool,
    model: &ModelInfo,
    tensors: &[TensorInfo<'_>],
) -> Result<Vec<DType>, String> {
    let (_, default) = file_type(format).ok_or_else(|| format!("{format} is not a GGUF format"))?;
    let mut state = State {
        format,
        model,
        default,
        tied: !tensors.iter().any(|t| t.name == "output.weight"),
        n_attention_wv: tensors.iter().filter(|t| category(t.name).is_attn_v()).count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
    };
    tensors
        .iter()
        .map(|t| {
            if !allows_quantization(t.name, t.shape) {
                return Ok(t.dtype);
            }
            let chosen = if pure { default } else { state.choose(t)? };
            fallback(t.name, t.shape.cols(), chosen)
        })
        .collect()
}

/// ggml's `ggml_n_dims`: dimensions up to the last one longer than 1 (at least 1).
fn ggml_n_dims(shape: &Shape) -> usize {
    // Shapes are outermost first; ggml counts from the innermost.
    let dims = shape.dims();
    dims.iter().position(|&d| d > 1).map_or(1, |first| (dims.len() - first).max(1))
}

/// llama.cpp's `tensor_allows_quantization` with default parameters (architecture-specific
/// exceptions for architectures Tessera does not read are left out).
fn allows_quantization(name: &str, shape: &Shape) -> bool {
    const NEVER: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    ggml_n_dims(shape) >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER.iter().any(|s| name.contains(s))
}

/// llama.cpp's `tensor_type_fallback`: a type whose blocks do not divide the row length is
/// replaced by a 32-value type of about the same size, or F16.
fn fallback(name: &str, cols: usize, chosen: DType) -> Result<DType, String> {
    if cols.is_multiple_of(chosen.block_len()) {
        return Ok(chosen);
    }
    let smaller = match chosen {
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        t if t.block_len() <= 32 => t,
        t => return Err(format!("{name}: rows of {cols} values are not whole {t} blocks, and {t} has no fallback")),
    };
    Ok(if cols.is_multiple_of(smaller.block_len()) { smaller } else { DType::F16 })
}

/// llama.cpp's `tensor_category`, from the name alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    /// Attention V-like tensors, which the mixes give more bits.
    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
    }
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    // Checked in llama.cpp's order: "attn_qkv.weight" before "attn_v.weight" and so on.
    const BY_SUBSTRING: [(&str, Category); 9] = [
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    BY_SUBSTRING.iter().find(|(s, _)| name.contains(s)).map_or(Category::Other, |&(_, c)| c)
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The counters `llama_tensor_get_type_impl` keeps while walking the tensors.
struct State<'m> {
    format: Format,
    model: &'m ModelInfo,
    default: DType,
    tied: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
}

impl State<'_> {
    /// `llama_tensor_get_type_impl`, reduced to the branches the formats here reach.
    fn choose(&mut self, t: &TensorInfo<'_>) -> Result<DType, String> {
        use Format::*;
        let (format, model) = (self.format, self.model);
        if format.is_float() {
            // llama.cpp's F32/F16/BF16 file types convert every weight matrix, with no mixes.
            return Ok(self.default);
        }
        let mixed = matches!(format, Q4K | Q5K);
        let cat = category(t.name);
        let mut new = self.default;
        if cat == Category::Output || (self.tied && cat == Category::TokenEmbd) {
            if format == Mxfp4 || model.arch == "falcon" || !t.shape.cols().is_multiple_of(new.block_len()) {
                new = DType::Q8_0;
            } else if new != DType::Q8_0 {
                new = DType::Q6_K;
            }
        } else if format == Mxfp4 {
            // llama.cpp: MXFP4 for MoE experts, Q8_0 for the rest; Tessera: MXFP4 for every
            // weight but the token embedding (see the module doc).
            if cat == Category::TokenEmbd {
                new = DType::Q8_0;
            }
        } else if cat == Category::TokenEmbd {
            // Only the 1-2 bit file types change an untied token embedding.
        } else if cat.is_attn_v() {
            if mixed && use_more_bits(self.i_attention_wv, self.n_attention_wv) {
                new = DType::Q6_K;
            }
            if model.is_70b() && matches!(new, DType::Q3_K | DType::Q4_K) {
                new = DType::Q5_K;
            }
            if model.n_expert == 8 {
                new = DType::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if model.n_expert == 8 {
                new = DType::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = self.layer_info(self.i_ffn_down, t.name)?;
            if format == Q4K {
                if model.arch == "falcon" {
                    new = if i_layer < n_layer / 16 {
                        DType::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        DType::Q5_K
                    } else {
                        DType::Q4_K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    new = DType::Q6_K;
                }
            } else if format == Q5K && use_more_bits(i_layer, n_layer) {
                new = DType::Q6_K;
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if model.arch != "falcon" && model.n_expert == 8 && format == Q4K {
                new = DType::Q5_K;
            }
        } else if cat == Category::FfnGate {
            self.layer_info(self.i_ffn_gate, t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(new)
    }

    /// llama.cpp's `layer_info`: the running count for dense models; for MoE models, whose
    /// expert tensors do not come one per layer, the block number in the name.
    fn layer_info(&self, counter: usize, name: &str) -> Result<(usize, usize), String> {
        let n_layer = self.model.n_layer;
        if self.model.n_expert <= 1 {
            return Ok((counter, n_layer));
        }
        match usize::try_from(layer_of(name)) {
            Ok(i) if i < n_layer => Ok((i, n_layer)),
            Ok(i) => Err(format!("{name}: block {i} is outside the model's {n_layer} blocks")),
            Err(_) => Err(format!("{name}: an expert model's FFN tensor should be named blk.N.*")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(n_layer: usize) -> ModelInfo {
        ModelInfo { arch: "llama".into(), n_layer, n_head: 9, n_head_kv: 3, n_expert: 0 }
    }

    /// A SmolLM2-like model: 576-wide rows, 1536-wide FFN, tied embeddings.
    fn smollm2_like(n_layer: usize) -> Vec<(String, Shape, DType)> {
        let mut t = vec![
            ("token_embd.weight".to_string(), Shape::from([49152, 576]), DType::Q8_0),
            ("output_norm.weight".to_string(), Shape::from([576]), DType::F32),
        ];
        for i in 0..n_layer {
            for (name, shape) in [
                ("attn_norm.weight", Shape::from([576])),
                ("attn_q.weight", Shape::from([576, 576])),
                ("attn_k.weight", Shape::from([192, 576])),
                ("attn_v.weight", Shape::from([192, 576])),
                ("attn_output.weight", Shape::from([576, 576])),
                ("ffn_norm.weight", Shape::from([576])),
                ("ffn_gate.weight", Shape::from([1536, 576])),
                ("ffn_up.weight", Shape::from([1536, 576])),
                ("ffn_down.weight", Shape::from([576, 1536])),
            ] {
                let dtype = if shape.rank() == 1 { DType::F32 } else { DType::Q4_1 };
                t.push((format!("blk.{i}.{name}"), shape, dtype));
            }
        }
        t.sort_by(|a, b| llama_cpp_order(&a.0, &b.0));
        t
    }

    fn run(format: Format, pure: bool, model: &ModelInfo, t: &[(String, Shape, DType)]) -> Vec<(String, DType)> {
        let infos: Vec<TensorInfo> =
            t.iter().map(|(name, shape, dtype)| TensorInfo { name, shape, dtype: *dtype }).collect();
        let types = plan(format, pure, model, &infos).unwrap();
        t.iter().map(|x| x.0.clone()).zip(types).collect()
    }

    fn type_of(plan: &[(String, DType)], name: &str) -> DType {
        plan.iter().find(|p| p.0 == name).unwrap_or_else(|| panic!("{name} not planned")).1
    }

    #[test]
    fn order_is_llama_cpps() {
        let mut names =
            vec!["blk.10.attn_q.weight", "output.weight", "blk.2.ffn_up.weight", "blk.2.attn_k.weight", "a"];
        names.sort_by(|a, b| llama_cpp_order(a, b));
        assert_eq!(names, ["a", "output.weight", "blk.2.attn_k.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"]);
        assert_eq!(layer_of("blk.x.attn"), -1);
    }

    #[test]
    fn norms_and_one_row_tensors_keep_their_type() {
        let t = smollm2_like(2);
        for format in [Format::Q8_0, Format::Q4K, Format::Mxfp4] {
            for (name, dtype) in run(format, false, &dense(2), &t) {
                if name.ends_with("norm.weight") {
                    assert_eq!(dtype, DType::F32, "{format} {name}");
                }
            }
        }
        assert!(!allows_quantization("x.weight", &Shape::from([1, 64])));
        assert!(allows_quantization("x.weight", &Shape::from([2, 64])));
        assert!(!allows_quantization("x.bias", &Shape::from([2, 64])));
    }

    #[test]
    fn the_tied_embedding_is_quantized_as_the_output() {
        let t = smollm2_like(2);
        // Q6_K does not divide 576, so the output's Q6_K falls back to Q8_0.
        for format in [Format::Q4_0, Format::Q4_1, Format::Q5_0, Format::Q5_1, Format::Q8_0, Format::Q6K] {
            assert_eq!(type_of(&run(format, false, &dense(2), &t), "token_embd.weight"), DType::Q8_0, "{format}");
        }
        let mut wide = t.clone();
        let embd = wide.iter_mut().find(|x| x.0 == "token_embd.weight").unwrap();
        embd.1 = Shape::from([49152, 1024]);
        assert_eq!(type_of(&run(Format::Q4_0, false, &dense(2), &wide), "token_embd.weight"), DType::Q6_K);
        assert_eq!(type_of(&run(Format::Q4_0, true, &dense(2), &wide), "token_embd.weight"), DType::Q4_0);
        assert_eq!(type_of(&run(Format::Mxfp4, false, &dense(2), &wide), "token_embd.weight"), DType::Q8_0);
        // With an output tensor, the embedding keeps the format's type.
        wide.push(("output.weight".into(), Shape::from([49152, 1024]), DType::F16));
        let p = run(Format::Q4_0, false, &dense(2), &wide);
        assert_eq!((type_of(&p, "token_embd.weight"), type_of(&p, "output.weight")), (DType::Q4_0, DType::Q6_K));
    }

    #[test]
    fn k_quants_fall_back_on_rows_that_are_not_whole_super_blocks() {
        let p = run(Format::Q4K, true, &dense(2), &smollm2_like(2));
        assert_eq!(type_of(&p, "blk.0.attn_q.weight"), DType::Q5_0);
        assert_eq!(type_of(&p, "blk.0.ffn_down.weight"), DType::Q4_K);
        let p = run(Format::Q5K, true, &dense(2), &smollm2_like(2));
        assert_eq!(type_of(&p, "blk.0.attn_q.weight"), DType::Q5_1);
        let p = run(Format::Q6K, true, &dense(2), &smollm2_like(2));
        assert_eq!(type_of(&p, "blk.0.attn_q.weight"), DType::Q8_0);
        assert_eq!(fallback("t", 48, DType::Q4_0), Ok(DType::F16));
        assert_eq!(fallback("t", 48, DType::Q6_K), Ok(DType::F16));
        assert!(fallback("t", 48, DType::Q8_K).is_err());
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_some_attn_v_and_ffn_down() {
        let n = 30;
        let p = run(Format::Q4K, false, &dense(n), &smollm2_like(n));
        let bumped: Vec<usize> = (0..n).filter(|&i| use_more_bits(i, n)).collect();
        assert_eq!(bumped, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
        for i in 0..n {
            let (v, down) =
                (type_of(&p, &format!("blk.{i}.attn_v.weight")), type_of(&p, &format!("blk.{i}.ffn_down.weight")));
            // attn_v rows are 576 wide: Q6_K falls back to Q8_0, Q4_K to Q5_0.
            let expected = if bumped.contains(&i) { (DType::Q8_0, DType::Q6_K) } else { (DType::Q5_0, DType::Q4_K) };
            assert_eq!((v, down), expected, "layer {i}");
        }
    }

    #[test]
    fn model_info_reads_metadata() {
        let mut m = Metadata::new();
        m.insert("general.architecture", tessera_formats::Value::String("llama".into()));
        assert!(ModelInfo::from_metadata(&m).unwrap_err().contains("llama.block_count"));
        m.insert("llama.block_count", tessera_formats::Value::U32(80));
        m.insert("llama.attention.head_count", tessera_formats::Value::U32(64));
        m.insert("llama.attention.head_count_kv", tessera_formats::Value::U32(8));
        let info = ModelInfo::from_metadata(&m).unwrap();
        assert_eq!(info, ModelInfo { arch: "llama".into(), n_layer: 80, n_head: 64, n_head_kv: 8, n_expert: 0 });
        assert!(info.is_70b());
    }

    /// Dense models from llama.cpp's own type-selection snapshots (trimmed copies in
    /// tests/fixtures/quantize/llama_cpp_types): file, architecture, head dimension.
    const SNAPSHOTS: [(&str, &str, usize); 3] =
        [("qwen3-0.6b", "qwen3", 128), ("gemma-3-4b-it", "gemma3", 256), ("meta-llama-3.1-70b-instruct", "llama", 128)];

    /// One `[FTYPE] default` section of a snapshot: the tensors whose type is not the default.
    struct Section {
        ftype: String,
        default: String,
        overrides: Vec<(String, String)>,
    }

    /// A snapshot: the numbers of its header, then its sections.
    fn read_snapshot(file: &str) -> (Vec<(String, usize)>, Vec<Section>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/quantize/llama_cpp_types")
            .join(format!("{file}.schema"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut numbers = Vec::new();
        let mut sections: Vec<Section> = Vec::new();
        for line in text.lines() {
            if let Some(header) = line.strip_prefix("# n_embd=") {
                for kv in format!("n_embd={header}").split(", ") {
                    let (k, v) = kv.split_once('=').unwrap();
                    numbers.push((k.to_string(), v.parse().unwrap()));
                }
            } else if let Some(rest) = line.strip_prefix('[') {
                let (ftype, default) = rest.split_once("] ").unwrap();
                sections.push(Section { ftype: ftype.into(), default: default.into(), overrides: Vec::new() });
            } else if !line.is_empty() && !line.starts_with('#') {
                let (name, dtype) = line.rsplit_once(' ').unwrap();
                sections.last_mut().unwrap().overrides.push((name.to_string(), dtype.to_string()));
            }
        }
        (numbers, sections)
    }

    #[test]
    fn types_match_llama_cpps_snapshots() {
        for (file, arch, head_dim) in SNAPSHOTS {
            let (numbers, sections) = read_snapshot(file);
            let n = |key: &str| numbers.iter().find(|x| x.0 == key).unwrap_or_else(|| panic!("{file}: {key}")).1;
            let (embd, ff, vocab, n_layer, heads, kv) =
                (n("n_embd"), n("n_ff"), n("n_vocab"), n("n_layer"), n("n_head"), n("n_head_kv"));
            let model = ModelInfo { arch: arch.into(), n_layer, n_head: heads, n_head_kv: kv, n_expert: 0 };
            // Whether the file has an output tensor shows in the Q4_0 section, which gives the
            // output Q6_K.
            let q4_0 = sections.iter().find(|s| s.ftype == "Q4_0").expect("a Q4_0 section");
            let untied = q4_0.overrides.iter().any(|o| o.0 == "output.weight");
            let mut t = vec![("token_embd.weight".to_string(), Shape::from([vocab, embd]), DType::F16)];
            if untied {
                t.push(("output.weight".to_string(), Shape::from([vocab, embd]), DType::F16));
            }
            for i in 0..n_layer {
                for (name, shape) in [
                    ("attn_q.weight", [heads * head_dim, embd]),
                    ("attn_k.weight", [kv * head_dim, embd]),
                    ("attn_v.weight", [kv * head_dim, embd]),
                    ("attn_output.weight", [embd, heads * head_dim]),
                    ("ffn_gate.weight", [ff, embd]),
                    ("ffn_up.weight", [ff, embd]),
                    ("ffn_down.weight", [embd, ff]),
                ] {
                    t.push((format!("blk.{i}.{name}"), Shape::from(shape), DType::F16));
                }
            }
            t.sort_by(|a, b| llama_cpp_order(&a.0, &b.0));
            assert_eq!(sections.len(), 8, "{file}: sections");
            for Section { ftype, default, overrides } in &sections {
                let format = match ftype.as_str() {
                    "Q4_0" => Format::Q4_0,
                    "Q4_1" => Format::Q4_1,
                    "Q5_0" => Format::Q5_0,
                    "Q5_1" => Format::Q5_1,
                    "Q8_0" => Format::Q8_0,
                    "Q4_K_M" => Format::Q4K,
                    "Q5_K_M" => Format::Q5K,
                    "Q6_K" => Format::Q6K,
                    other => panic!("{file}: unexpected section {other}"),
                };
                let planned = run(format, false, &model, &t);
                for (name, _) in overrides {
                    assert!(planned.iter().any(|p| &p.0 == name), "{file} {ftype}: {name} is not in the model");
                }
                for (name, got) in planned {
                    let want = overrides.iter().find(|o| o.0 == name).map_or(default, |o| &o.1);
                    assert_eq!(got, DType::from_name(want).unwrap(), "{file} {ftype}: {name}");
                }
            }
        }
    }

    #[test]
    fn expert_models_need_block_numbers_in_ffn_names() {
        let model = ModelInfo { n_expert: 8, ..dense(2) };
        let t = [("ffn_down.weight".to_string(), Shape::from([8, 64, 256]), DType::F16)];
        let infos: Vec<TensorInfo> =
            t.iter().map(|(name, shape, dtype)| TensorInfo { name, shape, dtype: *dtype }).collect();
        assert!(plan(Format::Q4K, false, &model, &infos).unwrap_err().contains("blk.N"));
    }
}
