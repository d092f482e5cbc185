//! The performance model: a roofline per forward step. A step takes the longer of its compute time
//! (matmul FLOPs at the weights' precision, attention FLOPs at the activations' precision, each at
//! a fraction of peak) and its memory time (weights read once, plus the KV cache, at a fraction of
//! the memory bandwidth), plus a fixed cost per layer (kernel launches, thread barriers) and, across
//! a tensor-parallel group, two all-reduces per layer.
//!
//! The fractions and the per-layer cost are [`Efficiency`] factors: defaults from the assumptions
//! file for hardware nobody has measured, or fitted to `tessera bench` profiles (see
//! [`crate::calibrate`]).

use serde::Serialize;

use crate::assumptions::Assumptions;
use crate::catalog::{Chip, ChipKind, Precision, Spec};
use crate::model::ModelShape;
use crate::PlanError;

/// How close to peak the hardware runs, and what each layer costs regardless of size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Efficiency {
    /// Fraction of peak dense throughput reached by matmuls and attention with many rows per step.
    pub compute: f64,
    /// Rows (tokens) per step at which half of `compute` is reached: kernels reuse each weight
    /// block across the rows of a step, so a one-token decode step runs at
    /// `compute / (1 + rows_half)`.
    pub rows_half: f64,
    /// Fraction of peak memory bandwidth reached when streaming weights and cache.
    pub memory: f64,
    /// Seconds per layer per forward step that do not scale with the work.
    pub layer_overhead_s: f64,
    /// Hidden width at which steps of several rows reach half of `compute`: their tiled kernels
    /// pay a cost per output value (activation conversion, tile set-up, reductions) that a wide
    /// matrix amortises over a longer dot product, so narrow models prefill at a lower fraction
    /// of peak. One-row steps run other kernels and do not pay it. 0 turns the effect off.
    #[serde(default)]
    pub width_half: f64,
    /// Where the factors come from.
    pub basis: String,
}

impl Efficiency {
    /// The uncalibrated defaults (each a cited assumption).
    pub fn defaults(a: &Assumptions) -> Efficiency {
        Efficiency {
            compute: a.eff_compute.value,
            rows_half: a.eff_rows_half.value,
            memory: a.eff_memory.value,
            layer_overhead_s: 0.0,
            width_half: 0.0,
            basis: format!(
                "uncalibrated defaults: compute {} ({}), memory {} ({})",
                a.eff_compute.value, a.eff_compute.flag, a.eff_memory.value, a.eff_memory.flag
            ),
        }
    }
}

/// One chip, or a tensor-parallel group of identical chips, as the model sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hardware {
    pub chip: String,
    pub kind: ChipKind,
    /// Chips in the tensor-parallel group.
    pub tp: u32,
    pub linear_precision: Precision,
    pub attention_precision: Precision,
    /// Peak dense ops/s of the group at the weights' precision.
    pub peak_linear: f64,
    /// Peak dense ops/s of the group at the activations' precision.
    pub peak_attention: f64,
    /// Memory bandwidth of the group, bytes/s.
    pub memory_bandwidth: f64,
    /// Memory of the group, bytes.
    pub memory_bytes: f64,
    /// Per-chip link bandwidth for all-reduces, bytes/s in one direction (tp > 1 only).
    pub link_bandwidth: Option<f64>,
    pub allreduce_latency_s: f64,
}

/// The precisions a model runs at on a chip unless told otherwise: CPUs multiply quantized weights
/// with 8-bit integer dot products (activations quantized on the fly, as Tessera's CPU backend and
/// ggml do) and everything else in FP32; accelerators run FP16/BF16 tensor paths (weight-only
/// quantization dequantizes on the fly).
pub fn default_precisions(chip: &Chip, model: &ModelShape) -> (Precision, Precision) {
    let supported = |p: Precision| matches!(chip.throughput(p), Spec::Known { .. });
    match chip.kind {
        ChipKind::Cpu => {
            let linear = if model.bits_per_weight <= 8.5 && supported(Precision::Int8) {
                Precision::Int8
            } else {
                Precision::Fp32
            };
            (linear, Precision::Fp32)
        }
        _ => {
            let p = if supported(Precision::Fp16) { Precision::Fp16 } else { Precision::Fp32 };
            (p, p)
        }
    }
}

