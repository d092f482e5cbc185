//! `tessera eval`: model quality measurements. With several `-m`, compares each model with the
//! first (perplexity, KL divergence, top-1 agreement, bits per weight) and prints a table, JSON
//! and a plot; `tessera eval ppl` is llama-perplexity's single-model perplexity.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tessera_backend_ort::ExportedModel;
use tessera_runtime::{
    compare_models, perplexity, ChunkScorer, ContextScorer, EvalReport, KlBaseHeader, KlBaseReader, KlBaseWriter,
    LoadedModel, ModelScores, PerplexityOptions, Reference, ScoredChunks, WeightStats,
};
use tessera_tokenizer::Tokenizer;

use crate::cmd_run::load_model;
use crate::{exported_run, ComputeArgs};

/// Default tokens per chunk, as llama-perplexity's.
const DEFAULT_CTX: usize = 512;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub compare: CompareArgs,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Perplexity over a text file, scored as llama-perplexity scores it.
    Ppl(PplArgs),
}

/// Compares models with a reference on the same tokens.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Models (.gguf files, Hugging Face directories or short names); repeat -m for each. The
    /// first is the reference the others are compared with, unless --kl-base gives it.
    #[arg(short = 'm', long = "model")]
    pub models: Vec<String>,
    /// Text file to score (may be left out with --kl-base, whose file holds the tokens).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each chunk is scored [default: 512, or the
    /// --kl-base file's].
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Most chunks to score (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Most tokens per forward step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Also write the results as a JSON array, one record per model.
    #[arg(long = "json", value_name = "OUT.json")]
    pub json: Option<PathBuf>,
    /// Also draw the chosen metric against bits per weight, one labelled point per model (SVG
    /// only: PNG would need system font libraries).
    #[arg(long = "plot", value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// What --plot draws against bits per weight.
    #[arg(long = "plot-metric", value_enum, default_value_t = PlotMetric::Ppl)]
    pub plot_metric: PlotMetric,
    /// Take the reference's log-probabilities from this file (written by --save-kl-base)
    /// instead of running it: every -m is then compared with it.
    #[arg(long = "kl-base", value_name = "FILE", conflicts_with = "save_kl_base")]
    pub kl_base: Option<PathBuf>,
    /// Save the reference's log-probabilities (16 bits per token and vocabulary entry) for
    /// later runs with --kl-base.
    #[arg(long = "save-kl-base", value_name = "FILE")]
    pub save_kl_base: Option<PathBuf>,
    /// Threads for the CPU backend (default: all available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Compute backend (see `tessera devices`).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Where export directories (`tessera export onnx`) given with -m run: ort:cpu, ort:qnn,
    /// ort:cann or ort:openvino.
    #[arg(long = "onnx-backend", default_value = "ort:cpu")]
    pub onnx_backend: String,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
}

/// A model to evaluate: Tessera's own, or an export directory run by ONNX Runtime.
enum EvalModel {
    Tessera(LoadedModel),
    Exported { model: ExportedModel, tokenizer: Tokenizer, dir: PathBuf },
}

impl EvalModel {
    fn tokenizer(&self) -> &Tokenizer {
        match self {
            EvalModel::Tessera(m) => &m.tokenizer,
            EvalModel::Exported { tokenizer, .. } => tokenizer,
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            EvalModel::Tessera(m) => m.source.path.clone(),
            EvalModel::Exported { dir, .. } => dir.clone(),
        }
    }

    /// Bits per weight: the source's tensors, or for an export the bytes of `weights.bin` over
    /// the weight values the manifest records.
    fn weights(&self) -> WeightStats {
        match self {
            EvalModel::Tessera(m) => WeightStats::of(&m.source),
            EvalModel::Exported { model, dir, .. } => {
                let bytes = std::fs::metadata(dir.join(&model.manifest.weights)).map_or(0, |m| m.len());
                WeightStats { weight_bytes: bytes, weight_values: model.manifest.weight_values, total_bytes: bytes }
            }
        }
    }

    fn scorer<'a>(&'a mut self, chunks: &ScoredChunks, n_batch: usize) -> Result<Box<dyn ChunkScorer + 'a>> {
        Ok(match self {
            EvalModel::Tessera(m) => Box::new(ContextScorer::new(m, chunks, n_batch)?),
            EvalModel::Exported { model, .. } => Box::new(ExportedScorer(model)),
        })
    }
}

/// An export directory scored chunk by chunk.
struct ExportedScorer<'a>(&'a mut ExportedModel);

