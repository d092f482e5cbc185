//! The engine thread: owns the model, the paged KV cache and the scheduler, and runs one batched
//! forward pass per iteration over every running sequence (continuous batching). Requests arrive
//! through a bounded queue; tokens leave through each request's own channel. A request whose
//! receiver is gone (client disconnected, timed out) is aborted and its blocks return at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_runtime::{BatchItem, LoadedModel, PagedKvCache, Sampler, SamplerOptions};
use tessera_scheduler::{Scheduler, SchedulerConfig, SeqId, StepPlan};
use tessera_tokenizer::StreamDecoder;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Restricts which tokens may come next (grammar-constrained decoding).
pub trait TokenFilter: Send {
    /// Sets the logits of tokens that may not come next to negative infinity.
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String>;
    /// Advances past the chosen token.
    fn commit(&mut self, token: u32) -> Result<(), String>;
    /// True once the output is complete and nothing but the end may follow.
    fn is_finished(&self) -> bool;
}

/// One completion to generate.
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplerOptions,
    /// Report log-probabilities: `Some(k)` gives the chosen token's and the `k` most likely.
    pub logprobs: Option<usize>,
    /// Generation ends before any of these strings; they are not returned.
    pub stop: Vec<String>,
    pub filter: Option<Box<dyn TokenFilter>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub arrived: Instant,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChosenLogprob {
    pub chosen: TokenLogprob,
    pub top: Vec<TokenLogprob>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token, stop string, or the constrained output is complete.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New text (possibly empty when a token only completes part of a character or is held back
    /// as the start of a stop string) and the token's log-probabilities when asked for.
    Token {
        text: String,
        logprob: Option<ChosenLogprob>,
    },
    Done {
        reason: FinishReason,
        usage: Usage,
    },
    Error {
        message: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is busy: {0} requests are queued")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_num_seqs: usize,
    pub max_batched_tokens: usize,
    pub enable_prefix_cache: bool,
    /// Requests accepted but not yet admitted by the scheduler, at most.
    pub max_queue: usize,
    pub kv_type: tessera_backend::DType,
}

/// The handle the HTTP layer holds: submits requests, reads gauges.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<GenerationRequest>,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    stopping: Arc<AtomicBool>,
}

impl EngineHandle {
    pub fn submit(&self, request: GenerationRequest) -> Result<(), SubmitError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        // Reserve a place first, so concurrent submitters cannot overshoot the bound.
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::QueueFull(before));
        }
        self.tx.send(request).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            SubmitError::ShuttingDown
        })
    }

    /// Refuses new requests; those already accepted run to completion.
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// Starts the engine thread over `model`; it runs until every handle is dropped and the work
/// accepted so far is done.
pub fn start(
    model: Arc<LoadedModel>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let cache = model.new_paged_cache(config.num_blocks, config.block_size, config.kv_type)?;
    let scheduler = Scheduler::new(SchedulerConfig {
        block_size: config.block_size,
        num_blocks: config.num_blocks,
        max_num_seqs: config.max_num_seqs,
        max_batched_tokens: config.max_batched_tokens,
        enable_prefix_cache: config.enable_prefix_cache,
    })?;
    let (tx, rx) = std_mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let handle = EngineHandle {
        tx,
        queued: queued.clone(),
        max_queue: config.max_queue,
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let mut engine = Engine { model, cache, scheduler, rx, queued, metrics, active: HashMap::new(), next_id: 0 };
    let thread = std::thread::Builder::new().name("tessera-engine".into()).spawn(move || engine.run())?;
    Ok((handle, thread))
}

struct Engine {
    model: Arc<LoadedModel>,
    cache: PagedKvCache,
    scheduler: Scheduler,
    rx: std_mpsc::Receiver<GenerationRequest>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    active: HashMap<SeqId, Active>,
    next_id: u64,
}

/// A request the scheduler knows about.
struct Active {
    sampler: Sampler,
    filter: Option<Box<dyn TokenFilter>>,
    generated: Vec<u32>,
    decoder: StreamDecoder,
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    stop: Vec<String>,
    logprobs: Option<usize>,
    events: mpsc::UnboundedSender<Event>,
    prompt_tokens: usize,
    cached_tokens: usize,
    arrived: Instant,
    last_token: Option<Instant>,
    /// Set once the request has been counted out of the submit queue.
    admitted: bool,
}

impl Engine {
    fn run(&mut self) {
        loop {
            // Idle: block for work. Busy: take whatever arrived since the last step.
            if self.active.is_empty() {
                // Idle: the gauges must say so before the thread sleeps.
                self.publish_gauges();
                match self.rx.recv() {
                    Ok(request) => self.accept(request),
                    Err(_) => return,
                }
            }
            while let Ok(request) = self.rx.try_recv() {
                self.accept(request);
            }
            self.drop_abandoned();
            if self.active.is_empty() {
                continue;
            }
            let plan = self.scheduler.schedule();
            self.account_admissions();
            for (id, error) in &plan.failed {
                self.fail(*id, &error.to_string());
            }
            if plan.is_empty() {
                self.publish_gauges();
                // Nothing fits right now (every running sequence is waiting for room that the
                // scheduler will make); do not spin.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if let Err(e) = self.step(&plan) {
                // A failed forward pass fails every sequence in it, never the server.
                tracing::error!(error = %e, "forward pass failed");
                let ids: Vec<SeqId> = plan.items.iter().map(|i| i.id).collect();
                let _ = self.scheduler.complete_step(&plan, &[]);
                for id in ids {
                    self.fail(id, &format!("inference failed: {e}"));
                }
            }
            self.publish_gauges();
        }
    }

    fn accept(&mut self, request: GenerationRequest) {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let prompt_tokens = request.prompt.len();
        let max_new = request.max_tokens.max(1);
        if let Err(e) = self.scheduler.add_request(id, request.prompt, max_new) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = request.events.send(Event::Error { message: e.to_string() });
            return;
        }
        self.metrics.requests_started.fetch_add(1, Ordering::Relaxed);
        self.active.insert(
            id,
            Active {
                sampler: Sampler::new(request.sampling),
                filter: request.filter,
                generated: Vec::new(),
                decoder: StreamDecoder::new(),
                text: String::new(),
                sent: 0,
                stop: request.stop,
                logprobs: request.logprobs,
                events: request.events,
                prompt_tokens,
                cached_tokens: 0,
                arrived: request.arrived,
                last_token: None,
                admitted: false,
            },
        );
    }

    /// Requests leave the submit queue's count once the scheduler runs them.
    fn account_admissions(&mut self) {
        for (id, a) in self.active.iter_mut() {
            if !a.admitted && self.scheduler.sequence(*id).is_some_and(|s| s.is_running()) {
                a.admitted = true;
                a.cached_tokens = self.scheduler.sequence(*id).map_or(0, |s| s.num_computed());
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Aborts requests nobody listens to any more; their blocks return to the pool now.
    fn drop_abandoned(&mut self) {
        let gone: Vec<SeqId> = self.active.iter().filter(|(_, a)| a.events.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            let _ = self.scheduler.abort(id);
            self.metrics.requests_cancelled.fetch_add(1, Ordering::Relaxed);
            self.remove(id);
        }
    }

    fn remove(&mut self, id: SeqId) {
        if let Some(a) = self.active.remove(&id) {
            if !a.admitted {
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn fail(&mut self, id: SeqId, message: &str) {
        let _ = self.scheduler.abort(id);
        if let Some(a) = self.active.get(&id) {
            let _ = a.events.send(Event::Error { message: message.to_string() });
        }
        self.metrics.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.remove(id);
    }

    fn step(&mut self, plan: &StepPlan) -> anyhow::Result<()> {
        for copy in &plan.copies {
            self.cache.copy_block(copy.src.0 as usize, copy.dst.0 as usize)?;
        }
        let tables: Vec<Vec<u32>> = plan.items.iter().map(|i| i.block_table.iter().map(|b| b.0).collect()).collect();
        let slots: Vec<Vec<u32>> = plan.items.iter().map(|i| i.slots.iter().map(|&s| s as u32).collect()).collect();
        let items: Vec<BatchItem<'_>> = plan
            .items
            .iter()
            .enumerate()
            .map(|(k, i)| BatchItem {
                tokens: &i.tokens,
                start: i.positions.start,
                slots: &slots[k],
                block_table: &tables[k],
                want_logits: i.wants_logits,
            })
            .collect();
        let started = Instant::now();
        let mut logits = self.model.eval_batch(&self.cache, &items)?.into_iter();
        self.metrics.observe_step(plan.items.len(), plan.num_tokens(), started.elapsed());

        let mut sampled = Vec::new();
        let mut finished = Vec::new();
        for item in &plan.items {
            if !item.wants_logits {
                continue;
            }
            let row = logits.next().ok_or_else(|| anyhow::anyhow!("missing logits row"))?;
            let Some(a) = self.active.get_mut(&item.id) else { continue };
            match next_token(&self.model, a, row) {
                Ok(Next::Continue(token)) => sampled.push((item.id, Some(token))),
                Ok(Next::Finish(reason)) => {
                    sampled.push((item.id, None));
                    finished.push((item.id, reason));
                }
                Err(message) => {
                    sampled.push((item.id, None));
                    finished.push((item.id, FinishReason::Stop));
                    let _ = a.events.send(Event::Error { message });
                }
            }
            let now = Instant::now();
            match a.last_token {
                None => self.metrics.observe_ttft(now - a.arrived),
                Some(t) => self.metrics.observe_itl(now - t),
            }
            a.last_token = Some(now);
        }
        let ended = self.scheduler.complete_step(plan, &sampled)?;
        for id in ended {
            if !finished.iter().any(|(f, _)| *f == id) {
                finished.push((id, FinishReason::Length));
            }
        }
        for (id, reason) in finished {
            if let Some(a) = self.active.get_mut(&id) {
                // What was held back as a possible stop string is text after all.
                let rest = a.decoder.finish();
                a.text.push_str(&rest);
                if reason == FinishReason::Length && a.sent < a.text.len() {
                    let tail = a.text[a.sent..].to_string();
                    let _ = a.events.send(Event::Token { text: tail, logprob: None });
                }
                let usage = Usage {
                    prompt_tokens: a.prompt_tokens,
                    completion_tokens: a.generated.len(),
                    cached_tokens: a.cached_tokens,
                };
                let _ = a.events.send(Event::Done { reason, usage });
                self.metrics.requests_finished.fetch_add(1, Ordering::Relaxed);
                self.metrics.generated_tokens.fetch_add(a.generated.len() as u64, Ordering::Relaxed);
                tracing::info!(
                    seq = id.0,
                    prompt_tokens = a.prompt_tokens,
                    cached_tokens = a.cached_tokens,
                    completion_tokens = a.generated.len(),
                    finish = ?reason,
                    total_ms = a.arrived.elapsed().as_millis() as u64,
                    "request finished"
                );
            }
            let _ = self.scheduler.finish(id);
            self.remove(id);
        }
        Ok(())
    }

    fn publish_gauges(&self) {
        let s = self.scheduler.stats();
        self.metrics.set_scheduler(&s, self.queued.load(Ordering::Acquire));
    }
}

enum Next {
    Continue(u32),
    Finish(FinishReason),
}

/// Samples the next token of `a` from its logits row and sends the text it completes.
fn next_token(model: &LoadedModel, a: &mut Active, mut row: Vec<f32>) -> Result<Next, String> {
    let tokenizer = &model.tokenizer;
    let logprob = a.logprobs.map(|k| logprobs_of(model, &row, k));
    if let Some(f) = a.filter.as_mut() {
        f.mask(&mut row)?;
        if row.iter().all(|l| *l == f32::NEG_INFINITY) {
            return Err("the output constraint allows no token".into());
        }
    }
    let token = a.sampler.sample(&row, &a.generated);
    if tokenizer.is_end_of_generation(token) {
        return Ok(Next::Finish(FinishReason::Stop));
    }
    if let Some(f) = a.filter.as_mut() {
        f.commit(token)?;
    }
    a.generated.push(token);
    let piece = a.decoder.push(tokenizer.token_bytes(token));
    a.text.push_str(&piece);
    let chosen = logprob.map(|mut l| {
        let lp = l.all.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
        l.top.truncate(l.k);
        ChosenLogprob { chosen: token_logprob(model, token, lp), top: l.top }
    });
    // A stop string ends the text before it.
    if let Some(end) = find_stop(&a.text, a.sent, &a.stop) {
        let text = a.text[a.sent..end].to_string();
        a.text.truncate(end);
        a.sent = end;
        let _ = a.events.send(Event::Token { text, logprob: chosen });
        return Ok(Next::Finish(FinishReason::Stop));
    }
    let release = a.text.len() - held_back(&a.text[a.sent..], &a.stop);
    let text = a.text[a.sent..release].to_string();
    a.sent = release;
    let _ = a.events.send(Event::Token { text, logprob: chosen });
    if a.filter.as_ref().is_some_and(|f| f.is_finished()) {
        return Ok(Next::Finish(FinishReason::Stop));
    }
    Ok(Next::Continue(token))
}

/// Byte index where the first stop string found at or after `from` begins.
fn find_stop(text: &str, from: usize, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i)).min()
}

/// Length of the longest suffix of `pending` that begins some stop string: it may yet become one.
fn held_back(pending: &str, stops: &[String]) -> usize {
    let mut longest = 0;
    for s in stops {
        for (i, _) in pending.char_indices() {
            let suffix = &pending[i..];
            if suffix.len() > longest && s.starts_with(suffix) {
                longest = suffix.len();
                break;
            }
        }
    }
    longest
}

struct Logprobs {
    all: Vec<f32>,
    top: Vec<TokenLogprob>,
    k: usize,
}

/// Log-softmax of the model's raw logits (before penalties, temperature or constraints, as
/// OpenAI-compatible servers report them), with the `k` most likely tokens.
fn logprobs_of(model: &LoadedModel, row: &[f32], k: usize) -> Logprobs {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max + sum.ln() as f32;
    let all: Vec<f32> = row.iter().map(|&l| l - log_z).collect();
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    let k = k.min(all.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| all[b as usize].total_cmp(&all[a as usize]));
        order.truncate(k);
        order.sort_by(|&a, &b| all[b as usize].total_cmp(&all[a as usize]));
    } else {
        order.clear();
    }
    let top = order.iter().map(|&t| token_logprob(model, t, all[t as usize])).collect();
    Logprobs { all, top, k }
}

fn token_logprob(model: &LoadedModel, token: u32, logprob: f32) -> TokenLogprob {
    let bytes = model.tokenizer.token_bytes(token).to_vec();
    TokenLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_end_text_and_hold_back_prefixes() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop("abc END x", 0, &stops), Some(4));
        assert_eq!(find_stop("abc\n\nEND", 0, &stops), Some(3));
        assert_eq!(find_stop("abc", 0, &stops), None);
        assert_eq!(held_back("abc E", &stops), 1);
        assert_eq!(held_back("abc EN", &stops), 2);
        assert_eq!(held_back("abc\n", &stops), 1);
        assert_eq!(held_back("abc", &stops), 0);
        assert_eq!(held_back("é", &["éa".to_string()]), "é".len());
    }
}
