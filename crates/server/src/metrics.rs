//! Counters, gauges and latency histograms, rendered in Prometheus' text format for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tessera_scheduler::SchedulerStats;

/// Upper bounds of the latency buckets, in seconds (vLLM's TTFT buckets, finer at the low end).
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Histogram {
    inner: Mutex<HistogramInner>,
}

#[derive(Default)]
struct HistogramInner {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &le) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, &le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.counts[i]);
        }
        let _ =
            writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", h.count, h.sum, h.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    pub requests_received: AtomicU64,
    pub requests_started: AtomicU64,
    pub requests_finished: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub step_tokens: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub step_time: Histogram,
    gauges: Mutex<Gauges>,
}

#[derive(Default, Clone)]
struct Gauges {
    queued: usize,
    waiting: usize,
    running: usize,
    kv_usage: f64,
    num_blocks: usize,
    cached_blocks: usize,
    prefix_queried: u64,
    prefix_hits: u64,
    preemptions: u64,
}

impl Metrics {
    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    pub fn observe_itl(&self, d: Duration) {
        self.itl.observe(d.as_secs_f64());
    }

    pub fn observe_step(&self, _sequences: usize, tokens: usize, d: Duration) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.step_time.observe(d.as_secs_f64());
    }

    pub fn set_scheduler(&self, s: &SchedulerStats, queued: usize) {
        let mut g = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        *g = Gauges {
            queued,
            waiting: s.waiting,
            running: s.running,
            kv_usage: s.kv_usage,
            num_blocks: s.num_blocks,
            cached_blocks: s.cached_blocks,
            prefix_queried: s.prefix_cache_queried_tokens,
            prefix_hits: s.prefix_cache_hit_tokens,
            preemptions: s.preemptions,
        };
    }

    /// Requests waiting for the scheduler and sequences running, for health and routing.
    pub fn load(&self) -> (usize, usize) {
        let g = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        (g.queued + g.waiting, g.running)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "tessera_requests_received_total",
            "HTTP generation requests received.",
            &self.requests_received,
        );
        counter(&mut out, "tessera_requests_started_total", "Requests accepted by the engine.", &self.requests_started);
        counter(&mut out, "tessera_requests_finished_total", "Requests that completed.", &self.requests_finished);
        counter(
            &mut out,
            "tessera_requests_cancelled_total",
            "Requests whose client went away.",
            &self.requests_cancelled,
        );
        counter(&mut out, "tessera_requests_failed_total", "Requests that ended with an error.", &self.requests_failed);
        counter(
            &mut out,
            "tessera_requests_rejected_total",
            "Requests refused because the queue was full.",
            &self.requests_rejected,
        );
        counter(&mut out, "tessera_generation_tokens_total", "Tokens generated.", &self.generated_tokens);
        counter(&mut out, "tessera_prompt_tokens_total", "Prompt tokens received.", &self.prompt_tokens);
        counter(&mut out, "tessera_engine_steps_total", "Batched forward passes.", &self.steps);
        counter(&mut out, "tessera_engine_step_tokens_total", "Tokens computed in forward passes.", &self.step_tokens);
        let g = self.gauges.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut out, "tessera_queue_depth", "Requests accepted but not yet running.", (g.queued) as f64);
        gauge(
            &mut out,
            "tessera_num_requests_waiting",
            "Sequences waiting for KV blocks (preempted included).",
            g.waiting as f64,
        );
        gauge(&mut out, "tessera_num_requests_running", "Sequences holding KV blocks.", g.running as f64);
        gauge(&mut out, "tessera_kv_cache_usage_ratio", "Fraction of KV blocks in use.", g.kv_usage);
        gauge(&mut out, "tessera_kv_cache_blocks", "KV blocks in the pool.", g.num_blocks as f64);
        gauge(&mut out, "tessera_prefix_cache_blocks", "KV blocks holding cached prefixes.", g.cached_blocks as f64);
        gauge(
            &mut out,
            "tessera_prefix_cache_queried_tokens",
            "Prompt tokens looked up in the prefix cache.",
            g.prefix_queried as f64,
        );
        gauge(
            &mut out,
            "tessera_prefix_cache_hit_tokens",
            "Prompt tokens found in the prefix cache.",
            g.prefix_hits as f64,
        );
        gauge(
            &mut out,
            "tessera_preemptions",
            "Sequences that lost their KV blocks to make room.",
            g.preemptions as f64,
        );
        self.ttft.render(&mut out, "tessera_time_to_first_token_seconds", "Time from arrival to the first token.");
        self.itl.render(&mut out, "tessera_inter_token_latency_seconds", "Time between a request's tokens.");
        self.step_time.render(&mut out, "tessera_engine_step_seconds", "Time of one batched forward pass.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_ttft(Duration::from_millis(3));
        m.observe_ttft(Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("tessera_time_to_first_token_seconds_bucket{le=\"0.001\"} 0"), "{text}");
        assert!(text.contains("tessera_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("tessera_time_to_first_token_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("tessera_time_to_first_token_seconds_count 2"));
    }
}
