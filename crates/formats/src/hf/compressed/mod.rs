//! compressed-tensors checkpoints: a Hugging Face directory whose `config.json` has
//! `quantization_config.quant_method == "compressed-tensors"` (the quantized layout vLLM loads,
//! written by llm-compressor). Each quantized Linear `X` stores its weight in one of these
//! layouts (the config group that targets `X` names it in `format`, or compressed-tensors infers
//! it from the group's arguments), and Tessera presents it as follows, under the GGUF name of
//! `X.weight` (say `blk.N.attn_q.weight`) and, where the checkpoint keeps a scale outside the
//! weight, a companion `blk.N.attn_q.scale` (F32, `[rows]` per output channel or `[1]` per
//! tensor, as llama.cpp names optional scale tensors) by which matmul outputs are multiplied:
//!
//! | format | stored | Tessera |
//! |---|---|---|
//! | `int-quantized`, `naive-quantized` (8-bit int, per channel or tensor; INT8 W8A8) | `weight` int8, `weight_scale` | `I8` (zero copy) + `.scale` |
//! | `float-quantized`, `naive-quantized` (FP8 E4M3, per channel or tensor) | `weight` F8_E4M3, `weight_scale` | `F8_E4M3` (zero copy) + `.scale` |
//! | `pack-quantized` (1, 2 or 4-bit int; W4A16) | `weight_packed` int32, `weight_scale`, `weight_shape`, `weight_zero_point` if asymmetric | `Q4_0`, or `Q4_1` if asymmetric |
//! | `pack-quantized` (8-bit int; W8A16), and grouped int8 in the unpacked formats | as above, or `weight` int8 | `Q8_0` |
//! | `int-quantized`, `naive-quantized` (int of 4 bits or fewer) | `weight` int8 | `Q4_0` / `Q4_1` |
//! | `nvfp4-pack-quantized` (NVFP4) | `weight_packed` uint8, `weight_scale` F8_E4M3 per 16, `weight_global_scale` | `NVFP4` + `.scale` `[1]` = 1 / global scale |
//! | `mxfp4-pack-quantized` (MXFP4) | `weight_packed` uint8, `weight_scale` uint8 E8M0 per 32 | `MXFP4` |
//!
//! Repacking into ggml blocks is lossless or refused: an integer group with one scale is exactly
//! Q4_0 or Q8_0 blocks with `d` = that scale when the scale is exactly an f16 (bf16 and f32
//! scales are checked), and an asymmetric one is Q4_1 with `m = -(zero + 8) * scale` when that
//! too is exactly an f16; NVFP4's E4M3 scale bytes are ggml's UE4M3 bytes, and compressed-tensors
//! divides them by the global scale, which the `.scale` tensor applies to the output. Packed
//! formats are always repacked (owned bytes); the unpacked ones stay mapped.
//!
//! Activation quantization in the config is not stored in the weights: INT8 W8A8 weights meet
//! activations quantized per row at run time, as `MatMul` defines for I8; FP8 weights and
//! activation-quantized NVFP4 (W4A4) run weight-only with f32 activations; static input scales,
//! `kv_cache_scheme` and its `k_scale`/`v_scale` are not used. Modules in `ignore`, modules no
//! group targets, and non-Linear tensors (norms, embeddings unless a group targets `Embedding`)
//! load as in any Hugging Face directory.
//!
//! Refused with an error naming the tensor or group: asymmetric weights whose Q4_1 form would
//! be inexact, asymmetric 8-bit weights, `actorder: "group"` and `weight_g_idx`, block-wise
//! scales (`block_structure`, FP8 block), 3/5/6/7-bit packing, dynamic weights, sparsity and
//! transform configs, MXFP6/MXFP8 and other formats, quantized embeddings that need a `.scale`,
//! and any tensor whose dtype or shape is not what its format stores.

mod repack;
mod scheme;

use std::collections::BTreeMap;

use safetensors::tensor::Dtype;
use tessera_core::{DType, Shape};

use super::names;
use super::{plain_entry, Arch, RawTensor};
use crate::{FormatError, TensorBytes, TensorEntry};
use repack::{Culprit, Grid, IntRows, QK32};
use scheme::{Format, ModuleKind, NumType, Scheme, Strategy, WeightArgs};

pub(crate) use scheme::{parse, QuantConfig};

