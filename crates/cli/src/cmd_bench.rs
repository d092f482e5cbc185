//! `tessera bench`: prompt-processing and generation throughput, reported as llama-bench does
//! (same test names, same JSON field names), plus the process's peak resident memory.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tessera_backend::DType;
use tessera_formats::ModelSource;
use tessera_runtime::bench::{self, BenchTest};
use tessera_runtime::{ContextOptions, LoadedModel};

use crate::{backends, model_store};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model: a .gguf file, a Hugging Face directory, or a short name (smollm2, gemma3-270m).
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    pub model: String,
    /// Prompt lengths to time (comma-separated; 0 skips the pp tests).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    pub n_prompt: Vec<usize>,
    /// Generated token counts to time (comma-separated; 0 skips the tg tests).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Thread counts to time (comma-separated; default: all available cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Most tokens per forward step during prompt processing.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub n_batch: usize,
    /// Compute backend (see `tessera devices`).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    #[command(flatten)]
    pub device: crate::DeviceArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Md)]
    pub output: Output,
    /// Same as `-o json`.
    #[arg(long)]
    pub json: bool,
    /// Measure host memory read bandwidth per thread count instead of a model (for rooflines).
    #[arg(long)]
    pub mem_bandwidth: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A markdown table, as llama-bench prints.
    Md,
    /// One JSON array of records with llama-bench's field names.
    Json,
}

/// What the records say about the model, read once from its file.
struct ModelFacts {
    filename: String,
    description: String,
    size_bytes: u64,
    n_params: u64,
    shape: Value,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.n_batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    let tests: Vec<BenchTest> = args
        .n_prompt
        .iter()
        .filter(|&&p| p > 0)
        .map(|&p| BenchTest { n_prompt: p, n_gen: 0 })
        .chain(args.n_gen.iter().filter(|&&n| n > 0).map(|&n| BenchTest { n_prompt: 0, n_gen: n }))
        .collect();
    if tests.is_empty() {
        bail!("nothing to time: give a prompt length (-p) or a generation length (-n) above 0");
    }
    let threads = if args.threads.is_empty() { vec![backends::default_threads()] } else { args.threads.clone() };
    let output = if args.json { Output::Json } else { args.output };
    if threads.contains(&0) {
        bail!("--threads must be at least 1");
    }
    if args.mem_bandwidth {
        return mem_bandwidth(&threads, args.reps, output);
    }

