//! Throughput measurements as llama-bench takes them: prompt processing (pp) evaluates
//! `n_prompt` random tokens in batches; token generation (tg) evaluates `n_gen` tokens one at a
//! time, each step producing logits. Every repetition starts from an empty cache.

use std::time::{Duration, Instant};

use tessera_models::Logits;

use crate::context::Context;
use crate::RuntimeError;

/// One test: `n_prompt` tokens of prompt processing, then `n_gen` generated tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchTest {
    pub n_prompt: usize,
    pub n_gen: usize,
}

impl BenchTest {
    /// llama-bench's name for the test: `pp512`, `tg128` or `pp512+tg128`.
    pub fn name(&self) -> String {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, n) => format!("tg{n}"),
            (p, n) => format!("pp{p}+tg{n}"),
        }
    }

    pub fn tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }
}

/// Runs `test` once to warm up, then `reps` times, and returns each timed repetition.
/// Token ids come from a fixed-seed generator over the vocabulary, so runs are comparable.
pub fn measure(ctx: &mut Context<'_>, test: BenchTest, reps: usize) -> Result<Vec<Duration>, RuntimeError> {
    if test.tokens() == 0 {
        return Err(RuntimeError::Invalid("a test needs prompt or generated tokens".into()));
    }
    if test.tokens() > ctx.capacity() {
        return Err(RuntimeError::ContextFull { needed: test.tokens(), capacity: ctx.capacity() });
    }
    let vocab = ctx.model().config().vocab_size as u64;
    let mut rng = SplitMix64(0x7e55e7a);
    let mut random_tokens = |n: usize| (0..n).map(|_| (rng.next() % vocab) as u32).collect::<Vec<u32>>();
    // Warm-up as llama-bench does it: the whole prompt, or a single generated token.
    ctx.clear();
    if test.n_prompt > 0 {
        ctx.eval(&random_tokens(test.n_prompt), Logits::Last)?;
    } else {
        ctx.eval(&random_tokens(1), Logits::Last)?;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        ctx.clear();
        let prompt = random_tokens(test.n_prompt);
        let generated = random_tokens(test.n_gen);
        let start = Instant::now();
        if !prompt.is_empty() {
            ctx.eval(&prompt, Logits::Last)?;
        }
        for &token in &generated {
            ctx.eval(&[token], Logits::Last)?;
        }
        samples.push(start.elapsed());
    }
    ctx.clear();
    Ok(samples)
}

/// Mean and sample standard deviation, as llama-bench computes them.
pub fn mean_stddev(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Small, seedable, dependency-free generator for benchmark inputs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_bench() {
        assert_eq!(BenchTest { n_prompt: 512, n_gen: 0 }.name(), "pp512");
        assert_eq!(BenchTest { n_prompt: 0, n_gen: 128 }.name(), "tg128");
        assert_eq!(BenchTest { n_prompt: 16, n_gen: 4 }.name(), "pp16+tg4");
    }

    #[test]
    fn stddev_is_the_sample_deviation() {
        let (m, s) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - 2.138_089_935).abs() < 1e-9, "{s}");
        assert_eq!(mean_stddev(&[3.0]), (3.0, 0.0));
        assert_eq!(mean_stddev(&[]), (0.0, 0.0));
    }
}
