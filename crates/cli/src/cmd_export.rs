//! `tessera export onnx`: a model's prefill and decode steps as ONNX graphs, for graph compilers.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use tessera_onnx::export::{export_model, ExportOptions};
use tessera_onnx::Precision;

use crate::cmd_run::load_model;
use crate::{ComputeArgs, DeviceArgs};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// ONNX (opset 21) with the KV cache as explicit inputs and outputs, static shapes,
    /// `weights.bin`, the tokenizer and a manifest saying how to drive it.
    Onnx(OnnxArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Fp16,
}

#[derive(Args, Debug)]
pub struct OnnxArgs {
    /// Model: a .gguf file or a short name (smollm2, gemma3-270m).
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
}

pub fn run(cmd: ExportCommand) -> Result<()> {
    let ExportCommand::Onnx(args) = cmd;
    if args.output.exists() && args.output.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty directory", args.output.display());
    }
    let compute =
        ComputeArgs { model: args.model.clone(), threads: None, backend: "cpu".into(), device: DeviceArgs::default() };
    let model = load_model(&compute)?;
    let precision = match args.precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Fp16 => Precision::Fp16,
    };
    let options = ExportOptions { precision, seq_len: args.seq_len, context: args.ctx };
    let manifest = export_model(&model, &args.output, options).with_context(|| format!("exporting {}", args.model))?;
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
