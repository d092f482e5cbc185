//! `tessera export onnx`: a model's prefill and decode steps as ONNX graphs, for graph compilers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use tessera_backend::DType;
use tessera_backend_cpu::CpuBackend;
use tessera_backend_ort::{OrtBackend, OrtOptions, Provider};
use tessera_onnx::export::{export_model, Calibration, ExportOptions};
use tessera_onnx::qdq::{Activations, QdqOptions};
use tessera_onnx::Precision;
use tessera_quantize::{gptq_int8_rows, NoProgress, RowCodes};
use tessera_runtime::{ContextOptions, LoadedModel, Logits};

use crate::cmd_run::load_model;
use crate::{backends, model_store, ComputeArgs, DeviceArgs};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// ONNX (opset 21) with the KV cache as explicit inputs and outputs, static shapes,
    /// `weights.bin`, the tokenizer and a manifest saying how to drive it.
    Onnx(OnnxArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// F32 weights and activations.
    Fp32,
    /// F16 weights, F32 activations.
    Fp16,
    /// QDQ: int8 weights (one scale per output row), uint8 activations, calibrated.
    QdqInt8,
    /// QDQ: int8 weights, uint16 activations, calibrated (what Qualcomm's HTP runs best).
    QdqA16w8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightMethod {
    Gptq,
    Rtn,
}

#[derive(Args, Debug)]
pub struct OnnxArgs {
    /// Model: a .gguf file, a Hugging Face directory or a short name (smollm2, gemma3-270m).
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    pub model: String,
    /// Output directory.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Tokens per prefill step (the prefill graph's static length).
    #[arg(long = "seq-len", default_value_t = 64)]
    pub seq_len: usize,
    /// Positions of the KV cache.
    #[arg(long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Text to calibrate the QDQ scales on (qdq-* precisions; default: a built-in text).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// qdq-*: values (sums, projections, products) whose calibrated range is wider than this
    /// stay float (fp16 on NPUs that have it; Qualcomm's HTP from v73); 0 quantizes every value.
    #[arg(long = "float-above", default_value_t = 100.0)]
    pub float_above: f32,
    /// qdq-*: keep attention's activation products and softmax float (fp16 on the NPU);
    /// `--float-attention false` quantizes them too.
    #[arg(long = "float-attention", default_value_t = true, action = clap::ArgAction::Set)]
    pub float_attention: bool,
    /// Most calibration tokens to run (prefill steps; then 32 decode steps).
    #[arg(long = "calib-tokens", default_value_t = 1024)]
    pub calib_tokens: usize,
    /// qdq-*: how the layers' int8 weights are chosen: `gptq` (calibrated on the same text;
    /// rounding errors compensated within each row) or `rtn` (rounded to nearest).
    #[arg(long = "weights", value_enum, default_value_t = WeightMethod::Gptq)]
    pub weights: WeightMethod,
    /// Threads (default: all available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

pub fn run(cmd: ExportCommand) -> Result<()> {
    let ExportCommand::Onnx(args) = cmd;
    if args.output.exists() && args.output.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty directory", args.output.display());
    }
    let (precision, quantize) = match args.precision {
        PrecisionArg::Fp32 => (Precision::Fp32, None),
        PrecisionArg::Fp16 => (Precision::Fp16, None),
        PrecisionArg::QdqInt8 => (Precision::Fp32, Some(Activations::U8)),
        PrecisionArg::QdqA16w8 => (Precision::Fp32, Some(Activations::U16)),
    };
    if args.float_above.is_nan() || args.float_above < 0.0 {
        bail!("--float-above must be 0 or more, got {}", args.float_above);
    }
    let float_above = (args.float_above > 0.0).then_some(args.float_above);
    let float_attention = args.float_attention;
    let quantize = quantize.map(|activations| QdqOptions { activations, float_above, float_attention });
    let options = ExportOptions { precision, quantize, seq_len: args.seq_len, context: args.ctx };
    let manifest = if quantize.is_some() {
        let text = match &args.calib {
            Some(calib) => std::fs::read_to_string(calib).with_context(|| format!("reading {}", calib.display()))?,
            None => tessera_quantize::DEFAULT_CALIBRATION.to_string(),
        };
        // The model runs on ONNX Runtime's CPU provider, recording the range of every value of
        // the very graphs it then exports.
        let mut ort = OrtOptions::new(Provider::Cpu);
        ort.observe = true;
        ort.translate = tessera_onnx::TranslateOptions::quantized();
        ort.threads = args.threads.unwrap_or_else(backends::default_threads);
        let backend = Arc::new(OrtBackend::new(ort).context("calibrating on ONNX Runtime")?);
        let path = model_store::resolve(&args.model, false)?;
        let weights = match args.weights {
            WeightMethod::Gptq => gptq_weights(&path, &text, &args)?,
            WeightMethod::Rtn => Default::default(),
        };
        let model = LoadedModel::load(&path, backend.clone(), None)?;
        calibrate(&model, &text, &args)?;
        // Only graphs that ran get ranges; theirs are merged (see `merged_ranges`).
        let merged = backend.merged_ranges();
        let ranges = |g: &tessera_backend::Graph| backend.ranges(g).map(|_| merged.clone());
        export_model(&model, &args.output, options, Some(&Calibration { ranges: &ranges, weights: &weights }))
    } else {
        let compute = ComputeArgs {
            model: args.model.clone(),
            threads: args.threads,
            backend: "cpu".into(),
            device: DeviceArgs::default(),
        };
        let model = load_model(&compute)?;
        export_model(&model, &args.output, options, None)
    }
    .with_context(|| format!("exporting {}", args.model))?;
    for g in &manifest.graphs {
        println!("{}: {} tokens, {} inputs, {} outputs", g.file, g.tokens, g.inputs.len(), g.outputs.len());
    }
    println!(
        "exported {} ({}, {} layers, context {}) to {}",
        args.model,
        manifest.precision,
        manifest.n_layers,
        manifest.context,
        args.output.display()
    );
    Ok(())
}

/// GPTQ int8 codes of the layers' weights, calibrated on the model run by Tessera's CPU backend.
fn gptq_weights(path: &std::path::Path, text: &str, args: &OnnxArgs) -> Result<BTreeMap<String, RowCodes>> {
    let threads = args.threads.unwrap_or_else(backends::default_threads);
    let model = LoadedModel::load(path, Arc::new(CpuBackend::new(threads)), None)?;
    let start = std::time::Instant::now();
    let codes = gptq_int8_rows(&model, text, &mut NoProgress).context("GPTQ of the int8 weights")?;
    eprintln!("GPTQ chose the int8 codes of {} weights in {:.1} s", codes.len(), start.elapsed().as_secs_f64());
    Ok(codes)
}

/// Runs prefill steps of exactly `--seq-len` tokens over the text, then decode steps, so both
/// exported graphs have ranges.
fn calibrate(model: &LoadedModel, text: &str, args: &OnnxArgs) -> Result<()> {
    let tokens = model.tokenizer.encode(text, true, false);
    let options = ContextOptions { n_ctx: args.ctx, n_batch: args.seq_len, kv_type: DType::F32 };
    let mut ctx = model.new_context(options)?;
    let budget = args.calib_tokens.min(tokens.len());
    if budget < args.seq_len + 32 || args.ctx < args.seq_len + 32 {
        bail!(
            "calibration needs --seq-len + 32 tokens of text and of context ({} text tokens, --calib-tokens {}, --ctx {})",
            tokens.len(),
            args.calib_tokens,
            args.ctx
        );
    }
    let mut done = 0;
    let start = std::time::Instant::now();
    while done + args.seq_len + 32 <= budget {
        if ctx.n_past() + args.seq_len + 32 > args.ctx {
            ctx.clear();
        }
        ctx.eval(&tokens[done..done + args.seq_len], Logits::All)?;
        done += args.seq_len;
    }
    for &t in tokens.iter().skip(done).take(32) {
        ctx.eval(&[t], Logits::All)?;
    }
    eprintln!("calibrated on {} tokens in {:.1} s", done + 32, start.elapsed().as_secs_f64());
    Ok(())
}
