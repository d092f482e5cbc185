//! `tessera plan`: hardware choice by performance, cost per million tokens and export-control
//! class, offline from the planner's catalog and rule data (tessera-planner). This file only reads
//! files and flags and prints; the planning is in the planner crate.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tessera_formats::{Metadata, ModelSource};
use tessera_planner::calibrate::{self, Calibration};
use tessera_planner::fleet::{self, FleetOptions, Workload};
use tessera_planner::perf::{self, default_precisions, Efficiency, Hardware};
use tessera_planner::profile::{Profile, Statistic};
use tessera_planner::report::{self, ReportInput};
use tessera_planner::tco::{self, PricePoint, Pricing};
use tessera_planner::{Assumptions, Catalog, ModelShape, NamedModels, Precision, RuleBook};

use crate::model_store;

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Classify every chip under a rule set: TPP, performance density, class (and a destination).
    Chips(Box<ChipsArgs>),
    /// List the export-control rule sets with their citations and thresholds.
    Rules(Box<RulesArgs>),
    /// Tokens/s and $ per million tokens for a model on one chip.
    Estimate(Box<EstimateArgs>),
    /// Fit the performance model to `tessera bench --json` profiles: predicted vs measured.
    Calibrate(Box<CalibrateArgs>),
    /// The cheapest mix of allowed hardware that serves a workload within its latency targets.
    Fleet(Box<FleetArgs>),
    /// Write a self-contained HTML report (tables and SVG plots).
    Report(Box<ReportArgs>),
}

/// Where the planner's data comes from.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Hardware catalog (TOML) to use instead of the built-in one.
    #[arg(long, value_name = "PATH")]
    pub catalog: Option<PathBuf>,
    /// Rule set file (TOML) to add, or to replace the built-in set with the same id.
    #[arg(long = "rules-file", value_name = "PATH")]
    pub rules_files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ChipsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Rule set id (see `tessera plan rules`).
    #[arg(long, default_value = "us-2023-10")]
    pub rules: String,
    /// Destination as an ISO country code (CN, AE, DE, US, SG, IN, ...): adds a verdict per chip.
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long)]
    pub json: bool,
}

/// Which model, and how it is stored.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file, a Hugging Face directory, a short name (smollm2, gemma3-270m), or a
    /// named shape (llama-3.1-8b, llama-3.1-70b, llama-3.2-1b, llama-3.2-3b, qwen2.5-7b, mistral-7b,
    /// smollm2-135m, gemma-3-270m).
    #[arg(short = 'm', long = "model", default_value = "llama-3.1-8b")]
    pub model: String,
    /// Store the weights at this type instead (q4_0, q4_k_m, q8_0, fp8, bf16, ...).
    #[arg(long)]
    pub quant: Option<String>,
    /// KV cache element type.
    #[arg(long = "kv-type", value_enum, default_value_t = KvType::F16)]
    pub kv_type: KvType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvType {
    F16,
    F32,
    Q8_0,
}

impl KvType {
    fn bytes(self) -> f64 {
        match self {
            KvType::F16 => 2.0,
            KvType::F32 => 4.0,
            KvType::Q8_0 => 34.0 / 32.0,
        }
    }
}

