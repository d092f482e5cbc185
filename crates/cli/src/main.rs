//! `tessera`: the command-line front end. The only place that reads environment variables,
//! prints to the terminal, or exits the process.

mod backends;
mod cmd_bench;
mod cmd_eval;
mod cmd_export;
mod cmd_inspect;
mod cmd_plan;
mod cmd_quantize;
mod cmd_route;
mod cmd_run;
mod cmd_serve;
mod cmd_tokenize;
mod exported_run;
mod model_store;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Vendor-neutral LLM inference: load, quantize, run, serve.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, or chat with a model.
    Run(cmd_run::RunArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(cmd_tokenize::TokenizeArgs),
    /// Describe a model: architecture, sizes, tokenizer, chat template, tensor types.
    Inspect(cmd_inspect::InspectArgs),
    /// Serve an OpenAI-compatible API (chat and text completions) with continuous batching.
    Serve(cmd_serve::ServeArgs),
    /// Measure prompt-processing and generation throughput, as llama-bench does.
    Bench(cmd_bench::BenchArgs),
    /// Route OpenAI requests over a fleet of servers by policy, health, load, cost and prefix.
    Route(cmd_route::RouteArgs),
    /// Quantize a model: GGUF block types (as llama-quantize) or compressed-tensors checkpoints.
    Quantize(cmd_quantize::QuantizeArgs),
    /// Evaluate models on a text: perplexity, KL divergence from the first, top-1 agreement, bpw.
    Eval(cmd_eval::EvalArgs),
    /// Export a model for other runtimes (ONNX, for graph compilers such as QNN, CANN, OpenVINO).
    #[command(subcommand)]
    Export(cmd_export::ExportCommand),
    /// Plan hardware: chips by export-control class, performance, $ per million tokens, fleets.
    #[command(subcommand)]
    Plan(cmd_plan::PlanCommand),
    /// Fetch models known by short name into the local cache.
    Pull(PullArgs),
    /// List the compute backends and their devices.
    Devices,
}

/// Options shared by every command that computes.
#[derive(Args, Clone, Debug)]
pub struct ComputeArgs {
    /// Model: a .gguf file, a Hugging Face directory, or a short name (smollm2, gemma3-270m).
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    pub model: String,
    /// Threads for the CPU backend (default: all available cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Compute backend: cpu, wgpu (the best GPU adapter, rounding as the CPU does), wgpu:N (see
    /// `tessera devices`), or wgpu-relaxed[:N] (f16 and subgroups where the GPU
    /// has them, no f64; within the conformance tolerances).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Options of the backends that hand graphs to a vendor's runtime (`ort:*`).
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// An option for the ONNX Runtime execution provider, KEY=VALUE (repeatable), passed as
    /// given (e.g. `backend_type=htp` for QNN, `device_type=CPU` for OpenVINO);
    /// `ep_library=PATH` names the provider's plugin library.
    #[arg(long = "ep-opt", value_name = "KEY=VALUE")]
    pub ep_opt: Vec<String>,
    /// Fail instead of running on the CPU what the chosen device does not take (ONNX Runtime
    /// nodes left to its CPU kernels; ops a GPU backend declines).
    #[arg(long)]
    pub no_cpu_fallback: bool,
}

#[derive(Args)]
struct PullArgs {
    /// Short names to fetch (default: smollm2).
    names: Vec<String>,
    /// List the known short names and where they are cached.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Warnings by default, and the server's one line per request.
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,tessera_server=info,tessera_router=info,tessera_backend_ort=info")
        }))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::FAILURE;
            }
            // One line: clap's first paragraph names the problem (a list of missing arguments
            // follows on indented lines); the usage after it is noise.
            let text = e.render().to_string();
            let problem: Vec<&str> =
                text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).filter(|l| !l.is_empty()).collect();
            let first = if problem.is_empty() { "invalid arguments".to_string() } else { problem.join(" ") };
            eprintln!("error: {} (see --help)", first.trim_start_matches("error: "));
            return ExitCode::FAILURE;
        }
    };
    if !matches!(cli.command, Command::Serve(_) | Command::Route(_)) {
        exit_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Run(args) => cmd_run::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::Serve(args) => cmd_serve::run(args),
        Command::Tokenize(args) => cmd_tokenize::run(args),
        Command::Inspect(args) => cmd_inspect::run(args),
        Command::Quantize(args) => cmd_quantize::run(args),
        Command::Route(args) => cmd_route::run(args),
        Command::Eval(cmd) => cmd_eval::run(cmd),
        Command::Plan(cmd) => cmd_plan::run(cmd),
        Command::Export(cmd) => cmd_export::run(cmd),
        Command::Pull(args) => pull(args),
        Command::Devices => backends::print_devices(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Printing into a closed pipe (`tessera bench | head`) ends the process quietly, as it does for
/// other Unix tools, instead of panicking in `println!`. The servers keep Rust's default (SIGPIPE
/// ignored, the write fails) so that a client hanging up never ends them.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn pull(args: PullArgs) -> anyhow::Result<()> {
    if args.list {
        for m in model_store::KNOWN_MODELS {
            let path = model_store::models_dir().join(m.file_name);
            let state = if path.exists() { "cached" } else { "not fetched" };
            println!("{:<12} {} [{state}: {}]", m.name, m.description, path.display());
        }
        return Ok(());
    }
    let names = if args.names.is_empty() { vec!["smollm2".to_string()] } else { args.names };
    for name in names {
        let known = model_store::find_known(&name).ok_or_else(|| anyhow::anyhow!("unknown model name {name:?}"))?;
        let path = model_store::ensure(known, false)?;
        println!("{}", path.display());
    }
    Ok(())
}