impl Hardware {
    /// The group of `tp` chips; `threads` (CPUs) uses that share of the cores; `memory_bandwidth_gbs`
    /// replaces the catalog's bandwidth (a measured figure).
    pub fn new(
        chip: &Chip,
        tp: u32,
        precisions: (Precision, Precision),
        threads: Option<u32>,
        memory_bandwidth_gbs: Option<f64>,
        assumptions: &Assumptions,
    ) -> Result<Hardware, PlanError> {
        if tp == 0 || tp > 64 {
            return Err(PlanError::Invalid(format!("tensor-parallel degree {tp} must be 1 to 64")));
        }
        let (linear, attention) = precisions;
        let share = match (chip.kind, chip.cores, threads) {
            (ChipKind::Cpu, Some(cores), Some(t)) if t > 0 => f64::from(t.min(cores)) / f64::from(cores),
            _ => 1.0,
        };
        let peak = |p: Precision, what: &str| -> Result<f64, PlanError> {
            Ok(chip.require(p.field(), chip.throughput(p), what)? * 1e12 * share * f64::from(tp))
        };
        let bandwidth = match memory_bandwidth_gbs {
            Some(b) if b.is_finite() && b > 0.0 => b,
            Some(b) => return Err(PlanError::Invalid(format!("memory bandwidth {b} GB/s must be positive"))),
            None => chip.require("memory_bandwidth_gbs", &chip.memory_bandwidth_gbs, "the memory roofline")?,
        };
        let link_bandwidth = if tp > 1 {
            let link = match (&chip.interconnect_gbs, &chip.host_io_gbs) {
                (Spec::Known { value, .. }, _) if *value > 0.0 => *value,
                (_, Spec::Known { value, .. }) if *value > 0.0 => *value,
                (ic, _) => chip.require("interconnect_gbs", ic, "tensor-parallel communication")?,
            };
            Some(link * 1e9 / 2.0)
        } else {
            None
        };
        Ok(Hardware {
            chip: chip.id.clone(),
            kind: chip.kind,
            tp,
            linear_precision: linear,
            attention_precision: attention,
            peak_linear: peak(linear, "the compute roofline")?,
            peak_attention: peak(attention, "the attention roofline")?,
            memory_bandwidth: bandwidth * 1e9 * f64::from(tp),
            memory_bytes: chip.require("memory_gb", &chip.memory_gb, "the memory check")? * 1e9 * f64::from(tp),
            link_bandwidth,
            allreduce_latency_s: assumptions.allreduce_latency_us.value * 1e-6,
        })
    }
}

/// Which roof a step hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
}

/// Time of one step (or a sequence of like steps) and its parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepTime {
    pub seconds: f64,
    pub compute_s: f64,
    pub memory_s: f64,
    pub comm_s: f64,
    pub overhead_s: f64,
    pub bound: Bound,
}

/// The work of one forward pass over some tokens.
struct Work {
    linear_flops: f64,
    attention_flops: f64,
    bytes: f64,
    /// Forward steps the work is split into (per-layer overhead and all-reduces are paid per step).
    steps: f64,
    /// Tokens per step: the rows each weight block is used for, and the activations that cross
    /// the tensor-parallel group.
    tokens_per_step: f64,
}

impl Efficiency {
    /// The fraction of peak compute at `rows` tokens per step through matrices `width` wide.
    pub fn compute_at(&self, rows: f64, width: f64) -> f64 {
        let tiled = if rows >= 2.0 { width / (width + self.width_half) } else { 1.0 };
        self.compute * rows / (rows + self.rows_half) * tiled
    }
}

