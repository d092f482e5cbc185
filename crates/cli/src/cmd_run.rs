//! `tessera run`: stream a completion, or chat using the model's own template.

use std::io::{self, BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use tessera_runtime::{
    generate, Context, ContextOptions, GenerateOptions, GenerationStats, LoadedModel, Sampler, SamplerOptions,
};
use tessera_tokenizer::{ChatMessage, ChatTemplate, StreamDecoder};

use crate::{backends, model_store, ComputeArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Prompt. A raw completion prompt, or with --chat the first user message.
    #[arg(short = 'p', long = "prompt")]
    pub prompt: Option<String>,
    /// Tokens to generate (a chat reply also stops at the model's end-of-turn token).
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    pub n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to P.
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last --repeat-last-n tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed, for reproducible sampling.
    #[arg(short = 's', long = "seed", default_value_t = 0xDEC0DE)]
    pub seed: u64,
    /// Apply the model's chat template; interactive when no prompt is given.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Context size in tokens (0: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Most tokens per forward step while reading the prompt.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Do not print timings at the end.
    #[arg(long)]
    pub no_perf: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let sampler_options = SamplerOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        seed: args.seed,
    };
    sampler_options.validate().map_err(anyhow::Error::msg)?;
    if !args.chat && args.prompt.is_none() {
        bail!("give a prompt with -p, or --chat for an interactive chat");
    }
    if crate::exported_run::is_export_dir(&args.compute.model) {
        return crate::exported_run::run(&args, Sampler::new(sampler_options));
    }
    let model = load_model(&args.compute)?;
    let mut ctx = model.new_context(ContextOptions {
        n_ctx: args.ctx_size,
        n_batch: args.batch_size,
        ..ContextOptions::default()
    })?;
    let mut sampler = Sampler::new(sampler_options);
    match (&args.prompt, args.chat) {
        (Some(prompt), false) => {
            let tokens = model.tokenizer.encode(prompt, model.tokenizer.add_bos_by_default(), false);
            let options = GenerateOptions { max_tokens: args.n_predict, stop_at_eog: true };
            let stats = stream(&mut ctx, &tokens, &mut sampler, &options)?;
            report(&args, &stats);
        }
        (Some(prompt), true) => {
            let mut chat = Chat::new(&model, args.system.clone())?;
            let stats = chat.turn(&mut ctx, &mut sampler, prompt, args.n_predict)?;
            report(&args, &stats);
        }
        (None, _) => interactive(&args, &mut ctx, &mut sampler)?,
    }
    Ok(())
}

pub fn load_model(compute: &ComputeArgs) -> Result<LoadedModel> {
    let path = model_store::resolve(&compute.model, false)?;
    let selected = backends::create(&compute.backend, compute.threads, &compute.device)?;
    LoadedModel::load(Path::new(&path), selected.backend, selected.cpu_fallback)
        .with_context(|| format!("loading {}", path.display()))
}

/// Generates and prints tokens as they come (the decoder holds back unfinished UTF-8 characters).
fn stream(
    ctx: &mut Context<'_>,
    prompt: &[u32],
    sampler: &mut Sampler,
    options: &GenerateOptions,
) -> Result<(GenerationStats, String)> {
    let tokenizer = &ctx.model().tokenizer;
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut out = io::stdout().lock();
    let mut write_failed = None;
    let stats = generate(ctx, prompt, sampler, options, |token| {
        let piece = decoder.push(tokenizer.token_bytes(token));
        text.push_str(&piece);
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            write_failed = Some(e);
            return false;
        }
        true
    })?;
    let rest = decoder.finish();
    text.push_str(&rest);
    let _ = out.write_all(rest.as_bytes());
    let _ = writeln!(out);
    if let Some(e) = write_failed {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    Ok((stats, text))
}

fn report(args: &RunArgs, stats: &(GenerationStats, String)) {
    if !args.no_perf {
        print_timings(&stats.0);
    }
}

/// The line of timings `tessera run` ends with, as llama.cpp prints them.
pub fn print_timings(s: &GenerationStats) {
    eprintln!(
        "\nprompt: {} tokens in {:.1} ms ({:.2} tok/s) | generation: {} tokens in {:.1} ms ({:.2} tok/s) | stop: {:?}",
        s.prompt_tokens,
        s.prompt_time.as_secs_f64() * 1e3,
        s.prompt_tokens_per_second(),
        s.decode_steps,
        s.decode_time.as_secs_f64() * 1e3,
        s.decode_tokens_per_second(),
        s.stop
    );
}

/// A conversation rendered with the model's template; each turn evaluates only the new tokens.
struct Chat {
    template: ChatTemplate,
    messages: Vec<ChatMessage>,
    evaluated: Vec<u32>,
}

impl Chat {
    fn new(model: &LoadedModel, system: Option<String>) -> Result<Chat> {
        let template = match model.tokenizer.chat_template()? {
            Some(t) => t,
            None => {
                let (name, source) = ChatTemplate::builtin_for(&model.config().architecture);
                eprintln!("note: the model has no chat template; using the built-in {name} template");
                let text = |id: Option<u32>| id.map(|i| model.tokenizer.decode(&[i])).unwrap_or_default();
                ChatTemplate::new(source, &text(model.tokenizer.bos_id()), &text(model.tokenizer.eos_id()))?
            }
        };
        let messages = system.map(|s| vec![ChatMessage::new("system", s)]).unwrap_or_default();
        Ok(Chat { template, messages, evaluated: Vec::new() })
    }

    fn turn(
        &mut self,
        ctx: &mut Context<'_>,
        sampler: &mut Sampler,
        user: &str,
        max_tokens: usize,
    ) -> Result<(GenerationStats, String)> {
        let tokenizer = &ctx.model().tokenizer;
        self.messages.push(ChatMessage::new("user", user));
        let rendered = self.template.render(&self.messages, true)?;
        // Templates that write the BOS text themselves must not get a second BOS.
        let bos_in_text = tokenizer.bos_id().is_some_and(|b| rendered.starts_with(&tokenizer.decode(&[b])));
        let tokens = tokenizer.encode(&rendered, tokenizer.add_bos_by_default() && !bos_in_text, true);
        // Reuse the cached prefix shared with what was evaluated before.
        let common = self.evaluated.iter().zip(&tokens).take_while(|(a, b)| a == b).count().min(tokens.len() - 1);
        ctx.truncate(common);
        let options = GenerateOptions { max_tokens, stop_at_eog: true };
        let (stats, reply) = stream(ctx, &tokens[common..], sampler, &options)?;
        self.evaluated = tokens;
        self.messages.push(ChatMessage::new("assistant", reply.trim()));
        Ok((stats, reply))
    }
}

fn interactive(args: &RunArgs, ctx: &mut Context<'_>, sampler: &mut Sampler) -> Result<()> {
    let mut chat = Chat::new(ctx.model(), args.system.clone())?;
    let stdin = io::stdin();
    eprintln!("chatting with {} (end with Ctrl-D)", args.compute.model);
    loop {
        eprint!("> ");
        io::stderr().flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        chat.turn(ctx, sampler, line, args.n_predict)?;
    }
}
