//! `tessera run` on an export directory (`tessera export onnx`): the graphs compiled by ONNX
//! Runtime's provider, the tokenizer and chat template from the directory's `model.gguf`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tessera_backend_ort::{ExportedModel, OrtOptions};
use tessera_formats::ModelSource;
use tessera_runtime::{GenerationStats, Sampler, StopReason};
use tessera_tokenizer::{ChatMessage, StreamDecoder, Tokenizer};

use crate::cmd_run::RunArgs;
use crate::{backends, DeviceArgs};

/// Whether `model` names an export directory.
pub fn is_export_dir(model: &str) -> bool {
    Path::new(model).join(tessera_onnx::export::MANIFEST_FILE).is_file()
}

/// The ONNX Runtime options an export directory runs with: `--backend ort:PROVIDER`.
pub fn ort_options(backend: &str, threads: Option<usize>, device: &DeviceArgs) -> Result<OrtOptions> {
    let provider = backend.strip_prefix("ort:").with_context(|| {
        format!("an exported model runs on ONNX Runtime: use --backend ort:cpu|qnn|cann|openvino, not {backend}")
    })?;
    backends::ort_options(provider, threads.unwrap_or_else(backends::default_threads), device)
}

/// The exported model and its tokenizer.
pub fn open(dir: &Path, options: &OrtOptions) -> Result<(ExportedModel, Tokenizer)> {
    let model = ExportedModel::open(dir, options).with_context(|| format!("loading {}", dir.display()))?;
    let file = dir.join(&model.manifest.tokenizer);
    let tokenizer = if file.extension().is_some_and(|e| e == "json") {
        let config = dir.join("tokenizer_config.json");
        Tokenizer::from_json_file(&file, config.is_file().then_some(config.as_path()))
    } else {
        Tokenizer::from_source(&ModelSource::open(&file)?)
    }
    .context("the export's tokenizer")?;
    Ok((model, tokenizer))
}

pub fn run(args: &RunArgs, mut sampler: Sampler) -> Result<()> {
    let dir = Path::new(&args.compute.model);
    let options = ort_options(&args.compute.backend, args.compute.threads, &args.compute.device)?;
    let (mut model, tokenizer) = open(dir, &options)?;
    let Some(prompt) = &args.prompt else { bail!("give a prompt with -p (an exported model has no interactive chat)") };
    let text = if args.chat {
        let template = tokenizer.chat_template()?.context("the export's model.gguf has no chat template")?;
        let mut messages = args.system.iter().map(|s| ChatMessage::new("system", s.clone())).collect::<Vec<_>>();
        messages.push(ChatMessage::new("user", prompt.clone()));
        template.render(&messages, true)?
    } else {
        prompt.clone()
    };
    let bos_in_text = tokenizer.bos_id().is_some_and(|b| text.starts_with(&tokenizer.decode(&[b])));
    let tokens = tokenizer.encode(&text, tokenizer.add_bos_by_default() && !bos_in_text, args.chat);
    if tokens.is_empty() {
        bail!("the prompt has no tokens");
    }
    let vocab = model.manifest.vocab;
    let t0 = Instant::now();
    let logits = model.eval(&tokens)?;
    let prompt_time = t0.elapsed();
    let mut last = logits[logits.len() - vocab..].to_vec();
    let mut history = tokens.clone();
    let mut decoder = StreamDecoder::new();
    let mut out = std::io::stdout().lock();
    let (mut steps, mut decode_time, mut generated) = (0, Duration::ZERO, 0);
    let mut stop = StopReason::MaxTokens;
    while generated < args.n_predict {
        let token = sampler.sample(&last, &history);
        if tokenizer.is_end_of_generation(token) {
            stop = StopReason::EndOfGeneration;
            break;
        }
        generated += 1;
        let piece = decoder.push(tokenizer.token_bytes(token));
        out.write_all(piece.as_bytes()).and_then(|_| out.flush())?;
        history.push(token);
        if generated == args.n_predict {
            break;
        }
        if model.n_past() >= model.context() {
            stop = StopReason::ContextFull;
            break;
        }
        let t = Instant::now();
        last = model.eval(&[token])?;
        decode_time += t.elapsed();
        steps += 1;
    }
    out.write_all(decoder.finish().as_bytes())?;
    writeln!(out)?;
    if !args.no_perf {
        let stats = GenerationStats {
            prompt_tokens: tokens.len(),
            prompt_time,
            generated_tokens: generated,
            decode_steps: steps,
            decode_time,
            stop,
        };
        crate::cmd_run::print_timings(&stats);
    }
    Ok(())
}
