//! `tessera quantize`: converts a model to a low-precision format and prints what it wrote.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_quantize::{Format, Output, Progress, QuantizeOptions, Summary};

use crate::model_store;

#[derive(Args, Debug)]
#[command(after_long_help = FORMATS_HELP)]
pub struct QuantizeArgs {
    /// Source model: a .gguf file, a Hugging Face directory, or a short name (smollm2, gemma3-270m).
    #[arg(short = 'm', long = "model")]
    pub model: String,
    /// Where to write: a .gguf file for the GGUF formats, a directory for the compressed-tensors ones.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Target format (see --help for the list and what each writes).
    #[arg(long, value_parser = parse_format)]
    pub format: Format,
    /// Text file to calibrate on (used by w8a8-int8, w4a16-awq and w4a16-gptq; read and checked for every format).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Values per scale for w4a16-* (default 128, else the largest of 64 and 32 that divides every
    /// row); for fp8-e4m3, 0 means one scale per tensor instead of one per output channel.
    #[arg(long)]
    pub group_size: Option<usize>,
    /// GGUF formats: every weight in the format's type, as `llama-quantize --pure` (no Q6_K output
    /// or Q4_K_M/Q5_K_M bumps).
    #[arg(long)]
    pub pure: bool,
    /// Threads (default: all available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
}

const FORMATS_HELP: &str = "\
Formats:
  GGUF file (llama.cpp block types; the same tensor types and bytes llama-quantize writes without an imatrix):
    f32, f16, bf16                 every weight matrix in that float type: a dequantized copy of a quantized
                                   source, to run or compare against
    q8_0                           llama.cpp's Q8_0 file: every weight Q8_0
    q4_0, q4_1, q5_0, q5_1         llama.cpp's files of those types: the output (or the tied token embedding) Q6_K
    q4_k, q5_k                     llama.cpp's Q4_K_M and Q5_K_M mixes: output Q6_K, attn_v and ffn_down of about
                                   half the layers Q6_K
    q6_k                           llama.cpp's Q6_K file
    mxfp4                          every weight MXFP4 except the token embedding and output (Q8_0)
    Rows that are not whole blocks fall back as llama.cpp does (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0).
    --pure puts every weight in the format's own type. The source must be a GGUF file; quantized sources are
    dequantized to f32 first, and tensors already in the target type are copied as they are.
  compressed-tensors directory (Hugging Face safetensors):
    w8a8-int8, fp8-e4m3, w4a16-rtn, w4a16-awq, w4a16-gptq, nvfp4, mxfp4-ct
    w8a8-int8 smooths activation outliers into the weights first (SmoothQuant, strength searched on the
    calibration text); w4a16-awq scales and w4a16-gptq compensates on it.

Example:
  tessera quantize -m smollm2 -o smollm2-q4_k.gguf --format q4_k";

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let source = model_store::resolve(&args.model, false)?;
    if let (Ok(a), Ok(b)) = (source.canonicalize(), args.output.canonicalize()) {
        if a == b {
            bail!("{}: refusing to overwrite the source model", args.output.display());
        }
    }
    let calib_text = match &args.calib {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the calibration text {}", path.display()))?,
        ),
        None => None,
    };
    let format = args.format;
    let gguf = format.output() == Output::GgufFile;
    if calib_text.is_some() && !format.calibrates() {
        let users: Vec<&str> = Format::ALL.iter().filter(|f| f.calibrates()).map(|f| f.name()).collect();
        eprintln!("note: --calib is not used by {format}; only {} calibrate", users.join(", "));
    }
    if args.group_size.is_some() && gguf {
        eprintln!("note: --group-size is not used by {format}: its block size is fixed");
    }
    if args.pure && !gguf {
        eprintln!("note: --pure applies to the GGUF formats only");
    }
    let options = QuantizeOptions { format, group_size: args.group_size, calib_text, pure: args.pure };

    let mut bar = Bar::new();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    let summary = pool.install(|| tessera_quantize::quantize(&source, &args.output, &options, &mut bar));
    bar.bar.finish_and_clear();
    let summary = summary?;
    print!("{}", report(&summary, output_bytes(&summary.output)));
    Ok(())
}

/// The progress bar, on stderr when it is a terminal.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new() -> Bar {
        let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("  quantizing {bar:40} {pos}/{len} tensors {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar { bar }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: usize) {
        self.bar.set_length(total as u64);
    }

    fn tensor_done(&mut self, name: &str) {
        self.bar.inc(1);
        self.bar.set_message(name.to_string());
    }

    fn message(&mut self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

/// Size of what was written: the file, or the files of the directory.
fn output_bytes(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).ok()? {
        total += output_bytes(&entry.ok()?.path())?;
    }
    Some(total)
}

/// The summary: what was dequantized, then a table per output type and the totals.
fn report(summary: &Summary, written: Option<u64>) -> String {
    let mut out = String::new();
    if !summary.dequantized_from.is_empty() {
        out += &format!(
            "source tensors in {}: dequantized to f32 before quantizing\n",
            summary.dequantized_from.join(", ")
        );
    }
    let bpw = |bytes: u64, values: u64| if values == 0 { 0.0 } else { bytes as f64 * 8.0 / values as f64 };
    out += &format!("{:<8} {:>8} {:>14} {:>14} {:>8}\n", "type", "tensors", "values", "bytes", "bits/w");
    let rows = summary.by_output_type();
    for (dtype, n, values, bytes) in &rows {
        out += &format!(
            "{:<8} {:>8} {:>14} {:>14} {:>8.2}\n",
            dtype,
            n,
            thousands(*values),
            thousands(*bytes),
            bpw(*bytes, *values)
        );
    }
    let (n, values, bytes) = rows.iter().fold((0, 0, 0), |acc, r| (acc.0 + r.1, acc.1 + r.2, acc.2 + r.3));
    out += &format!(
        "{:<8} {:>8} {:>14} {:>14} {:>8.2}\n",
        "total",
        n,
        thousands(values),
        thousands(bytes),
        bpw(bytes, values)
    );
    let size = written.map_or("size unknown".to_string(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    out += &format!("wrote {} ({size})\n", summary.output.display());
    out
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_quantize::TensorReport;

    fn tensor(name: &str, output_type: &str, values: u64, bytes: u64) -> TensorReport {
        TensorReport { name: name.into(), source_type: "q4_1".into(), output_type: output_type.into(), values, bytes }
    }

    #[test]
    fn the_report_totals_each_type() {
        let summary = Summary {
            tensors: vec![
                tensor("a", "q8_0", 64, 68),
                tensor("n", "f32", 8, 32),
                tensor("b", "q8_0", 1_000_000, 1_062_500),
            ],
            dequantized_from: vec!["q4_1".into()],
            output: PathBuf::from("out.gguf"),
        };
        let text = report(&summary, Some(2 * 1048576));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "source tensors in q4_1: dequantized to f32 before quantizing");
        assert!(lines[2].starts_with("q8_0") && lines[2].contains("1,000,064") && lines[2].ends_with("8.50"), "{text}");
        assert!(lines[3].starts_with("f32") && lines[3].ends_with("32.00"), "{text}");
        assert!(lines[4].starts_with("total") && lines[4].contains("1,062,600"), "{text}");
        assert_eq!(lines[5], "wrote out.gguf (2.0 MiB)");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(123456789), "123,456,789");
    }
}
