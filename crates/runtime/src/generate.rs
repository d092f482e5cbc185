//! The generation loop: evaluate the prompt, then sample and feed back one token at a time.

use std::time::{Duration, Instant};

use tessera_models::Logits;

use crate::context::Context;
use crate::sampling::Sampler;
use crate::RuntimeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// Stop at the tokenizer's end-of-generation tokens (not included in the output).
    pub stop_at_eog: bool,
}

/// Token counts and timings, as llama.cpp reports them.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    /// Tokens handed to the callback.
    pub generated_tokens: usize,
    /// Single-token forward steps after the prompt, and their time.
    pub decode_steps: usize,
    pub decode_time: Duration,
    pub stop: StopReason,
}

impl GenerationStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_time)
    }

    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.decode_steps, self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// Generates after `prompt`; `on_token` receives each new token and returns false to stop.
pub fn generate(
    ctx: &mut Context<'_>,
    prompt: &[u32],
    sampler: &mut Sampler,
    options: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<GenerationStats, RuntimeError> {
    let tokenizer = &ctx.model().tokenizer;
    let mut history: Vec<u32> = prompt.to_vec();
    let t0 = Instant::now();
    let mut logits = ctx.eval(prompt, Logits::Last)?;
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        prompt_time: t0.elapsed(),
        generated_tokens: 0,
        decode_steps: 0,
        decode_time: Duration::ZERO,
        stop: StopReason::MaxTokens,
    };
    while stats.generated_tokens < options.max_tokens {
        let token = sampler.sample(&logits, &history);
        if options.stop_at_eog && tokenizer.is_end_of_generation(token) {
            stats.stop = StopReason::EndOfGeneration;
            break;
        }
        stats.generated_tokens += 1;
        history.push(token);
        if !on_token(token) {
            stats.stop = StopReason::Cancelled;
            break;
        }
        if stats.generated_tokens == options.max_tokens {
            break;
        }
        if ctx.n_past() >= ctx.capacity() {
            stats.stop = StopReason::ContextFull;
            break;
        }
        let t = Instant::now();
        logits = ctx.eval(&[token], Logits::Last)?;
        stats.decode_time += t.elapsed();
        stats.decode_steps += 1;
    }
    Ok(stats)
}
