//! `tessera eval`: model quality measurements.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tessera_runtime::{perplexity, PerplexityOptions};

use crate::cmd_run::load_model;
use crate::ComputeArgs;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Perplexity over a text file, scored as llama-perplexity scores it.
    Ppl(PplArgs),
}

#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Most chunks to score (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Most tokens per forward step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Ppl(args) => ppl(args),
    }
}

fn ppl(args: PplArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let model = load_model(&args.compute)?;
    let options = PerplexityOptions { n_ctx: args.ctx_size, max_chunks: args.chunks, n_batch: args.batch_size };
    let start = std::time::Instant::now();
    let report = perplexity(&model, &text, &options)?;
    let running: Vec<String> = report.running.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    println!("{}", running.join(","));
    println!("Final estimate: PPL = {:.4} +/- {:.5}", report.ppl, report.ppl_error);
    eprintln!(
        "{} tokens, {} chunks of {}, {:.1} s",
        report.tokens,
        report.chunks,
        args.ctx_size,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