    let path = model_store::resolve(&args.model, false)?;
    let facts = model_facts(&path)?;
    let n_ctx = tests.iter().map(BenchTest::tokens).max().unwrap_or(1);
    let mut records = Vec::new();
    if output == Output::Md {
        println!("| model                          |       size |     params | backend | threads |          test |                  t/s |  peak RSS |");
        println!("| ------------------------------ | ---------: | ---------: | ------- | ------: | ------------: | -------------------: | --------: |");
    }
    for &n_threads in &threads {
        let selected = backends::create(&args.backend, Some(n_threads), &args.device)?;
        let model = LoadedModel::load(&path, selected.backend, selected.cpu_fallback)
            .with_context(|| format!("loading {}", path.display()))?;
        let mut ctx = model.new_context(ContextOptions { n_ctx, n_batch: args.n_batch, kv_type: DType::F16 })?;
        for &test in &tests {
            let samples = bench::measure(&mut ctx, test, args.reps)?;
            let record = record(&args, &facts, &model, n_threads, test, &samples);
            if output == Output::Md {
                print_row(&facts, &record)?;
            }
            records.push(record);
        }
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

fn record(
    args: &BenchArgs,
    facts: &ModelFacts,
    model: &LoadedModel,
    n_threads: usize,
    test: BenchTest,
    samples: &[Duration],
) -> Value {
    let samples_ns: Vec<u64> = samples.iter().map(|d| d.as_nanos() as u64).collect();
    let samples_ts: Vec<f64> =
        samples.iter().map(|d| test.tokens() as f64 / d.as_secs_f64().max(f64::MIN_POSITIVE)).collect();
    let (avg_ns, stddev_ns) = bench::mean_stddev(&samples_ns.iter().map(|&n| n as f64).collect::<Vec<_>>());
    let (avg_ts, stddev_ts) = bench::mean_stddev(&samples_ts);
    let info = model.backend().info();
    json!({
        "build_commit": env!("TESSERA_BUILD_COMMIT"),
        "build_number": 0,
        "cpu_info": cpu_name(),
        "gpu_info": "",
        "backends": info.backend.to_uppercase(),
        "model_filename": facts.filename,
        "model_type": facts.description,
        "model_size": facts.size_bytes,
        "model_n_params": facts.n_params,
        "n_batch": args.n_batch,
        "n_ubatch": args.n_batch,
        "n_threads": n_threads,
        "type_k": "f16",
        "type_v": "f16",
        "n_gpu_layers": 0,
        "use_mmap": true,
        "embeddings": false,
        "n_prompt": test.n_prompt,
        "n_gen": test.n_gen,
        "n_depth": 0,
        "test_time": rfc3339_now(),
        "avg_ns": avg_ns.round() as u64,
        "stddev_ns": stddev_ns.round() as u64,
        "avg_ts": avg_ts,
        "stddev_ts": stddev_ts,
        "samples_ns": samples_ns,
        "samples_ts": samples_ts,
        "backend": args.backend,
        "device": info.name,
        "peak_rss_bytes": peak_rss_bytes(),
        "model_shape": facts.shape,
    })
}

fn print_row(facts: &ModelFacts, r: &Value) -> Result<()> {
    let test = BenchTest {
        n_prompt: r["n_prompt"].as_u64().unwrap_or(0) as usize,
        n_gen: r["n_gen"].as_u64().unwrap_or(0) as usize,
    };
    let rss = r["peak_rss_bytes"].as_u64().map_or("?".to_string(), |b| format!("{:.1} MiB", mib(b)));
    let line = format!(
        "| {:<30} | {:>6.2} MiB | {:>8.2} M | {:<7} | {:>7} | {:>13} | {:>20} | {:>9} |",
        facts.description,
        mib(facts.size_bytes),
        facts.n_params as f64 / 1e6,
        r["backends"].as_str().unwrap_or(""),
        r["n_threads"].as_u64().unwrap_or(0),
        test.name(),
        format!("{:.2} ± {:.2}", r["avg_ts"].as_f64().unwrap_or(0.0), r["stddev_ts"].as_f64().unwrap_or(0.0)),
        rss,
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Bytes read per second from a buffer far larger than any cache, split over `threads`; the best of
/// `reps` passes, as STREAM reports.
fn mem_bandwidth(threads: &[usize], reps: usize, output: Output) -> Result<()> {
    const BYTES: usize = 1 << 30;
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut records = Vec::new();
    for &n in threads {
        let mut best = Duration::MAX;
        for _ in 0..reps.max(2) {
            let start = std::time::Instant::now();
            let chunk = words.len().div_ceil(n);
            let total: u64 = std::thread::scope(|s| {
                let parts: Vec<_> = words
                    .chunks(chunk)
                    .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &w| a.wrapping_add(w))))
                    .collect();
                parts.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, u64::wrapping_add)
            });
            std::hint::black_box(total);
            best = best.min(start.elapsed());
        }
        let gbs = BYTES as f64 / best.as_secs_f64() / 1e9;
        if output == Output::Md {
            println!("host memory read bandwidth, {n} threads: {gbs:.2} GB/s");
        }
        records.push(
            json!({ "test": "mem_read", "n_threads": n, "bytes": BYTES, "read_gbs": gbs, "cpu_info": cpu_name() }),
        );
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Size, parameter count and shape of the model, from its file.
fn model_facts(path: &Path) -> Result<ModelFacts> {
    let source = ModelSource::open(path)?;
    let mut size_bytes = 0u64;
    let mut n_params = 0u64;
    let mut bytes_by_type: Vec<(DType, u64)> = Vec::new();
    for t in &source.tensors {
        let bytes = t.bytes.as_ref().len() as u64;
        size_bytes += bytes;
        n_params += t.shape.dims().iter().product::<usize>() as u64;
        // The model's type is the type of its matrices, as a file's name gives it.
        if t.shape.dims().len() == 2 {
            match bytes_by_type.iter_mut().find(|(d, _)| *d == t.dtype) {
                Some((_, b)) => *b += bytes,
                None => bytes_by_type.push((t.dtype, bytes)),
            }
        }
    }
    let main_type = bytes_by_type.iter().max_by_key(|(_, b)| *b).map_or("?".to_string(), |(d, _)| d.to_string());
    let m = &source.metadata;
    let arch = m.architecture()?.to_string();
    let get = |k: &str| m.opt(&format!("{arch}.{k}"), tessera_formats::Metadata::usize).ok().flatten();
    let n_embd = get("embedding_length");
    let n_head = get("attention.head_count");
    let head_dim = get("attention.key_length").or_else(|| Some(n_embd? / n_head?));
    let n_vocab = source.tensor("token_embd.weight").and_then(|t| t.shape.dims().first().copied());
    let shape = json!({
        "architecture": arch,
        "n_layer": get("block_count"),
        "n_embd": n_embd,
        "n_ff": get("feed_forward_length"),
        "n_head": n_head,
        "n_head_kv": get("attention.head_count_kv").or(n_head),
        "head_dim": head_dim,
        "n_vocab": n_vocab,
        "bits_per_weight": if n_params > 0 { size_bytes as f64 * 8.0 / n_params as f64 } else { 0.0 },
    });
    Ok(ModelFacts {
        filename: path.display().to_string(),
        description: format!("{arch} {} {}", params_label(n_params), main_type.to_uppercase()),
        size_bytes,
        n_params,
        shape,
    })
}

/// `135M`, `1.2B`: the size label llama.cpp puts in model descriptions.
fn params_label(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{}M", (n as f64 / 1e6).round()),
        n => format!("{}K", (n as f64 / 1e3).round()),
    }
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The process's peak resident set (VmHWM), where the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The current UTC time as `2026-11-23T10:00:00Z`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }

    #[test]
    fn size_labels() {
        assert_eq!(params_label(134_515_008), "135M");
        assert_eq!(params_label(1_235_814_400), "1.2B");
        assert_eq!(params_label(8_030_261_248), "8.0B");
    }
}