fn time(model: &ModelShape, hw: &Hardware, eff: &Efficiency, w: &Work) -> StepTime {
    let e = eff.compute_at(w.tokens_per_step.max(1.0), f64::from(model.n_embd));
    let compute_s = w.linear_flops / (e * hw.peak_linear) + w.attention_flops / (e * hw.peak_attention);
    let memory_s = w.bytes / (eff.memory * hw.memory_bandwidth);
    let layers = f64::from(model.n_layer);
    let overhead_s = w.steps * layers * eff.layer_overhead_s;
    let comm_s = match hw.link_bandwidth {
        Some(link) => {
            // Ring all-reduce of FP16 activations, twice per layer (after attention and after the FFN).
            let k = f64::from(hw.tp);
            let bytes = 2.0 * (k - 1.0) / k * w.tokens_per_step * f64::from(model.n_embd) * 2.0;
            w.steps * layers * 2.0 * (hw.allreduce_latency_s + bytes / link)
        }
        None => 0.0,
    };
    let bound = if compute_s >= memory_s { Bound::Compute } else { Bound::Memory };
    StepTime { seconds: compute_s.max(memory_s) + overhead_s + comm_s, compute_s, memory_s, comm_s, overhead_s, bound }
}

/// Reading a prompt of `prompt` tokens after `depth` cached ones, `ubatch` tokens per step; logits
/// for the last token only.
pub fn prefill(model: &ModelShape, hw: &Hardware, eff: &Efficiency, prompt: u32, depth: u32, ubatch: u32) -> StepTime {
    let (p, d) = (f64::from(prompt), f64::from(depth));
    let steps = f64::from(prompt.div_ceil(ubatch.max(1)).max(1));
    // Causal attention: token i (1-based) attends to depth + i positions.
    let positions = p * d + p * (p + 1.0) / 2.0;
    let kv = model.kv_bytes_per_token();
    let work = Work {
        linear_flops: p * model.layer_flops_per_token() + model.head_flops_per_token(),
        attention_flops: model.attention_flops(positions),
        // Weights once per step; the cache written once and read by each step.
        bytes: steps * model.bytes_read_per_step() + p * kv + steps * (d + p / 2.0) * kv,
        steps,
        tokens_per_step: p / steps,
    };
    time(model, hw, eff, &work)
}

/// One decode step for `batch` sequences, each attending to `context` cached positions.
pub fn decode_step(model: &ModelShape, hw: &Hardware, eff: &Efficiency, batch: u32, context: f64) -> StepTime {
    let b = f64::from(batch);
    let kv = model.kv_bytes_per_token();
    let work = Work {
        linear_flops: b * (model.layer_flops_per_token() + model.head_flops_per_token()),
        attention_flops: b * model.attention_flops(context),
        bytes: model.bytes_read_per_step() + b * (context + 1.0) * kv,
        steps: 1.0,
        tokens_per_step: b,
    };
    time(model, hw, eff, &work)
}

/// Generating `n_gen` tokens one at a time for one sequence after `depth` cached ones (the
/// llama-bench `tg` test): the sum of its steps.
pub fn generate(model: &ModelShape, hw: &Hardware, eff: &Efficiency, n_gen: u32, depth: u32) -> f64 {
    (1..=n_gen).map(|i| decode_step(model, hw, eff, 1, f64::from(depth + i)).seconds).sum()
}

/// Whether weights plus the KV cache of `sequences` x `context` tokens fit in usable memory.
pub fn fits(model: &ModelShape, hw: &Hardware, usable_fraction: f64, sequences: u32, context: u32) -> bool {
    let need = model.weight_bytes() + f64::from(sequences) * f64::from(context) * model.kv_bytes_per_token();
    need <= usable_fraction * hw.memory_bytes
}

