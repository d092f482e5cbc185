//! What the router learns about each upstream while it runs: health, ejections, requests in
//! flight, its own `/metrics`, and recent time to first token. Kept by upstream name, so a config
//! reload keeps what is known about upstreams that stay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RouterSettings;
use crate::select::Observed;

/// Weight of a new TTFT sample in the moving average.
const TTFT_EWMA_WEIGHT: f64 = 0.2;
/// An ejection never lasts more than this many times `eject_for`.
const MAX_EJECTION_DOUBLINGS: u32 = 3;

#[derive(Default)]
pub struct UpstreamState {
    pub in_flight: AtomicU32,
    inner: Mutex<Inner>,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub retried_away: AtomicU64,
    pub ejections: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// `None` until the first health check answers.
    healthy: Option<bool>,
    consecutive_failures: u32,
    /// Ejections in a row without a success between them.
    ejection_streak: u32,
    ejected_until: Option<Instant>,
    scraped: Option<Scraped>,
    ttft_ewma: Option<f64>,
}

/// The gauges of an upstream's `/metrics` that routing reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scraped {
    pub queued: Option<f64>,
    pub running: Option<f64>,
    pub kv_usage: Option<f64>,
    /// Cumulative TTFT histogram sum and count, to take the mean between two scrapes.
    pub ttft_sum: Option<f64>,
    pub ttft_count: Option<f64>,
    /// Mean TTFT between the previous scrape and this one, when requests finished in between.
    pub recent_ttft: Option<f64>,
}

impl UpstreamState {
    /// Routing's view of this upstream now.
    pub fn observe(&self, now: Instant) -> Observed {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let scraped = inner.scraped.clone().unwrap_or_default();
        let ttft = inner.ttft_ewma.or(scraped.recent_ttft).map(Duration::from_secs_f64);
        Observed {
            // Until the first check, an upstream is given the benefit of the doubt.
            healthy: inner.healthy.unwrap_or(true),
            ejected_for: inner.ejected_until.and_then(|t| t.checked_duration_since(now)).filter(|d| !d.is_zero()),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: scraped.queued,
            running: scraped.running,
            kv_usage: scraped.kv_usage,
            ttft,
        }
    }

    /// A request reached the client: the upstream works.
    pub fn record_success(&self, ttft: Option<Duration>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.consecutive_failures = 0;
        inner.ejection_streak = 0;
        if let Some(t) = ttft {
            let t = t.as_secs_f64();
            inner.ttft_ewma = Some(inner.ttft_ewma.map_or(t, |old| old + TTFT_EWMA_WEIGHT * (t - old)));
        }
    }

    /// A connection error, timeout or 5xx. Returns true when this failure ejected the upstream.
    pub fn record_failure(&self, settings: &RouterSettings, now: Instant) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Requests that were already under way when it was ejected do not extend the ejection.
        if inner.ejected_until.is_some_and(|t| t > now) {
            return false;
        }
        inner.consecutive_failures += 1;
        if inner.consecutive_failures < settings.eject_after {
            return false;
        }
        let length = settings.eject_for * (1 << inner.ejection_streak.min(MAX_EJECTION_DOUBLINGS));
        inner.ejection_streak += 1;
        inner.consecutive_failures = 0;
        inner.ejected_until = Some(now + length);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("upstream ejected for {:.1} s after {} failures", length.as_secs_f64(), settings.eject_after);
        true
    }

    /// The result of an active health check.
    pub fn record_health(&self, ok: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.healthy = Some(ok);
    }

    pub fn record_scrape(&self, mut scraped: Scraped) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(prev), Some(sum), Some(count)) = (&inner.scraped, scraped.ttft_sum, scraped.ttft_count) {
            if let (Some(prev_sum), Some(prev_count)) = (prev.ttft_sum, prev.ttft_count) {
                let n = count - prev_count;
                scraped.recent_ttft =
                    if n > 0.0 && sum >= prev_sum { Some((sum - prev_sum) / n) } else { prev.recent_ttft };
            }
        }
        inner.scraped = Some(scraped);
    }

    pub fn health_known(&self) -> Option<bool> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).healthy
    }
}

/// Every upstream's state by name.
#[derive(Default)]
pub struct States {
    by_name: Mutex<HashMap<String, Arc<UpstreamState>>>,
}

impl States {
    pub fn get(&self, name: &str) -> Arc<UpstreamState> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    /// Forgets upstreams no longer in the fleet.
    pub fn retain(&self, names: &[&str]) {
        self.by_name.lock().unwrap_or_else(|e| e.into_inner()).retain(|n, _| names.contains(&n.as_str()));
    }
}

/// Holds one in-flight slot on an upstream until dropped.
pub struct Slot(Arc<UpstreamState>);

impl Slot {
    pub fn take(state: Arc<UpstreamState>) -> Slot {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        Slot(state)
    }