impl ChunkScorer for ExportedScorer<'_> {
    fn vocab_size(&self) -> usize {
        self.0.manifest.vocab
    }

    fn describe(&self) -> String {
        self.0.dir().display().to_string()
    }

    fn score(&mut self, chunks: &ScoredChunks, c: usize) -> Result<Vec<f32>, tessera_runtime::RuntimeError> {
        let vocab = self.0.manifest.vocab;
        self.0.clear();
        let logits = self.0.eval(chunks.chunk(c))?;
        let first = chunks.first_row() * vocab;
        Ok(logits[first..first + chunks.scored_per_chunk() * vocab].to_vec())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlotMetric {
    /// Perplexity.
    Ppl,
    /// Mean KL divergence from the reference.
    Kl,
}

#[derive(Args, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk; the second half of each chunk is scored.
    #[arg(short = 'c', long = "ctx-size", default_value_t = DEFAULT_CTX)]
    pub ctx_size: usize,
    /// Most chunks to score (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Most tokens per forward step.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        Some(EvalCommand::Ppl(args)) => ppl(args),
        None => compare(args.compare),
    }
}

fn ppl(args: PplArgs) -> Result<()> {
    let text = read_text(&args.file)?;
    let model = load_model(&args.compute)?;
    let options = PerplexityOptions { n_ctx: args.ctx_size, max_chunks: args.chunks, n_batch: args.batch_size };
    let start = Instant::now();
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

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// One row of the results: a model, its size and its scores.
struct Row {
    name: String,
    path: PathBuf,
    weights: WeightStats,
    scores: ModelScores,
}

impl Row {
    fn new(name: String, path: PathBuf, weights: WeightStats, scores: ModelScores) -> Row {
        Row { name, path, weights, scores }
    }
}

fn compare(args: CompareArgs) -> Result<()> {
    // Checked here rather than by clap, whose message would not name what is missing.
    if args.models.is_empty() {
        bail!("no model to evaluate: name one or more with -m (the first is the reference)");
    }
    if args.file.is_none() && args.kl_base.is_none() {
        bail!("no text to score: give one with -f FILE (or reuse a saved reference with --kl-base)");
    }
    if args.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    let text = args.file.as_deref().map(read_text).transpose()?;
    // The KL base is read before any model loads: a bad file is the quicker error.
    let base = args.kl_base.as_deref().map(KlBaseReader::open).transpose()?;
    let mut models = args
        .models
        .iter()
        .map(|m| {
            if exported_run::is_export_dir(m) {
                let options = exported_run::ort_options(&args.onnx_backend, args.threads, &args.device)?;
                let (model, tokenizer) = exported_run::open(Path::new(m), &options)?;
                return Ok(EvalModel::Exported { model, tokenizer, dir: PathBuf::from(m) });
            }
            let compute = ComputeArgs {
                model: m.clone(),
                threads: args.threads,
                backend: args.backend.clone(),
                device: args.device.clone(),
            };
            Ok(EvalModel::Tessera(load_model(&compute)?))
        })
        .collect::<Result<Vec<EvalModel>>>()?;
    let weights: Vec<WeightStats> = models.iter().map(EvalModel::weights).collect();
    let paths: Vec<PathBuf> = models.iter().map(EvalModel::path).collect();
    let names: Vec<String> = args.models.iter().map(|m| display_name(m)).collect();
    let start = Instant::now();
    let progress =
        |done: usize, total: usize| eprintln!("chunk {done}/{total} scored ({:.1} s)", start.elapsed().as_secs_f64());

    let (report, reference, compared) = match base {
        Some(mut reader) => {
            let chunks = saved_chunks(&reader, &args, text.as_deref(), models[0].tokenizer())?;
            let header = reader.header().clone();
            let total = chunks.len();
            let mut all = models.iter_mut().map(|m| m.scorer(&chunks, args.batch_size)).collect::<Result<Vec<_>>>()?;
            let report = compare_models(
                &chunks,
                header.vocab,
                Reference::Saved(&mut reader),
                &mut all,
                args.batch_size,
                None,
                &mut |done| progress(done, total),
            )?;
            let path = args.kl_base.clone().unwrap_or_default();
            let reference = Row::new(header.source_name, path, header.source_weights, report.reference.clone());
            (report, reference, 0..paths.len())
        }
        None => {
            let (first, rest) = models.split_at_mut(1);
            let EvalModel::Tessera(source) = &first[0] else {
                bail!("the reference (the first -m) must be a Tessera model, not an export directory");
            };
            let text = text.as_deref().ok_or_else(|| anyhow!("no text to score: give one with -f FILE"))?;
            let n_ctx = args.ctx_size.unwrap_or(DEFAULT_CTX);
            let chunks = ScoredChunks::from_text(&source.tokenizer, text, n_ctx, args.chunks)?;
            let vocab = source.config().vocab_size;
            let header = KlBaseHeader { vocab, chunks, source_name: names[0].clone(), source_weights: weights[0] };
            let mut others =
                rest.iter_mut().map(|m| m.scorer(&header.chunks, args.batch_size)).collect::<Result<Vec<_>>>()?;
            let total = header.chunks.len();
            let chunks = &header.chunks;
            let mut run = |save: Option<&mut KlBaseWriter>| {
                let reference = Reference::Model(source);
                let mut chunk_done = |done| progress(done, total);
                compare_models(chunks, vocab, reference, &mut others, args.batch_size, save, &mut chunk_done)
            };
            let report = match &args.save_kl_base {
                Some(path) => save_kl_base(path, &header, run)?,
                None => run(None)?,
            };
            let reference = Row::new(names[0].clone(), paths[0].clone(), weights[0], report.reference.clone());
            (report, reference, 1..paths.len())
        }
    };

    let mut rows = vec![reference];
    for (i, scores) in compared.zip(&report.models) {
        rows.push(Row::new(names[i].clone(), paths[i].clone(), weights[i], scores.clone()));
    }
    print!("{}", table(&rows));
    eprintln!(
        "{} tokens scored per model: {} chunks of {}, {:.1} s",
        report.tokens_scored,
        report.chunks,
        report.n_ctx,
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.save_kl_base {
        eprintln!("reference log-probabilities saved to {}", path.display());
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json_records(&rows, &report))?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let text_name = args.file.as_ref().map(|f| format!(" of {}", display_name(&f.to_string_lossy())));
        let title =
            format!("{} tokens{}, context {}", report.tokens_scored, text_name.unwrap_or_default(), report.n_ctx);
        plot(path, &rows, args.plot_metric, &title)?;
    }
    Ok(())
}

/// Runs `run` writing the reference's rows to `path`; the file gets its name only when complete,
/// so a later --kl-base never opens half of one.
fn save_kl_base(
    path: &Path,
    header: &KlBaseHeader,
    mut run: impl FnMut(Option<&mut KlBaseWriter>) -> Result<EvalReport, tessera_runtime::RuntimeError>,
) -> Result<EvalReport> {
    let partial = partial_path(path);
    let mut writer = KlBaseWriter::create(&partial, header)?;
    let result = run(Some(&mut writer));
    drop(writer);
    match result {
        Ok(report) => {
            std::fs::rename(&partial, path)
                .with_context(|| format!("moving {} to {}", partial.display(), path.display()))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.into())
        }
    }
}