/// Every TCO and performance assumption; unset flags keep the cited defaults.
#[derive(Args, Debug, Clone)]
pub struct AssumptionArgs {
    /// Years over which hardware is amortised.
    #[arg(long = "lifetime-years")]
    pub lifetime_years: Option<f64>,
    /// Power usage effectiveness of the datacenter.
    #[arg(long)]
    pub pue: Option<f64>,
    /// Energy price, $/kWh.
    #[arg(long = "energy-price")]
    pub energy_price: Option<f64>,
    /// Colocation, $/kW/month.
    #[arg(long)]
    pub hosting: Option<f64>,
    /// System watts per accelerator watt (host, NICs, fans).
    #[arg(long = "power-overhead")]
    pub power_overhead: Option<f64>,
    /// Multiplier on the accelerator's price for its share of the server.
    #[arg(long = "capex-overhead")]
    pub capex_overhead: Option<f64>,
    /// Fraction of hours the hardware serves at the modelled rate.
    #[arg(long)]
    pub utilisation: Option<f64>,
    /// Fraction of device memory usable for weights and KV cache.
    #[arg(long = "usable-memory")]
    pub usable_memory: Option<f64>,
    /// Fraction of peak compute reached (uncalibrated hardware).
    #[arg(long = "eff-compute")]
    pub eff_compute: Option<f64>,
    /// Fraction of peak memory bandwidth reached (uncalibrated hardware).
    #[arg(long = "eff-memory")]
    pub eff_memory: Option<f64>,
    /// Rows (tokens) per step at which half of --eff-compute is reached (uncalibrated hardware).
    #[arg(long = "eff-rows-half")]
    pub eff_rows_half: Option<f64>,
    /// Latency of one small all-reduce across a tensor-parallel group, microseconds.
    #[arg(long = "allreduce-latency-us")]
    pub allreduce_latency_us: Option<f64>,
    /// Buy (capex + power + hosting), rent (on-demand price), or buy when a price is known.
    #[arg(long, value_enum, default_value_t = PricingArg::Auto)]
    pub pricing: PricingArg,
    /// Which end of a catalog price range to use.
    #[arg(long, value_enum, default_value_t = PriceArg::Mid)]
    pub price: PriceArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PricingArg {
    Auto,
    Buy,
    Rent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PriceArg {
    Low,
    Mid,
    High,
}

impl AssumptionArgs {
    fn assumptions(&self) -> Result<Assumptions> {
        let mut a = Assumptions::builtin()?;
        for (name, v) in [
            ("lifetime_years", self.lifetime_years),
            ("pue", self.pue),
            ("energy_usd_per_kwh", self.energy_price),
            ("hosting_usd_per_kw_month", self.hosting),
            ("power_overhead", self.power_overhead),
            ("capex_overhead", self.capex_overhead),
            ("utilisation", self.utilisation),
            ("usable_memory_fraction", self.usable_memory),
            ("eff_compute", self.eff_compute),
            ("eff_memory", self.eff_memory),
            ("eff_rows_half", self.eff_rows_half),
            ("allreduce_latency_us", self.allreduce_latency_us),
        ] {
            if let Some(v) = v {
                a.set(name, v)?;
            }
        }
        Ok(a)
    }

    fn pricing(&self) -> (Pricing, PricePoint) {
        let pricing = match self.pricing {
            PricingArg::Auto => Pricing::Auto,
            PricingArg::Buy => Pricing::Buy,
            PricingArg::Rent => Pricing::Rent,
        };
        let point = match self.price {
            PriceArg::Low => PricePoint::Low,
            PriceArg::Mid => PricePoint::Mid,
            PriceArg::High => PricePoint::High,
        };
        (pricing, point)
    }
}

/// Measured profiles that calibrate one chip.
#[derive(Args, Debug, Clone)]
pub struct ProfileArgs {
    /// `tessera bench --json` output(s) measured on --profile-chip.
    #[arg(long = "profile", value_name = "FILE")]
    pub profiles: Vec<PathBuf>,
    /// The catalog chip the profiles were measured on.
    #[arg(long = "profile-chip", default_value = "local-zen3-2c")]
    pub profile_chip: String,
    /// Measured memory read bandwidth of that chip, GB/s (else the profile's mem_read records, else the catalog).
    #[arg(long = "mem-bw")]
    pub mem_bw: Option<f64>,
    /// Which summary of a profile's repetitions to fit: the fastest (default; on a shared machine
    /// other work only slows runs down) or the mean llama-bench reports.
    #[arg(long = "measure", value_enum, default_value_t = MeasureArg::Best)]
    pub measure: MeasureArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MeasureArg {
    Best,
    Mean,
}

impl MeasureArg {
    fn statistic(self) -> Statistic {
        match self {
            MeasureArg::Best => Statistic::Best,
            MeasureArg::Mean => Statistic::Mean,
        }
    }
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Chip id (see `tessera plan chips`).
    #[arg(long)]
    pub chip: String,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Context length: the prompt read, and the context each decode step attends to.
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// Tensor-parallel degree (chips per instance).
    #[arg(long, default_value_t = 1)]
    pub tp: u32,
    /// Threads, for CPU chips (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<u32>,
    /// Matmul precision (fp32, fp16, fp8, int8, fp4); default: int8 for quantized models on CPUs, fp16 elsewhere.
    #[arg(long)]
    pub precision: Option<String>,
    /// `tessera bench --json` output(s) measured on this chip, to calibrate it.
    #[arg(long = "profile", value_name = "FILE")]
    pub profiles: Vec<PathBuf>,
    /// Measured memory read bandwidth, GB/s (replaces the catalog figure).
    #[arg(long = "mem-bw")]
    pub mem_bw: Option<f64>,
    #[command(flatten)]
    pub assumptions: AssumptionArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub assumptions: AssumptionArgs,
    #[arg(long)]
    pub json: bool,
}

/// The workload and its targets.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Requests per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Input length, or a distribution `TOKENS:WEIGHT,...` (e.g. 512:0.7,4096:0.3).
    #[arg(long = "input-tokens", default_value = "1024")]
    pub input_tokens: String,
    /// Output length, or a distribution `TOKENS:WEIGHT,...`.
    #[arg(long = "output-tokens", default_value = "256")]
    pub output_tokens: String,
    /// Target mean time to first token, milliseconds.
    #[arg(long = "slo-ttft", value_name = "MS", default_value_t = 1000.0)]
    pub slo_ttft_ms: f64,
    /// Target inter-token latency, milliseconds.
    #[arg(long = "slo-itl", value_name = "MS")]
    pub slo_itl_ms: Option<f64>,
    /// Tensor-parallel degrees to consider (comma-separated).
    #[arg(long = "tp", value_delimiter = ',', default_value = "1,2,4,8")]
    pub tp: Vec<u32>,
    /// Do not count "allowed after notification" (License Exception NAC) as allowed.
    #[arg(long = "no-notified")]
    pub no_notified: bool,
    /// Consider chips whose classification the data cannot decide.
    #[arg(long = "include-unknown-class")]
    pub include_unknown_class: bool,
}

#[derive(Args, Debug)]
pub struct FleetArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Destination (ISO country code).
    #[arg(long)]
    pub region: String,
    /// Rule set id.
    #[arg(long, default_value = "us-2023-10")]
    pub rules: String,
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub assumptions: AssumptionArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the HTML report.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Rule set id for the map and the destination verdicts.
    #[arg(long, default_value = "us-2023-10")]
    pub rules: String,
    /// Destination (ISO country code); also where the fleet is planned (default US).
    #[arg(long)]
    pub region: Option<String>,
    /// Sequences decoded together in the cost comparison.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Context length in the cost comparison.
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub assumptions: AssumptionArgs,
}

pub fn run(cmd: PlanCommand) -> Result<()> {
    match cmd {
        PlanCommand::Chips(a) => chips(*a),
        PlanCommand::Rules(a) => rules(*a),
        PlanCommand::Estimate(a) => estimate(*a),
        PlanCommand::Calibrate(a) => calibrate_cmd(*a),
        PlanCommand::Fleet(a) => fleet_cmd(*a),
        PlanCommand::Report(a) => report_cmd(*a),
    }
}

fn read(path: &Path, what: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// The catalog and rule book, built-in or from files, checked against each other.
fn load_data(d: &DataArgs) -> Result<(Catalog, RuleBook)> {
    let catalog = match &d.catalog {
        Some(p) => Catalog::parse(&read(p, "catalog")?, &p.display().to_string())?,
        None => Catalog::builtin()?,
    };
    let extra: Vec<(String, String)> =
        d.rules_files.iter().map(|p| Ok((p.display().to_string(), read(p, "rule set")?))).collect::<Result<_>>()?;
    let book = RuleBook::builtin_with(&extra)?;
    for note in book.unknown_chips(&catalog) {
        eprintln!("note: {note}");
    }
    Ok((catalog, book))
}

fn print_json(v: serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn chips(a: ChipsArgs) -> Result<()> {
    let (catalog, book) = load_data(&a.data)?;
    let set = book.set(&a.rules)?;
    let rows = report::chip_rows(&catalog, &book, set, a.region.as_deref())?;
    if a.json {
        print_json(report::chips_json(&rows))
    } else {
        print!("{}", report::chips_text(&rows, set));
        Ok(())
    }
}

fn rules(a: RulesArgs) -> Result<()> {
    let (_, book) = load_data(&a.data)?;
    if a.json {
        print_json(report::rules_json(&book))
    } else {
        print!("{}", report::rules_text(&book));
        Ok(())
    }
}

/// A model shape from a file, a short name, or the planner's named shapes.
fn model_shape(args: &ModelArgs) -> Result<ModelShape> {
    let named = NamedModels::builtin()?;
    let name = args.model.as_str();
    let path = Path::new(name);
    let mut shape = if path.exists() {
        shape_from_file(path)?
    } else if let Some(known) = model_store::find_known(name) {
        let cached = model_store::models_dir().join(known.file_name);
        if cached.is_file() {
            shape_from_file(&cached)?
        } else {
            shape_from_file(&model_store::resolve(name, false)?)?
        }
    } else if let Some(s) = named.get(name) {
        s.clone()
    } else {
        let short: Vec<&str> = model_store::KNOWN_MODELS.iter().map(|m| m.name).collect();
        bail!(
            "model {name:?} is neither a file, a short name ({}) nor a named shape ({})",
            short.join(", "),
            named.names().collect::<Vec<_>>().join(", ")
        );
    };
    if let Some(q) = &args.quant {
        shape = shape.with_bits(named.quant_bits(q)?);
        shape.name = format!("{} ({q})", shape.name);
    }
    shape.kv_bytes_per_elem = args.kv_type.bytes();
    shape.validate()?;
    Ok(shape)
}

/// Reads the shape from a GGUF file or Hugging Face directory (GGUF key names).
fn shape_from_file(path: &Path) -> Result<ModelShape> {
    let source = ModelSource::open(path)?;
    let m = &source.metadata;
    let arch = m.architecture()?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let n_embd = m.usize(&key("embedding_length"))?;
    let n_head = m.usize(&key("attention.head_count"))?;
    if n_head == 0 {
        bail!("{}: {arch}.attention.head_count is 0", path.display());
    }
    let head_dim = m.opt(&key("attention.key_length"), Metadata::usize)?.unwrap_or(n_embd / n_head);
    let n_vocab = match m.opt(&key("vocab_size"), Metadata::usize)? {
        Some(v) => v,
        None => source
            .tensor("token_embd.weight")
            .and_then(|t| t.shape.dims().first().copied())
            .with_context(|| format!("{}: no {arch}.vocab_size and no token_embd.weight", path.display()))?,
    };
    let (mut bytes, mut params) = (0u64, 0u64);
    for t in &source.tensors {
        bytes += t.bytes.as_ref().len() as u64;
        params += t.shape.count() as u64;
    }
    if params == 0 {
        bail!("{}: the model has no weights", path.display());
    }
    let u =
        |v: usize, what: &str| u32::try_from(v).with_context(|| format!("{}: {what} {v} is too large", path.display()));
    let name = m.str("general.name").map(str::to_string).unwrap_or_else(|_| {
        path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned())
    });
    Ok(ModelShape {
        name,
        architecture: arch.clone(),
        n_params: params as f64,
        n_layer: u(m.usize(&key("block_count"))?, "block_count")?,
        n_embd: u(n_embd, "embedding_length")?,
        n_ff: u(m.usize(&key("feed_forward_length"))?, "feed_forward_length")?,
        n_head: u(n_head, "head_count")?,
        n_head_kv: u(m.opt(&key("attention.head_count_kv"), Metadata::usize)?.unwrap_or(n_head), "head_count_kv")?,
        head_dim: u(head_dim, "key_length")?,
        n_vocab: u(n_vocab, "vocab size")?,
        bits_per_weight: bytes as f64 * 8.0 / params as f64,
        kv_bytes_per_elem: 2.0,
        weight_bytes: Some(bytes as f64),
    })
}

fn load_profiles(paths: &[PathBuf]) -> Result<Profile> {
    let mut p = Profile::default();
    for path in paths {
        p.add(&read(path, "profile")?, &path.display().to_string())?;
    }
    Ok(p)
}

/// Calibrates the profile chip when profiles are given.
fn calibration(catalog: &Catalog, args: &ProfileArgs, a: &Assumptions) -> Result<Option<Calibration>> {
    if args.profiles.is_empty() {
        return Ok(None);
    }
    let profile = load_profiles(&args.profiles)?;
    Ok(Some(calibrate::calibrate(catalog, &args.profile_chip, &profile, args.mem_bw, a, args.measure.statistic())?))
}

fn estimate(args: EstimateArgs) -> Result<()> {
    let (catalog, _) = load_data(&args.data)?;
    let a = args.assumptions.assumptions()?;
    let (pricing, point) = args.assumptions.pricing();
    let model = model_shape(&args.model)?;
    let chip = catalog.chip(&args.chip)?;
    let profile = load_profiles(&args.profiles)?;
    let threads = args.threads.or(chip.cores);
    let bandwidth = args.mem_bw.or_else(|| threads.and_then(|t| profile.memory_bandwidth(t)));
    let eff = if profile.records.is_empty() {
        Efficiency::defaults(&a)
    } else {
        calibrate::calibrate(&catalog, &chip.id, &profile, bandwidth, &a, Statistic::Best)?.efficiency
    };
    let precisions = match &args.precision {
        Some(p) => {
            let p = Precision::parse(p)?;
            (p, default_precisions(chip, &model).1)
        }
        None => default_precisions(chip, &model),
    };
    let hw = Hardware::new(chip, args.tp, precisions, threads, bandwidth, &a)?;
    let est = perf::estimate(&model, &hw, &eff, a.usable_memory_fraction.value, args.batch, args.ctx, 512)?;
    let cost = tco::hourly_cost(chip, &a, pricing, point)
        .map(|h| tco::token_cost(&h, args.tp, est.prefill_tokens_per_s, est.decode_tokens_per_s, a.utilisation.value));
    if args.json {
        let cost_json = match &cost {
            Ok(c) => serde_json::to_value(c)?,
            Err(e) => json!({ "unknown": e.to_string() }),
        };
        let mut out = serde_json::Map::new();
        out.insert("model".into(), serde_json::to_value(&model)?);
        out.insert("estimate".into(), serde_json::to_value(&est)?);
        out.insert("cost".into(), cost_json);
        out.insert("assumptions".into(), serde_json::to_value(&a)?);
        return print_json(serde_json::Value::Object(out));
    }
    print!("{}", report::estimate_text(&est, &cost));
    Ok(())
}

fn calibrate_cmd(args: CalibrateArgs) -> Result<()> {
    if args.profile.profiles.is_empty() {
        bail!("give at least one --profile FILE (tessera bench --json output)");
    }
    let (catalog, _) = load_data(&args.data)?;
    let a = args.assumptions.assumptions()?;
    let cal = calibration(&catalog, &args.profile, &a)?.context("no profiles")?;
    if args.json {
        return print_json(serde_json::to_value(&cal)?);
    }
    print!("{}", report::calibration_text(&cal));
    Ok(())
}

/// `512` or `512:0.7,4096:0.3`.
fn distribution(text: &str, what: &str) -> Result<Vec<(u32, f64)>> {
    text.split(',')
        .map(|part| {
            let (t, w) = part.split_once(':').unwrap_or((part, "1"));
            let tokens: u32 = t.trim().parse().with_context(|| format!("{what}: {t:?} is not a token count"))?;
            let weight: f64 = w.trim().parse().with_context(|| format!("{what}: {w:?} is not a weight"))?;
            Ok((tokens, weight))
        })
        .collect()
}

fn workload(w: &WorkloadArgs) -> Result<Workload> {
    let rate = w.rate.context("give the request rate with --rate")?;
    Ok(Workload::from_distributions(
        rate,
        &distribution(&w.input_tokens, "--input-tokens")?,
        &distribution(&w.output_tokens, "--output-tokens")?,
        w.slo_ttft_ms / 1e3,
        w.slo_itl_ms.map(|v| v / 1e3),
    )?)
}

fn fleet_options(w: &WorkloadArgs, region: &str, a: &AssumptionArgs) -> FleetOptions {
    let (pricing, price_point) = a.pricing();
    FleetOptions {
        tp_degrees: w.tp.clone(),
        allow_notified: !w.no_notified,
        include_unknown_class: w.include_unknown_class,
        pricing,
        price_point,
        ..FleetOptions::new(region)
    }
}

fn fleet_cmd(args: FleetArgs) -> Result<()> {
    let (catalog, book) = load_data(&args.data)?;
    let a = args.assumptions.assumptions()?;
    let model = model_shape(&args.model)?;
    let work = workload(&args.workload)?;
    let cal = calibration(&catalog, &args.profile, &a)?;
    let calibrated: Vec<(String, Efficiency)> = cal.iter().map(|c| (c.chip.clone(), c.efficiency.clone())).collect();
    let inputs = fleet::Inputs { catalog: &catalog, rules: &book, assumptions: &a, calibrated: &calibrated };
    let plan = fleet::plan_fleet(
        &inputs,
        &args.rules,
        &model,
        &work,
        &fleet_options(&args.workload, &args.region, &args.assumptions),
    )?;
    if args.json {
        return print_json(serde_json::to_value(&plan)?);
    }
    print!("{}", report::fleet_text(&plan));
    Ok(())
}

fn report_cmd(args: ReportArgs) -> Result<()> {
    let (catalog, book) = load_data(&args.data)?;
    let a = args.assumptions.assumptions()?;
    let (pricing, point) = args.assumptions.pricing();
    let model = model_shape(&args.model)?;
    let set = book.set(&args.rules)?;
    if let Some(r) = &args.region {
        book.countries.resolve(r)?;
    }
    let cal = calibration(&catalog, &args.profile, &a)?;
    let calibrated: Vec<(String, Efficiency)> = cal.iter().map(|c| (c.chip.clone(), c.efficiency.clone())).collect();
    let econ = report::economics(&catalog, &model, &a, args.batch, args.ctx, pricing, point, &calibrated);
    let plan = match args.workload.rate {
        Some(_) => {
            let region = args.region.clone().unwrap_or_else(|| "US".into());
            let inputs = fleet::Inputs { catalog: &catalog, rules: &book, assumptions: &a, calibrated: &calibrated };
            Some(fleet::plan_fleet(
                &inputs,
                &set.id,
                &model,
                &workload(&args.workload)?,
                &fleet_options(&args.workload, &region, &args.assumptions),
            )?)
        }
        None => None,
    };
    let generated = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| report::utc_date(d.as_secs()))
        .unwrap_or_default();
    let html = report::html(&ReportInput {
        title: &format!("Tessera hardware plan: {}", model.name),
        generated: &generated,
        catalog: &catalog,
        book: &book,
        rule_set: set,
        region: args.region.as_deref(),
        model: &model,
        batch: args.batch,
        context: args.ctx,
        economics: &econ,
        fleet: plan.as_ref(),
        calibration: cal.as_ref(),
        assumptions: &a,
    })?;
    fs::write(&args.output, html).with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", args.output.display());
    Ok(())
}