/// How many sequences of `context` tokens fit beside the weights (0 if the weights do not).
pub fn max_sequences(model: &ModelShape, hw: &Hardware, usable_fraction: f64, context: u32) -> u32 {
    let free = usable_fraction * hw.memory_bytes - model.weight_bytes();
    if free <= 0.0 {
        return 0;
    }
    let per = f64::from(context.max(1)) * model.kv_bytes_per_token();
    (free / per).floor().min(f64::from(u32::MAX)) as u32
}

/// Throughput and latency of a model on hardware at one batch size and context length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub model: String,
    pub chip: String,
    pub tp: u32,
    pub batch: u32,
    pub context: u32,
    pub linear_precision: Precision,
    pub attention_precision: Precision,
    pub weights_gb: f64,
    pub kv_cache_gb: f64,
    pub memory_gb: f64,
    pub fits: bool,
    /// Prompt tokens per second reading one prompt of `context` tokens.
    pub prefill_tokens_per_s: f64,
    /// Time to first token for a prompt of `context` tokens, alone on the hardware.
    pub ttft_s: f64,
    pub prefill: StepTime,
    /// Generated tokens per second over the whole batch, at the full context.
    pub decode_tokens_per_s: f64,
    /// Per sequence.
    pub decode_tokens_per_s_per_seq: f64,
    /// Inter-token latency.
    pub itl_s: f64,
    pub decode: StepTime,
    /// Fraction of peak compute the decode step's matmuls reach.
    pub decode_compute_fraction: f64,
    pub efficiency: Efficiency,
}