/// The chunks to score against a saved KL base: the file's, or the text's when one is given,
/// which must then be the same tokens.
fn saved_chunks(
    reader: &KlBaseReader,
    args: &CompareArgs,
    text: Option<&str>,
    tokenizer: &Tokenizer,
) -> Result<ScoredChunks> {
    let saved = &reader.header().chunks;
    if let Some(c) = args.ctx_size.filter(|&c| c != saved.n_ctx()) {
        bail!("{} was saved with a context of {} tokens, not {c}", reader.name(), saved.n_ctx());
    }
    if let Some(c) = args.chunks.filter(|&c| c > saved.len()) {
        bail!("{} holds {} chunks; --chunks {c} asks for more", reader.name(), saved.len());
    }
    let wanted = args.chunks.unwrap_or(saved.len());
    let chunks = match text {
        Some(text) => ScoredChunks::from_text(tokenizer, text, saved.n_ctx(), Some(wanted))?,
        None => {
            let mut chunks = saved.clone();
            chunks.truncate(wanted);
            chunks
        }
    };
    reader.check_chunks(&chunks)?;
    Ok(chunks)
}

/// Where a KL base is written until it is complete.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// A model as the table names it: a short name as given, a path by its last component.
fn display_name(model: &str) -> String {
    let path = Path::new(model.trim_end_matches('/'));
    match path.file_name() {
        Some(name) if path.components().count() > 1 || path.exists() => name.to_string_lossy().into_owned(),
        _ => model.to_string(),
    }
}