/// The parameters compressed-tensors stores for one module's weight.
#[derive(Default)]
struct Parts<'a> {
    weight: Option<&'a RawTensor>,
    packed: Option<&'a RawTensor>,
    scale: Option<&'a RawTensor>,
    shape: Option<&'a RawTensor>,
    zero_point: Option<&'a RawTensor>,
    global_scale: Option<&'a RawTensor>,
    g_idx: Option<&'a RawTensor>,
}

impl<'a> Parts<'a> {
    fn slot(&mut self, suffix: &str) -> Option<&mut Option<&'a RawTensor>> {
        Some(match suffix {
            "weight" => &mut self.weight,
            "weight_packed" => &mut self.packed,
            "weight_scale" => &mut self.scale,
            "weight_shape" => &mut self.shape,
            "weight_zero_point" => &mut self.zero_point,
            "weight_global_scale" => &mut self.global_scale,
            "weight_g_idx" => &mut self.g_idx,
            _ => return None,
        })
    }

    fn any(&self) -> Option<&'a RawTensor> {
        [self.weight, self.packed, self.scale, self.shape, self.zero_point, self.global_scale, self.g_idx]
            .into_iter()
            .flatten()
            .next()
    }
}

/// How one module's weight is stored and what it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Plain `weight` (F32, F16, BF16), as in any Hugging Face checkpoint.
    Plain,
    /// `weight` int8 with a per-channel or per-tensor scale: I8 + `.scale`.
    I8(Strategy),
    /// `weight` F8_E4M3 with a per-channel or per-tensor scale: F8_E4M3 + `.scale`.
    Fp8(Strategy),
    /// Integers of `bits` bits regrouped into `dtype` blocks, from `weight_packed` or from
    /// one-per-byte `weight`; Q4_1 for asymmetric ones.
    IntBlocks {
        dtype: DType,
        bits: u32,
        packed: bool,
        strategy: Strategy,
    },
    /// NVFP4, with a `.scale` when the checkpoint has a global scale.
    Nvfp4 {
        global: bool,
    },
    Mxfp4,
}

/// Converts every tensor of a compressed-tensors checkpoint into `out`.
pub(crate) fn convert(
    raws: &[RawTensor],
    arch: Arch,
    config: &QuantConfig,
    out: &mut Vec<TensorEntry>,
) -> Result<(), FormatError> {
    let mut modules: BTreeMap<&str, Parts<'_>> = BTreeMap::new();
    for raw in raws {
        let split = raw.name.rsplit_once('.');
        let slot = split
            .and_then(|(module, suffix)| Some((module, Parts::default().slot(suffix).is_some().then_some(suffix)?)));
        match slot {
            Some((module, suffix)) => {
                let parts = modules.entry(module).or_default();
                if let Some(s) = parts.slot(suffix) {
                    *s = Some(raw);
                }
            }
            // Biases pass through; activation and KV-cache scales map to nothing and are skipped.
            None => out.extend(plain_entry(raw, arch)?),
        }
    }
    for (module, parts) in &modules {
        let Some(name) = names::gguf_name(arch, &format!("{module}.weight")) else { continue };
        let kind = module_kind(&name);
        let m = Module { module, name: &name, kind, config };
        let scheme = config.scheme_for(module, kind)?;
        let layout = match scheme {
            Some(s) => m.layout(s)?,
            None => Layout::Plain,
        };
        m.convert(layout, parts, arch, out)?;
    }
    Ok(())
}

/// Linear and Embedding weights by their GGUF names.
fn module_kind(gguf_name: &str) -> ModuleKind {
    let stem = gguf_name.strip_suffix(".weight").unwrap_or(gguf_name);
    let stem = match stem.strip_prefix("blk.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, s)| s),
        None => stem,
    };
    match stem {
        "token_embd" => ModuleKind::Embedding,
        "output" | "attn_q" | "attn_k" | "attn_v" | "attn_output" | "ffn_gate" | "ffn_up" | "ffn_down" => {
            ModuleKind::Linear
        }
        _ => ModuleKind::Other,
    }
}

/// One module being converted, for its error messages.
struct Module<'a> {
    /// The Hugging Face module name.
    module: &'a str,
    /// The GGUF name of its weight.
    name: &'a str,
    kind: ModuleKind,
    config: &'a QuantConfig,
}

