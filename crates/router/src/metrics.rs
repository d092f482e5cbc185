//! The router's `/metrics` (Prometheus text): per upstream (requests, failures, retries away,
//! ejections, in flight, health) and per tenant (requests by outcome, time to first token).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::FleetConfig;
use crate::state::States;

/// How a request ended, as counted per tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// The upstream answered with a client error (bad request), passed through.
    ClientError,
    Unauthorized,
    RateLimited,
    Forbidden,
    Unavailable,
    /// Every attempt failed, or a stream was cut.
    UpstreamFailed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RateLimited => "rate_limited",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
            Outcome::UpstreamFailed => "upstream_failed",
        }
    }
}

const TTFT_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A histogram's bucket counts, sum and count.
type Histogram = ([u64; TTFT_BUCKETS.len()], f64, u64);

#[derive(Default)]
pub struct Metrics {
    outcomes: Mutex<BTreeMap<(String, Outcome), u64>>,
    /// Per tenant: bucket counts, sum and count of TTFT seen by clients.
    ttft: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn count(&self, tenant: &str, outcome: Outcome) {
        *self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).entry((tenant.to_string(), outcome)).or_default() += 1;
    }

    pub fn observe_ttft(&self, tenant: &str, ttft: Duration) {
        let t = ttft.as_secs_f64();
        let mut map = self.ttft.lock().unwrap_or_else(|e| e.into_inner());
        let (buckets, sum, count) = map.entry(tenant.to_string()).or_insert(([0; TTFT_BUCKETS.len()], 0.0, 0));
        for (b, le) in buckets.iter_mut().zip(TTFT_BUCKETS) {
            if t <= le {
                *b += 1;
            }
        }
        *sum += t;
        *count += 1;
    }

    pub fn render(&self, fleet: &FleetConfig, states: &States) -> String {
        let mut out = String::new();
        let now = std::time::Instant::now();
        type Field = fn(&crate::state::UpstreamState) -> f64;
        let per_upstream: [(&str, &str, &str, Field); 5] = [
            ("tessera_route_upstream_requests_total", "counter", "Requests sent to the upstream.", |s| {
                s.requests.load(Ordering::Relaxed) as f64
            }),
            ("tessera_route_upstream_failures_total", "counter", "Connection errors, timeouts and 5xx.", |s| {
                s.failures.load(Ordering::Relaxed) as f64
            }),
            (
                "tessera_route_upstream_retried_away_total",
                "counter",
                "Requests that failed here before their first byte and were retried elsewhere.",
                |s| s.retried_away.load(Ordering::Relaxed) as f64,
            ),
            ("tessera_route_upstream_ejections_total", "counter", "Times ejected as an outlier.", |s| {
                s.ejections.load(Ordering::Relaxed) as f64
            }),
            ("tessera_route_upstream_in_flight", "gauge", "Requests open on the upstream.", |s| {
                f64::from(s.in_flight.load(Ordering::Relaxed))
            }),
        ];
        for (name, kind, help, field) in per_upstream {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for u in &fleet.upstreams {
                let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {}", escape(&u.name), field(&states.get(&u.name)));
            }
        }
        let name = "tessera_route_upstream_available";
        let _ = writeln!(out, "# HELP {name} 1 when healthy and not ejected.\n# TYPE {name} gauge");
        for u in &fleet.upstreams {
            let o = states.get(&u.name).observe(now);
            let up = u8::from(o.healthy && o.ejected_for.is_none());
            let _ = writeln!(out, "{name}{{upstream=\"{}\"}} {up}", escape(&u.name));
        }

        let name = "tessera_route_requests_total";
        let _ = writeln!(out, "# HELP {name} Requests by tenant and outcome.\n# TYPE {name} counter");
        for ((tenant, outcome), n) in self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{tenant=\"{}\",outcome=\"{}\"}} {n}", escape(tenant), outcome.label());
        }
        let name = "tessera_route_time_to_first_token_seconds";
        let _ = writeln!(out, "# HELP {name} Time from arrival at the router to the first streamed byte.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (tenant, (buckets, sum, count)) in self.ttft.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let tenant = escape(tenant);
            for (b, le) in buckets.iter().zip(TTFT_BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{tenant=\"{tenant}\",le=\"{le}\"}} {b}");
            }
            let _ = writeln!(out, "{name}_bucket{{tenant=\"{tenant}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{tenant=\"{tenant}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{tenant=\"{tenant}\"}} {count}");
        }
        out
    }
}

/// A label value as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_ttft_render_per_tenant() {
        let fleet = FleetConfig::parse(
            "[[upstream]]\nname = \"a\\\"b\"\nurl = \"http://h:1\"\nmodels = [\"m\"]\nregion = \"r\"\ncost_per_mtok = 1.0\n",
            "f",
            &|_| None,
        )
        .unwrap();
        let m = Metrics::default();
        m.count("acme", Outcome::Ok);
        m.count("acme", Outcome::Ok);
        m.count("acme", Outcome::Forbidden);
        m.observe_ttft("acme", Duration::from_millis(30));
        let text = m.render(&fleet, &States::default());
        assert!(text.contains("tessera_route_requests_total{tenant=\"acme\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("tessera_route_requests_total{tenant=\"acme\",outcome=\"forbidden\"} 1"));
        assert!(text.contains("tessera_route_time_to_first_token_seconds_bucket{tenant=\"acme\",le=\"0.025\"} 0"));
        assert!(text.contains("tessera_route_time_to_first_token_seconds_bucket{tenant=\"acme\",le=\"0.05\"} 1"));
        assert!(text.contains("tessera_route_upstream_available{upstream=\"a\\\"b\"} 1"), "{text}");
        // What the router writes, its own scraper reads.
        assert_eq!(crate::state::parse_metrics(&text).queued, None);
    }
}