fn format_size(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Change of `ppl` from the reference's, in percent.
fn delta_percent(ppl: f64, reference: f64) -> f64 {
    (ppl / reference - 1.0) * 100.0
}

/// A divergence to six places; rounding error of a model against itself can make it a hair
/// below zero, which should not read as "-0.000000".
fn kl6(v: f64) -> String {
    format!("{:.6}", if v.abs() < 5e-7 { 0.0 } else { v })
}

/// The results as a text table, the reference first.
fn table(rows: &[Row]) -> String {
    let reference_ppl = rows[0].scores.ppl;
    let header = ["model", "bpw", "size", "PPL", "ΔPPL", "KL mean", "KL p99", "KL max", "top-1"];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let s = &r.scores;
            let (kl_mean, kl_p99, kl_max, top1) = match &s.comparison {
                Some(c) => (
                    format!("{} ± {}", kl6(c.kl.mean), kl6(c.kl.mean_error)),
                    kl6(c.kl.p99),
                    kl6(c.kl.max),
                    format!("{:.2} %", c.same_top * 100.0),
                ),
                None => ("reference".into(), "-".into(), "-".into(), "-".into()),
            };
            let delta = if i == 0 { "-".to_string() } else { format!("{:+.2} %", delta_percent(s.ppl, reference_ppl)) };
            [
                r.name.clone(),
                format!("{:.3}", r.weights.bits_per_weight()),
                format_size(r.weights.total_bytes),
                format!("{:.4} ± {:.4}", s.ppl, s.ppl_error),
                delta,
                kl_mean,
                kl_p99,
                kl_max,
                top1,
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| cells.iter().map(|row| row[c].chars().count()).chain([header[c].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |values: &[&str]| -> String {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .enumerate()
            // The model name reads left-aligned, the figures right-aligned.
            .map(|(c, (v, &w))| if c == 0 { format!("{v:<w$}") } else { format!("{v:>w$}") })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    out += &line(
        &widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for row in &cells {
        out += &line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// One JSON record per model; comparison fields are null for the reference.
fn json_records(rows: &[Row], report: &EvalReport) -> Value {
    let reference_ppl = rows[0].scores.ppl;
    let records: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let s = &r.scores;
            let c = s.comparison.as_ref();
            json!({
                "model": r.name,
                "path": r.path.display().to_string(),
                "reference": i == 0,
                "bits_per_weight": r.weights.bits_per_weight(),
                "weight_bytes": r.weights.weight_bytes,
                "weight_values": r.weights.weight_values,
                "size_bytes": r.weights.total_bytes,
                "ppl": s.ppl,
                "ppl_error": s.ppl_error,
                "delta_ppl_percent": delta_percent(s.ppl, reference_ppl),
                "kl_mean": c.map(|c| c.kl.mean),
                "kl_mean_error": c.map(|c| c.kl.mean_error),
                "kl_median": c.map(|c| c.kl.median),
                "kl_p90": c.map(|c| c.kl.p90),
                "kl_p99": c.map(|c| c.kl.p99),
                "kl_p999": c.map(|c| c.kl.p999),
                "kl_max": c.map(|c| c.kl.max),
                "top1_percent": c.map(|c| c.same_top * 100.0),
                "top1_error_percent": c.map(|c| c.same_top_error * 100.0),
                "tokens": report.tokens_scored,
                "n_ctx": report.n_ctx,
                "chunks": report.chunks,
            })
        })
        .collect();
    Value::Array(records)
}

/// Draws `metric` against bits per weight as an SVG, one labelled point per model.
fn plot(path: &Path, rows: &[Row], metric: PlotMetric, title: &str) -> Result<()> {
    use plotters::prelude::*;

    let points: Vec<(f64, f64, String)> = rows
        .iter()
        .map(|r| {
            let y = match metric {
                PlotMetric::Ppl => r.scores.ppl,
                // The reference's divergence from itself is 0.
                PlotMetric::Kl => r.scores.comparison.as_ref().map_or(0.0, |c| c.kl.mean),
            };
            (r.weights.bits_per_weight(), y, r.name.clone())
        })
        .collect();
    let (x0, x1) = padded_range(points.iter().map(|p| p.0));
    let (y0, y1) = padded_range(points.iter().map(|p| p.1));
    let y_label = match metric {
        PlotMetric::Ppl => "perplexity",
        PlotMetric::Kl => "mean KL divergence from the reference (nats)",
    };
    let draw_error = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| draw_error(&e))?;
    let (x_digits, y_digits) = (tick_digits(x1 - x0), tick_digits(y1 - y0));
    chart
        .configure_mesh()
        .x_desc("bits per weight")
        .y_desc(y_label)
        .x_label_formatter(&|v| format!("{v:.x_digits$}"))
        .y_label_formatter(&|v| format!("{v:.y_digits$}"))
        .draw()
        .map_err(|e| draw_error(&e))?;
    chart
        .draw_series(points.iter().enumerate().map(|(i, (x, y, name))| {
            let (color, label) = if i == 0 { (RED, format!("{name} (reference)")) } else { (BLUE, name.clone()) };
            // Labels of points drawn on top of each other go one under the other.
            let near = |&(px, py, _): &(f64, f64, String)| {
                (px - x).abs() <= (x1 - x0) * 0.02 && (py - y).abs() <= (y1 - y0) * 0.02
            };
            let stacked = points[..i].iter().filter(|p| near(p)).count() as i32;
            EmptyElement::at((*x, *y))
                + Circle::new((0, 0), 5, color.filled())
                + Text::new(label, (8, -16 + 16 * stacked), ("sans-serif", 14))
        }))
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}

/// Decimal places that tell apart ticks spread over `span` (about ten of them).
fn tick_digits(span: f64) -> usize {
    if span > 0.0 {
        (1.0 - (span / 10.0).log10().floor()).clamp(0.0, 9.0) as usize
    } else {
        2
    }
}

/// The span of `values` with a margin on each side, never empty.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    // Values equal but for rounding (a model against itself) get a readable span around them.
    let scale = lo.abs().max(hi.abs());
    let margin = if hi - lo > scale * 1e-6 { (hi - lo) * 0.15 } else { scale.max(1e-3) * 0.1 };
    (lo - margin, hi + margin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_runtime::{Comparison, KlStats};

    fn row(name: &str, bpw_bytes: u64, ppl: f64, kl: Option<f64>) -> Row {
        let comparison = kl.map(|mean| Comparison {
            kl: KlStats {
                mean,
                mean_error: 0.001,
                median: mean,
                p90: mean,
                p99: mean * 3.0,
                p999: mean * 4.0,
                max: 1.5,
            },
            same_top: 0.9,
            same_top_error: 0.01,
        });
        Row::new(
            name.into(),
            PathBuf::from(format!("/models/{name}")),
            WeightStats { weight_bytes: bpw_bytes, weight_values: 1000, total_bytes: 3 << 20 },
            ModelScores { ppl, ppl_error: 0.1, comparison },
        )
    }

    #[test]
    fn the_table_has_one_aligned_row_per_model() {
        let t = table(&[row("f16.gguf", 2000, 10.0, None), row("q4.gguf", 562, 10.5, Some(0.02))]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("model") && lines[0].contains("top-1"), "{t}");
        assert!(lines[2].contains("16.000") && lines[2].contains("reference"), "{t}");
        assert!(lines[3].contains("4.496") && lines[3].contains("+5.00 %") && lines[3].contains("90.00 %"), "{t}");
        assert!(lines[3].contains("3.0 MiB"), "{t}");
    }

    #[test]
    fn json_records_carry_every_field() {
        let report = EvalReport {
            n_ctx: 128,
            chunks: 2,
            tokens_scored: 126,
            reference: ModelScores { ppl: 10.0, ppl_error: 0.1, comparison: None },
            models: vec![],
        };
        let v = json_records(&[row("a", 2000, 10.0, None), row("b", 500, 11.0, Some(0.1))], &report);
        assert_eq!(v[0]["reference"], true);
        assert!(v[0]["kl_mean"].is_null());
        assert_eq!(v[1]["bits_per_weight"], 4.0);
        assert!((v[1]["delta_ppl_percent"].as_f64().expect("number") - 10.0).abs() < 1e-9);
        assert_eq!(v[1]["kl_p99"].as_f64(), Some(0.1 * 3.0));
        assert_eq!(v[1]["tokens"], 126);
    }

    #[test]
    fn names_and_ranges() {
        assert_eq!(display_name("smollm2"), "smollm2");
        assert_eq!(display_name("/models/q4_k.gguf"), "q4_k.gguf");
        assert_eq!(display_name("/models/hf-dir/"), "hf-dir");
        let (lo, hi) = padded_range([4.0, 4.0 + 1e-9].into_iter());
        assert!((lo - 3.6).abs() < 1e-6 && (hi - 4.4).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(padded_range([0.0, 0.0].into_iter()), (-1e-4, 1e-4));
        assert_eq!(tick_digits(1.0), 2);
        assert_eq!(tick_digits(0.001), 5);
        assert_eq!(kl6(-1e-9), "0.000000");
        let (lo, hi) = padded_range([2.0, 4.0].into_iter());
        assert!(lo < 2.0 && hi > 4.0);
        assert_eq!(partial_path(Path::new("/tmp/base.kl")), PathBuf::from("/tmp/base.kl.partial"));
    }
}