impl Module<'_> {
    fn unsupported(&self, scheme: &Scheme, what: String) -> FormatError {
        FormatError::Unsupported {
            path: self.config.path.clone(),
            what: format!("{}: config group {:?}: {what}", self.module, scheme.name),
        }
    }

    fn corrupt(&self, raw: &RawTensor, what: impl std::fmt::Display) -> FormatError {
        FormatError::Corrupt { path: raw.file.clone(), what: format!("{}: {what}", raw.name) }
    }

    /// The layout `scheme` stores this module's weight in, or an error naming what Tessera
    /// does not read.
    fn layout(&self, scheme: &Scheme) -> Result<Layout, FormatError> {
        let Some(w) = &scheme.weights else { return Ok(Layout::Plain) };
        let no = |what: String| self.unsupported(scheme, what);
        if let Format::Unsupported(name) = &scheme.format {
            return Err(no(format!(
                "format {name:?} is not supported (Tessera reads int-quantized, float-quantized, naive-quantized, \
                 pack-quantized, nvfp4-pack-quantized and mxfp4-pack-quantized)"
            )));
        }
        if scheme.format == Format::Dense {
            return Ok(Layout::Plain);
        }
        if w.dynamic {
            return Err(
                no("dynamically quantized weights are not stored quantized; Tessera does not read them".into()),
            );
        }
        if w.actorder_group {
            return Err(no(
                "activation ordering (actorder \"group\", weights permuted by g_idx) is not supported".into()
            ));
        }
        if let Strategy::Other(s) = w.strategy {
            return Err(no(if s == "block" {
                "block-wise weight scales (block_structure, as FP8 block quantization uses) are not supported".into()
            } else {
                format!("weight strategy {s:?} is not supported")
            }));
        }
        let WeightArgs { bits, ty, symmetric, strategy, .. } = *w;
        let int4_dtype = if symmetric { DType::Q4_0 } else { DType::Q4_1 };
        let asym8 = || {
            no(format!(
                "asymmetric {bits}-bit integer weights are not supported (ggml has no exact block type for them)"
            ))
        };
        let q8_group = |g: usize| {
            if g.is_multiple_of(QK32) {
                Ok(())
            } else {
                Err(no(format!("group size {g} is not a multiple of 32, the length of ggml's Q4/Q8 blocks")))
            }
        };
        let layout = match (&scheme.format, ty) {
            (Format::Unpacked, NumType::Int) => {
                if !(1..=8).contains(&bits) {
                    return Err(no(format!("{bits}-bit integer weights are not supported")));
                }
                match strategy {
                    Strategy::TensorGroup(_) => {
                        return Err(no("integer weights with a global scale are not supported".into()))
                    }
                    Strategy::Group(g) => q8_group(g)?,
                    _ => {}
                }
                if bits <= 4 {
                    Layout::IntBlocks { dtype: int4_dtype, bits, packed: false, strategy }
                } else if !symmetric {
                    return Err(asym8());
                } else if let Strategy::Group(_) = strategy {
                    Layout::IntBlocks { dtype: DType::Q8_0, bits, packed: false, strategy }
                } else {
                    Layout::I8(strategy)
                }
            }
            (Format::Unpacked, NumType::Float) => {
                if bits != 8 {
                    return Err(no(format!(
                        "{bits}-bit float weights in an unpacked format are not supported (FP8 is 8)"
                    )));
                }
                if !symmetric {
                    return Err(no("asymmetric FP8 weights are not supported".into()));
                }
                match strategy {
                    Strategy::Tensor | Strategy::Channel => Layout::Fp8(strategy),
                    _ => {
                        return Err(no(
                            "FP8 weights with group scales are not supported (per tensor or channel only)".into()
                        ))
                    }
                }
            }
            (Format::PackQuantized, NumType::Int) => {
                if ![1, 2, 4, 8].contains(&bits) {
                    // Dense packing of widths that do not divide 32 changed between
                    // compressed-tensors versions; those widths are refused rather than guessed.
                    return Err(no(format!("{bits}-bit packed weights are not supported (1, 2, 4 and 8 bits are)")));
                }
                match strategy {
                    Strategy::TensorGroup(_) => {
                        return Err(no("integer weights with a global scale are not supported".into()))
                    }
                    Strategy::Group(g) => q8_group(g)?,
                    _ => {}
                }
                match (bits, symmetric) {
                    (8, false) => return Err(asym8()),
                    (8, true) => Layout::IntBlocks { dtype: DType::Q8_0, bits, packed: true, strategy },
                    _ => Layout::IntBlocks { dtype: int4_dtype, bits, packed: true, strategy },
                }
            }
            (Format::Nvfp4, NumType::Float) if bits == 4 && symmetric => match strategy {
                Strategy::TensorGroup(16) => Layout::Nvfp4 { global: true },
                Strategy::Group(16) => Layout::Nvfp4 { global: false },
                s => return Err(no(format!("NVFP4 weights need groups of 16 values, found strategy {s:?}"))),
            },
            (Format::Mxfp4, NumType::Float) if bits == 4 && symmetric => match strategy {
                Strategy::Group(32) => Layout::Mxfp4,
                s => return Err(no(format!("MXFP4 weights need groups of 32 values, found strategy {s:?}"))),
            },
            (format, ty) => {
                let sym = if symmetric { "symmetric" } else { "asymmetric" };
                return Err(no(format!("{sym} {bits}-bit {ty:?} weights do not fit the {format:?} format")));
            }
        };
        let has_scale = matches!(layout, Layout::I8(_) | Layout::Fp8(_) | Layout::Nvfp4 { global: true });
        if self.kind == ModuleKind::Embedding && has_scale {
            return Err(no("a quantized embedding with a separate scale is not supported (block types are)".into()));
        }
        Ok(layout)
    }

    fn convert(
        &self,
        layout: Layout,
        parts: &Parts<'_>,
        arch: Arch,
        out: &mut Vec<TensorEntry>,
    ) -> Result<(), FormatError> {
        if let Some(g) = parts.g_idx {
            return Err(self.corrupt(g, "activation ordering (g_idx) is not supported"));
        }
        match layout {
            Layout::Plain => self.plain(parts, arch, out),
            Layout::I8(strategy) => self.with_scale(DType::I8, strategy, parts, out),
            Layout::Fp8(strategy) => self.with_scale(DType::F8_E4M3, strategy, parts, out),
            Layout::IntBlocks { dtype, bits, packed, strategy } => {
                self.int_blocks(dtype, bits, packed, strategy, parts, out)
            }
            Layout::Nvfp4 { global } => self.fp4(DType::NVFP4, global, parts, out),
            Layout::Mxfp4 => self.fp4(DType::MXFP4, false, parts, out),
        }
    }

    fn plain(&self, parts: &Parts<'_>, arch: Arch, out: &mut Vec<TensorEntry>) -> Result<(), FormatError> {
        let Some(weight) = parts.weight else {
            let Some(any) = parts.any() else { return Ok(()) };
            return Err(self.corrupt(
                any,
                format!("is stored but {}.weight is not, and no config group quantizes {}", self.module, self.module),
            ));
        };
        if let Some(p) = parts.packed {
            return Err(self.corrupt(p, "is stored beside a plain weight"));
        }
        if self.kind != ModuleKind::Other && super::dtype(weight.dtype).is_none() {
            return Err(FormatError::Unsupported {
                path: weight.file.clone(),
                what: format!(
                    "{}: {:?} weights, but no config group of quantization_config quantizes {} (ignored or not targeted)",
                    weight.name, weight.dtype, self.module
                ),
            });
        }
        out.extend(plain_entry(weight, arch)?);
        Ok(())
    }

    fn required<'p>(&self, part: Option<&'p RawTensor>, suffix: &str) -> Result<&'p RawTensor, FormatError> {
        part.ok_or_else(|| FormatError::Corrupt {
            path: self.config.path.clone(),
            what: format!("{}.{suffix} is missing; the module's format stores it", self.module),
        })
    }

    /// `[rows, cols]` of a two-dimensional tensor with no empty dimension.
    fn matrix(&self, raw: &RawTensor) -> Result<(usize, usize), FormatError> {
        match raw.shape[..] {
            [rows, cols] if rows > 0 && cols > 0 => Ok((rows, cols)),
            _ => Err(self.corrupt(raw, format!("shape {:?} is not a non-empty matrix", raw.shape))),
        }
    }

    fn expect_dtype(&self, raw: &RawTensor, allowed: &[Dtype]) -> Result<(), FormatError> {
        if allowed.contains(&raw.dtype) {
            return Ok(());
        }
        Err(self.corrupt(raw, format!("is {:?}; this format stores {allowed:?}", raw.dtype)))
    }

    /// The scale grid a strategy gives a `[rows, cols]` weight, checked against the scale
    /// tensor's shape.
    fn scale_grid(
        &self,
        scale: &RawTensor,
        strategy: Strategy,
        rows: usize,
        cols: usize,
    ) -> Result<(usize, usize), FormatError> {
        let (ok, per_row, group, want) = match strategy {
            Strategy::Tensor => {
                (scale.shape.iter().product::<usize>() == 1 && scale.shape.len() <= 1, 0, cols, "[1]".to_string())
            }
            Strategy::Channel => {
                let ok = scale.shape == [rows, 1] || scale.shape == [rows];
                (ok, 1, cols, format!("[{rows}, 1]"))
            }
            Strategy::Group(g) | Strategy::TensorGroup(g) => {
                if !cols.is_multiple_of(g) {
                    return Err(self.corrupt(
                        scale,
                        format!("the weight's {cols} columns are not a whole number of groups of {g}"),
                    ));
                }
                (scale.shape == [rows, cols / g], cols / g, g, format!("[{rows}, {}]", cols / g))
            }
            Strategy::Other(s) => return Err(self.corrupt(scale, format!("strategy {s} has no scale layout"))),
        };
        if !ok {
            return Err(self.corrupt(
                scale,
                format!("shape {:?} does not fit a [{rows}, {cols}] weight; expected {want}", scale.shape),
            ));
        }
        Ok((per_row, group))
    }

    /// Scale values as f32, checked finite.
    fn scale_values(&self, scale: &RawTensor) -> Result<Vec<f32>, FormatError> {
        self.expect_dtype(scale, &[Dtype::F32, Dtype::F16, Dtype::BF16])?;
        let values = floats(scale);
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(self.corrupt(scale, format!("value {i} is {v}")));
        }
        Ok(values)
    }

    fn scale_name(&self) -> String {
        let stem = self.name.strip_suffix(".weight").unwrap_or(self.name);
        format!("{stem}.scale")
    }

    /// I8 or F8_E4M3, zero copy, with an F32 `.scale` of `[rows]` or `[1]`.
    fn with_scale(
        &self,
        dtype: DType,
        strategy: Strategy,
        parts: &Parts<'_>,
        out: &mut Vec<TensorEntry>,
    ) -> Result<(), FormatError> {
        let weight = self.required(parts.weight, "weight")?;
        if let Some(p) = parts.packed {
            return Err(self.corrupt(p, "is stored, but this module's format keeps the weight unpacked"));
        }
        self.expect_dtype(weight, &[if dtype == DType::I8 { Dtype::I8 } else { Dtype::F8_E4M3 }])?;
        let (rows, cols) = self.matrix(weight)?;
        let scale = self.required(parts.scale, "weight_scale")?;
        self.scale_grid(scale, strategy, rows, cols)?;
        let values = self.scale_values(scale)?;
        out.push(TensorEntry {
            name: self.name.to_string(),
            dtype,
            shape: Shape::new(vec![rows, cols]),
            bytes: weight.bytes.clone(),
        });
        out.push(f32_entry(self.scale_name(), &values));
        Ok(())
    }

    /// Integer weights (one per byte in `weight`, or packed in `weight_packed` with their
    /// `[rows, cols]` in `weight_shape`) repacked into `dtype` blocks.
    fn int_blocks(
        &self,
        dtype: DType,
        bits: u32,
        packed: bool,
        strategy: Strategy,
        parts: &Parts<'_>,
        out: &mut Vec<TensorEntry>,
    ) -> Result<(), FormatError> {
        let (rows, cols, values, stored) = if packed {
            let words = self.required(parts.packed, "weight_packed")?;
            if let Some(w) = parts.weight {
                return Err(self.corrupt(w, "is stored beside weight_packed"));
            }
            self.expect_dtype(words, &[Dtype::I32])?;
            let (rows, cols) = self.weight_shape(self.required(parts.shape, "weight_shape")?)?;
            let row_words =
                cols.checked_mul(bits as usize).map(|b| b.div_ceil(32)).filter(|&w| words.shape[..] == [rows, w]);
            let Some(row_words) = row_words else {
                return Err(self.corrupt(
                    words,
                    format!("shape {:?} does not hold a [{rows}, {cols}] weight of {bits}-bit values", words.shape),
                ));
            };
            (rows, cols, IntRows::Packed { words: words.bytes.as_ref(), bits, row_words }, words)
        } else {
            let weight = self.required(parts.weight, "weight")?;
            if let Some(p) = parts.packed {
                return Err(self.corrupt(p, "is stored, but this module's format keeps the weight unpacked"));
            }
            self.expect_dtype(weight, &[Dtype::I8])?;
            let (rows, cols) = self.matrix(weight)?;
            (rows, cols, IntRows::Bytes(weight.bytes.as_ref()), weight)
        };
        if !cols.is_multiple_of(QK32) {
            return Err(
                self.corrupt(stored, format!("{cols} columns are not a whole number of ggml's 32-value blocks"))
            );
        }
        let scale = self.required(parts.scale, "weight_scale")?;
        let (per_row, group) = self.scale_grid(scale, strategy, rows, cols)?;
        let scales = Grid { values: self.scale_values(scale)?, per_row, group };
        // Symmetric schemes store no zero point (compressed-tensors drops an all-zero one).
        let zero_point =
            if dtype == DType::Q4_1 { Some(self.required(parts.zero_point, "weight_zero_point")?) } else { None };
        let zeros = match zero_point {
            None => None,
            Some(zp) => Some(Grid { values: self.zero_points(zp, bits, rows, &scale.shape, per_row)?, per_row, group }),
        };
        let len = dtype.bytes_for(rows * cols).map_err(|e| self.corrupt(stored, e))?;
        let bytes =
            TensorBytes::build(len, |buf| repack::int_blocks(&values, rows, cols, &scales, zeros.as_ref(), dtype, buf))
                .map_err(|(culprit, e)| {
                    let raw = match culprit {
                        Culprit::Values => stored,
                        Culprit::Scale => scale,
                        Culprit::ZeroPoint => zero_point.unwrap_or(scale),
                    };
                    self.corrupt(raw, e)
                })?;
        out.push(TensorEntry { name: self.name.to_string(), dtype, shape: Shape::new(vec![rows, cols]), bytes });
        Ok(())
    }

    /// `weight_shape`: two non-negative integers.
    fn weight_shape(&self, shape: &RawTensor) -> Result<(usize, usize), FormatError> {
        let values: Vec<i64> = match shape.dtype {
            Dtype::I64 => shape
                .bytes
                .as_ref()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect(),
            Dtype::I32 => shape
                .bytes
                .as_ref()
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap_or_default())))
                .collect(),
            other => return Err(self.corrupt(shape, format!("is {other:?}; expected I64 or I32"))),
        };
        match values[..] {
            [r, c] if r > 0 && c > 0 => match (usize::try_from(r), usize::try_from(c)) {
                (Ok(r), Ok(c)) => Ok((r, c)),
                _ => Err(self.corrupt(shape, format!("{values:?} is too large"))),
            },
            _ => Err(self.corrupt(shape, format!("holds {values:?}, not two positive dimensions"))),
        }
    }

    /// Zero points, one per scale: int32 packed along rows (as pack-quantized stores grouped and
    /// per-channel ones), or int8 shaped like the scale.
    fn zero_points(
        &self,
        zp: &RawTensor,
        bits: u32,
        rows: usize,
        scale_shape: &[usize],
        per_row: usize,
    ) -> Result<Vec<i32>, FormatError> {
        match zp.dtype {
            Dtype::I32 if per_row > 0 && bits <= 8 && 32u32.is_multiple_of(bits) => {
                let want = [(rows * bits as usize).div_ceil(32), per_row];
                if zp.shape[..] != want {
                    return Err(self
                        .corrupt(zp, format!("shape {:?}; packed zero points of {rows} rows are {want:?}", zp.shape)));
                }
                Ok(repack::unpack_zero_points(zp.bytes.as_ref(), bits, rows, per_row))
            }
            Dtype::I8 => {
                if zp.shape != scale_shape {
                    return Err(
                        self.corrupt(zp, format!("shape {:?} differs from the scale's {scale_shape:?}", zp.shape))
                    );
                }
                Ok(zp.bytes.as_ref().iter().map(|&b| i32::from(b as i8)).collect())
            }
            other => Err(self.corrupt(zp, format!("is {other:?}; zero points are packed I32 or I8"))),
        }
    }

    /// NVFP4 or MXFP4 from two E2M1 codes per byte and their scale bytes.
    fn fp4(
        &self,
        dtype: DType,
        global: bool,
        parts: &Parts<'_>,
        out: &mut Vec<TensorEntry>,
    ) -> Result<(), FormatError> {
        let packed = self.required(parts.packed, "weight_packed")?;
        if let Some(w) = parts.weight {
            return Err(self.corrupt(w, "is stored beside weight_packed"));
        }
        self.expect_dtype(packed, &[Dtype::U8])?;
        let (rows, half) = self.matrix(packed)?;
        let cols = half.checked_mul(2).ok_or_else(|| self.corrupt(packed, "too many columns"))?;
        let (block, per_scale, scale_dtype) =
            if dtype == DType::NVFP4 { (64, 16, Dtype::F8_E4M3) } else { (QK32, QK32, Dtype::U8) };
        if !cols.is_multiple_of(block) {
            return Err(self.corrupt(
                packed,
                format!("{cols} columns are not a whole number of ggml's {block}-value {dtype} blocks"),
            ));
        }
        if let Some(shape) = parts.shape {
            if self.weight_shape(shape)? != (rows, cols) {
                return Err(self.corrupt(shape, format!("does not match weight_packed's [{rows}, {cols}] values")));
            }
        }
        let scale = self.required(parts.scale, "weight_scale")?;
        self.expect_dtype(scale, &[scale_dtype])?;
        if scale.shape[..] != [rows, cols / per_scale] {
            return Err(
                self.corrupt(scale, format!("shape {:?}; expected [{rows}, {}]", scale.shape, cols / per_scale))
            );
        }
        let factor = if global {
            Some(self.inverse_global_scale(self.required(parts.global_scale, "weight_global_scale")?)?)
        } else {
            None
        };
        let len = dtype.bytes_for(rows * cols).map_err(|e| self.corrupt(packed, e))?;
        let (codes, scale_bytes) = (packed.bytes.as_ref(), scale.bytes.as_ref());
        let bytes = TensorBytes::build(len, |buf| {
            if dtype == DType::NVFP4 {
                repack::nvfp4_blocks(codes, scale_bytes, rows, cols, buf)
            } else {
                repack::mxfp4_blocks(codes, scale_bytes, rows, cols, buf)
            }
        })
        .map_err(|e| self.corrupt(scale, e))?;
        out.push(TensorEntry { name: self.name.to_string(), dtype, shape: Shape::new(vec![rows, cols]), bytes });
        if let Some(f) = factor {
            out.push(f32_entry(self.scale_name(), &[f]));
        }
        Ok(())
    }

    /// compressed-tensors divides group scales by the global scale; the output is multiplied by
    /// its inverse.
    fn inverse_global_scale(&self, g: &RawTensor) -> Result<f32, FormatError> {
        let values = self.scale_values(g)?;
        let [g_value] = values[..] else {
            return Err(self.corrupt(g, format!("holds {} values; a global scale is one", values.len())));
        };
        let inverse = 1.0 / g_value;
        if !(g_value > 0.0 && inverse.is_finite() && inverse > 0.0) {
            return Err(
                self.corrupt(g, format!("global scale {g_value:e} is not a positive number with a finite inverse"))
            );
        }
        Ok(inverse)
    }
}

/// F32, F16 or BF16 little-endian bytes as f32 values (the caller has checked the dtype).
fn floats(raw: &RawTensor) -> Vec<f32> {
    let b = raw.bytes.as_ref();
    match raw.dtype {
        Dtype::F32 => b.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|x| half::f16::from_le_bytes([x[0], x[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|x| half::bf16::from_le_bytes([x[0], x[1]]).to_f32()).collect(),
        _ => Vec::new(),
    }
}

/// An F32 vector entry.
fn f32_entry(name: String, values: &[f32]) -> TensorEntry {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorEntry {
        name,
        dtype: DType::F32,
        shape: Shape::new(vec![values.len()]),
        bytes: TensorBytes::copy_from(&bytes),
    }
}

#[cfg(test)]
mod tests;
