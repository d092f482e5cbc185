//! `tessera serve`: the OpenAI-compatible server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use tessera_backend::DType;
use tessera_server::{EngineConfig, HttpConfig, ServerOptions};

use crate::cmd_run::load_model;
use crate::ComputeArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require this bearer key (repeatable).
    #[arg(long = "api-key")]
    pub api_keys: Vec<String>,
    /// Read bearer keys from a file, one per line (blank lines and `#` comments ignored).
    #[arg(long = "api-key-file")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// Model id clients use (default: the model file's name without extension).
    #[arg(long = "served-model-name")]
    pub served_model_name: Option<String>,
    /// Most tokens (prompt + completion) of one sequence (0: the model's context, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Tokens the KV cache holds across all sequences (0: 4 full contexts).
    #[arg(long = "kv-tokens", default_value_t = 0)]
    pub kv_tokens: usize,
    /// Tokens per KV block.
    #[arg(long = "block-size", default_value_t = 16)]
    pub block_size: usize,
    /// Most sequences decoded together.
    #[arg(long = "max-num-seqs", default_value_t = 32)]
    pub max_num_seqs: usize,
    /// Most tokens computed in one step (prompt chunks are cut to fit).
    #[arg(long = "max-batched-tokens", default_value_t = 512)]
    pub max_batched_tokens: usize,
    /// Do not reuse the KV cache of shared prompt prefixes.
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// Requests waiting for admission before new ones get 429.
    #[arg(long = "max-queue", default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body in bytes.
    #[arg(long = "max-body-bytes", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds one request may take before it is ended.
    #[arg(long = "timeout", default_value_t = 600)]
    pub timeout_s: u64,
    /// Seconds in-flight requests may take to finish after SIGTERM or Ctrl-C.
    #[arg(long = "shutdown-grace", default_value_t = 30)]
    pub shutdown_grace_s: u64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let mut api_keys = args.api_keys.clone();
    if let Some(path) = &args.api_key_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading API keys from {}", path.display()))?;
        api_keys
            .extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string));
        if api_keys.is_empty() {
            bail!("{} holds no API keys", path.display());
        }
    }
    if args.block_size == 0 || args.max_num_seqs == 0 || args.max_batched_tokens < args.max_num_seqs {
        bail!("--block-size and --max-num-seqs must be at least 1, and --max-batched-tokens at least --max-num-seqs");
    }
    let model = Arc::new(load_model(&args.compute)?);
    let ctx = if args.ctx_size == 0 { model.config().context_length.min(4096) } else { args.ctx_size };
    let kv_tokens = if args.kv_tokens == 0 { ctx * 4 } else { args.kv_tokens };
    let num_blocks = kv_tokens.div_ceil(args.block_size);
    if num_blocks * args.block_size < ctx {
        bail!("--kv-tokens {kv_tokens} cannot hold one full context of {ctx} tokens");
    }
    let model_name = args.served_model_name.clone().unwrap_or_else(|| {
        std::path::Path::new(&model.source.path)
            .file_stem()
            .map_or_else(|| args.compute.model.clone(), |s| s.to_string_lossy().into_owned())
    });
    let options = ServerOptions {
        host: args.host.clone(),
        port: args.port,
        engine: EngineConfig {
            block_size: args.block_size,
            num_blocks,
            max_num_seqs: args.max_num_seqs,
            max_batched_tokens: args.max_batched_tokens,
            enable_prefix_cache: !args.no_prefix_cache,
            max_queue: args.max_queue,
            kv_type: DType::F16,
        },
        http: HttpConfig {
            model_name: model_name.clone(),
            api_keys,
            max_body_bytes: args.max_body_bytes,
            max_context: ctx,
            request_timeout: Duration::from_secs(args.timeout_s),
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace_s),
    };
    eprintln!(
        "serving {model_name}: context {ctx} tokens per sequence, KV cache {num_blocks} blocks of {} tokens",
        args.block_size
    );
    tessera_server::run_blocking(model, options)
}
