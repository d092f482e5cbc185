//! Token sampling with llama.cpp's chain and defaults: penalties, top-k, top-p, min-p,
//! temperature, then a seeded draw. Temperature 0 is greedy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerOptions {
    /// 0 or below: always the most likely token.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables. Divides positive logits (multiplies negative ones) of recent tokens.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0xDEC0DE,
        }
    }
}

impl SamplerOptions {
    pub fn greedy() -> SamplerOptions {
        SamplerOptions { temperature: 0.0, ..SamplerOptions::default() }
    }

    /// Checks ranges, naming the first bad option.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            self.temperature,
            self.top_p,
            self.min_p,
            self.repeat_penalty,
            self.frequency_penalty,
            self.presence_penalty,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            return Err("sampling options must be finite numbers".into());
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!("repeat penalty must be positive, got {}", self.repeat_penalty));
        }
        Ok(())
    }
}

pub struct Sampler {
    options: SamplerOptions,
    rng: StdRng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(options: SamplerOptions) -> Sampler {
        let rng = StdRng::seed_from_u64(options.seed);
        Sampler { options, rng, candidates: Vec::new() }
    }

    pub fn options(&self) -> &SamplerOptions {
        &self.options
    }

    /// Picks the next token from one row of logits; `history` is the sequence so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let o = &self.options;
        let mut logits = logits.to_vec();
        self.apply_penalties(&mut logits, history);
        if o.temperature <= 0.0 {
            return argmax(&logits);
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().filter(|(_, l)| !l.is_nan()).map(|(i, &l)| (i as u32, l)));
        if c.is_empty() {
            return 0;
        }
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if o.top_k > 0 && o.top_k < c.len() {
            c.truncate(o.top_k);
        }
        if o.top_p < 1.0 {
            let probs = softmax(c.iter().map(|x| x.1));
            let mut cum = 0.0;
            let keep = probs.iter().position(|p| {
                cum += p;
                cum >= o.top_p
            });
            c.truncate(keep.map_or(c.len(), |k| k + 1));
        }
        if o.min_p > 0.0 {
            let threshold = c[0].1 + o.min_p.ln();
            let keep = c.iter().take_while(|x| x.1 >= threshold).count().max(1);
            c.truncate(keep);
        }
        let probs = softmax(c.iter().map(|x| x.1 / o.temperature));
        let r: f32 = self.rng.gen();
        let mut cum = 0.0;
        for (p, cand) in probs.iter().zip(c.iter()) {
            cum += p;
            if r < cum {
                return cand.0;
            }
        }
        c[c.len() - 1].0
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let o = &self.options;
        if o.repeat_penalty == 1.0 && o.frequency_penalty == 0.0 && o.presence_penalty == 0.0 {
            return;
        }
        let recent = &history[history.len().saturating_sub(o.repeat_last_n)..];
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &t in recent {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else { continue };
            *l = if *l > 0.0 { *l / o.repeat_penalty } else { *l * o.repeat_penalty };
            *l -= n as f32 * o.frequency_penalty + o.presence_penalty;
        }
    }
}

/// Index of the largest value (the first one on ties); NaNs are never chosen.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

fn softmax(values: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = values.map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest() {
        let mut s = Sampler::new(SamplerOptions::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let opts = SamplerOptions { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..SamplerOptions::default() };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerOptions { seed, ..opts.clone() });
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.5, 0.1, 2.0, 1.9];
        let mut s = Sampler::new(SamplerOptions { temperature: 5.0, top_k: 1, ..SamplerOptions::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]), 2);
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // Token 0 holds almost all the mass: both filters leave only it.
        let logits = [10.0, 0.0, 0.0, 0.0];
        for opts in [
            SamplerOptions { temperature: 1.0, top_k: 0, top_p: 0.5, min_p: 0.0, ..SamplerOptions::default() },
            SamplerOptions { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.01, ..SamplerOptions::default() },
        ] {
            let mut s = Sampler::new(opts);
            assert!((0..50).all(|_| s.sample(&logits, &[]) == 0));
        }
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(SamplerOptions { temperature: 0.0, repeat_penalty: 2.0, ..SamplerOptions::default() });
        assert_eq!(s.sample(&[3.0, 2.0], &[0]), 1);
        assert_eq!(s.sample(&[3.0, 2.0], &[1]), 0);
    }

    #[test]
    fn validate_names_the_bad_option() {
        let bad = SamplerOptions { top_p: 1.5, ..SamplerOptions::default() };
        assert!(bad.validate().unwrap_err().contains("top-p"));
        assert!(SamplerOptions::default().validate().is_ok());
    }
}