/// The estimate for `batch` sequences with `context` tokens of prompt each.
pub fn estimate(
    model: &ModelShape,
    hw: &Hardware,
    eff: &Efficiency,
    usable_fraction: f64,
    batch: u32,
    context: u32,
    ubatch: u32,
) -> Result<Estimate, PlanError> {
    model.validate()?;
    if batch == 0 || context == 0 {
        return Err(PlanError::Invalid("batch and context must be at least 1".into()));
    }
    let pf = prefill(model, hw, eff, context, 0, ubatch);
    let dec = decode_step(model, hw, eff, batch, f64::from(context));
    Ok(Estimate {
        model: model.name.clone(),
        chip: hw.chip.clone(),
        tp: hw.tp,
        batch,
        context,
        linear_precision: hw.linear_precision,
        attention_precision: hw.attention_precision,
        weights_gb: model.weight_bytes() / 1e9,
        kv_cache_gb: f64::from(batch) * f64::from(context) * model.kv_bytes_per_token() / 1e9,
        memory_gb: hw.memory_bytes / 1e9,
        fits: fits(model, hw, usable_fraction, batch, context),
        prefill_tokens_per_s: f64::from(context) / pf.seconds,
        ttft_s: pf.seconds,
        prefill: pf,
        decode_tokens_per_s: f64::from(batch) / dec.seconds,
        decode_tokens_per_s_per_seq: 1.0 / dec.seconds,
        itl_s: dec.seconds,
        decode_compute_fraction: eff.compute_at(f64::from(batch), f64::from(model.n_embd)),
        decode: dec,
        efficiency: eff.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::model::NamedModels;

    fn setup(chip: &str, model: &str, quant: Option<f64>) -> (ModelShape, Hardware, Efficiency) {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let mut m = NamedModels::builtin().unwrap().get(model).unwrap().clone();
        if let Some(bits) = quant {
            m = m.with_bits(bits);
        }
        let chip = cat.chip(chip).unwrap();
        let hw = Hardware::new(chip, 1, default_precisions(chip, &m), None, None, &a).unwrap();
        (
            m,
            hw,
            Efficiency {
                compute: 1.0,
                rows_half: 0.0,
                memory: 1.0,
                layer_overhead_s: 0.0,
                width_half: 0.0,
                basis: "ideal".into(),
            },
        )
    }

    #[test]
    fn single_stream_decode_is_memory_bound_at_the_bandwidth_roofline() {
        let (m, hw, eff) = setup("h100-sxm", "llama-3.1-8b", None);
        let step = decode_step(&m, &hw, &eff, 1, 1.0);
        assert_eq!(step.bound, Bound::Memory);
        // 16 GB of BF16 weights over 3.35 TB/s: about 4.8 ms.
        let ideal = m.bytes_read_per_step() / 3.35e12;
        assert!((step.seconds / ideal - 1.0).abs() < 0.01, "{} vs {ideal}", step.seconds);
    }

    #[test]
    fn long_prefill_is_compute_bound() {
        let (m, hw, eff) = setup("h100-sxm", "llama-3.1-8b", None);
        let pf = prefill(&m, &hw, &eff, 4096, 0, 4096);
        assert_eq!(pf.bound, Bound::Compute);
        let linear = 4096.0 * m.layer_flops_per_token() / 989.4e12;
        assert!(pf.seconds > linear && pf.seconds < 1.3 * linear, "{} vs {linear}", pf.seconds);
    }

    #[test]
    fn batching_decode_raises_throughput_until_compute_binds() {
        let (m, hw, eff) = setup("h100-sxm", "llama-3.1-8b", None);
        let t1 = 1.0 / decode_step(&m, &hw, &eff, 1, 1024.0).seconds;
        let t64 = 64.0 / decode_step(&m, &hw, &eff, 64, 1024.0).seconds;
        assert!(t64 > 20.0 * t1, "{t64} vs {t1}");
    }

    #[test]
    fn quantized_models_on_cpus_use_integer_dot_products() {
        let (m, hw, _) = setup("local-zen3-2c", "smollm2-135m", Some(5.0));
        assert_eq!(hw.linear_precision, Precision::Int8);
        assert_eq!(hw.attention_precision, Precision::Fp32);
        let (_, hw16, _) = setup("local-zen3-2c", "smollm2-135m", None);
        assert_eq!(hw16.linear_precision, Precision::Fp32);
        assert!(fits(&m, &hw, 0.9, 1, 4096));
    }

    #[test]
    fn tensor_parallel_needs_a_link_figure() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let m = NamedModels::builtin().unwrap().get("llama-3.1-70b").unwrap().clone();
        let c = cat.chip("inferentia2").unwrap();
        let err = Hardware::new(c, 2, default_precisions(c, &m), None, None, &a).unwrap_err().to_string();
        assert_eq!(
            err,
            "inferentia2: interconnect_gbs is unknown, so tensor-parallel communication cannot be computed"
        );
        let h = cat.chip("h100-sxm").unwrap();
        let hw = Hardware::new(h, 4, default_precisions(h, &m), None, None, &a).unwrap();
        assert_eq!(hw.link_bandwidth, Some(450e9));
        assert!(fits(&m, &hw, 0.9, 1, 8192));
        let hw1 = Hardware::new(h, 1, default_precisions(h, &m), None, None, &a).unwrap();
        assert!(!fits(&m, &hw1, 0.9, 1, 8192));
        assert_eq!(max_sequences(&m, &hw1, 0.9, 8192), 0);
    }

    #[test]
    fn unknown_bandwidth_is_named() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let m = NamedModels::builtin().unwrap().get("llama-3.1-8b").unwrap().clone();
        let c = cat.chip("ascend-910c").unwrap();
        // FP16 is known, memory bandwidth too; a chip with an unknown FP16 figure would say so.
        Hardware::new(c, 1, default_precisions(c, &m), None, None, &a).unwrap();
        let err = Hardware::new(c, 1, (Precision::Int8, Precision::Fp16), None, None, &a).unwrap_err().to_string();
        assert_eq!(err, "ascend-910c: int8_tops is unknown, so the compute roofline cannot be computed");
    }
}