    pub fn state(&self) -> &UpstreamState {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gauge names by what they measure, for Tessera, vLLM and llama.cpp's server.
const QUEUED: &[&str] = &["tessera_queue_depth", "vllm:num_requests_waiting", "llamacpp:requests_deferred"];
const RUNNING: &[&str] = &["tessera_num_requests_running", "vllm:num_requests_running", "llamacpp:requests_processing"];
const KV_USAGE: &[&str] = &[
    "tessera_kv_cache_usage_ratio",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "llamacpp:kv_cache_usage_ratio",
];
const TTFT_SUM: &[&str] = &["tessera_time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_sum"];
const TTFT_COUNT: &[&str] = &["tessera_time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_count"];

/// Reads the routing gauges from Prometheus text. Samples with labels are summed per name
/// (vLLM labels its gauges by model); unknown lines and malformed values are skipped.
pub fn parse_metrics(text: &str) -> Scraped {
    let mut sums: HashMap<&str, f64> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_part, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let value_part = match rest.strip_prefix('{') {
            Some(labelled) => match labelled.rfind('}') {
                Some(end) => &labelled[end + 1..],
                None => continue,
            },
            None => rest,
        };
        let Some(value) = value_part.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        if value.is_finite() {
            *sums.entry(name_part).or_default() += value;
        }
    }
    let first = |names: &[&str]| names.iter().find_map(|n| sums.get(n).copied());
    Scraped {
        queued: first(QUEUED),
        running: first(RUNNING),
        kv_usage: first(KV_USAGE),
        ttft_sum: first(TTFT_SUM),
        ttft_count: first(TTFT_COUNT),
        recent_ttft: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn gauges_of_each_server_are_read() {
        let tessera = "# HELP tessera_queue_depth x\n# TYPE tessera_queue_depth gauge\ntessera_queue_depth 3\n\
                       tessera_num_requests_running 5\ntessera_kv_cache_usage_ratio 0.25\n\
                       tessera_time_to_first_token_seconds_sum 1.5\ntessera_time_to_first_token_seconds_count 6\n";
        let s = parse_metrics(tessera);
        assert_eq!((s.queued, s.running, s.kv_usage), (Some(3.0), Some(5.0), Some(0.25)));
        assert_eq!((s.ttft_sum, s.ttft_count), (Some(1.5), Some(6.0)));
        let vllm = "vllm:num_requests_waiting{model_name=\"a\"} 2.0\nvllm:num_requests_waiting{model_name=\"b\"} 1.0\n\
                    vllm:num_requests_running{model_name=\"a\",x=\"}\"} 4.0 1700000000\nvllm:gpu_cache_usage_perc 0.5\n";
        let s = parse_metrics(vllm);
        assert_eq!((s.queued, s.running, s.kv_usage), (Some(3.0), Some(4.0), Some(0.5)));
        let llama = "llamacpp:requests_deferred 1\nllamacpp:requests_processing 2\nbad line\nx{ 1\nllamacpp:kv_cache_usage_ratio NaN\n";
        let s = parse_metrics(llama);
        assert_eq!((s.queued, s.running, s.kv_usage), (Some(1.0), Some(2.0), None));
        assert_eq!(parse_metrics(""), Scraped::default());
    }

    #[test]
    fn ttft_between_scrapes_is_the_mean_of_the_new_requests() {
        let s = UpstreamState::default();
        s.record_scrape(Scraped { ttft_sum: Some(1.0), ttft_count: Some(4.0), ..Scraped::default() });
        assert_eq!(s.observe(Instant::now()).ttft, None);
        s.record_scrape(Scraped { ttft_sum: Some(2.0), ttft_count: Some(6.0), ..Scraped::default() });
        assert_eq!(s.observe(Instant::now()).ttft, Some(Duration::from_millis(500)));
        // No new requests: the last mean stands. The router's own streams take precedence.
        s.record_scrape(Scraped { ttft_sum: Some(2.0), ttft_count: Some(6.0), ..Scraped::default() });
        assert_eq!(s.observe(Instant::now()).ttft, Some(Duration::from_millis(500)));
        s.record_success(Some(Duration::from_millis(100)));
        assert_eq!(s.observe(Instant::now()).ttft, Some(Duration::from_millis(100)));
    }

    #[test]
    fn repeated_failures_eject_for_longer_each_time() {
        let settings =
            RouterSettings { eject_after: 2, eject_for: Duration::from_secs(10), ..RouterSettings::default() };
        let s = UpstreamState::default();
        let t0 = Instant::now();
        assert!(!s.record_failure(&settings, t0));
        assert!(s.record_failure(&settings, t0));
        assert_eq!(s.observe(t0).ejected_for, Some(Duration::from_secs(10)));
        // While ejected, more failures do not extend it.
        assert!(!s.record_failure(&settings, t0));
        assert!(!s.record_failure(&settings, t0));
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(s.observe(t1).ejected_for, None);
        assert!(!s.record_failure(&settings, t1));
        assert!(s.record_failure(&settings, t1));
        assert_eq!(s.observe(t1).ejected_for, Some(Duration::from_secs(20)));
        // A success ends the streak.
        s.record_success(None);
        let t2 = t1 + Duration::from_secs(21);
        s.record_failure(&settings, t2);
        s.record_failure(&settings, t2);
        assert_eq!(s.observe(t2).ejected_for, Some(Duration::from_secs(10)));
        assert_eq!(s.ejections.load(Ordering::Relaxed), 3);
    }

    proptest! {
        #[test]
        fn any_metrics_text_parses_without_panicking(text in "\\PC{0,300}") {
            let s = parse_metrics(&text);
            for v in [s.queued, s.running, s.kv_usage].into_iter().flatten() {
                prop_assert!(v.is_finite());
            }
        }
    }
}
