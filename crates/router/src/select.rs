//! Which upstreams a request goes to, in order of preference: a pure function of the fleet, the
//! upstreams' observed state and the request, so that it can be explained (`--dry-run`) and
//! property-tested.
//!
//! 1. Only upstreams that serve the model, that the tenant's policy permits, that are healthy and
//!    not ejected, and that are below their concurrency limit are candidates.
//! 2. Those whose expected time to first token meets the SLO come first, cheapest first; within the
//!    cheapest price, the prompt's affinity upstream (rendezvous hashing over the prefix, so the same
//!    prefix finds the same prefix cache) unless its load exceeds `affinity_max_imbalance` times
//!    the group's mean, then the least loaded.
//! 3. Then those that miss the SLO, least loaded first: a slow answer beats none.

use std::time::Duration;

use crate::config::{RouterSettings, Upstream};
use crate::policy;

/// What the router knows about one upstream right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub healthy: bool,
    /// Still ejected for this long.
    pub ejected_for: Option<Duration>,
    /// Requests this router has open on it.
    pub in_flight: u32,
    /// From its `/metrics` when it has them: requests waiting, running, KV cache use (0..1).
    pub queued: Option<f64>,
    pub running: Option<f64>,
    pub kv_usage: Option<f64>,
    /// Recent time to first token (this router's streams, else the upstream's own metrics).
    pub ttft: Option<Duration>,
}

impl Observed {
    /// Outstanding work per concurrency slot: the larger of what this router sent and what the
    /// upstream reports (other clients may use it too), plus a penalty near a full KV cache.
    pub fn load(&self, upstream: &Upstream) -> f64 {
        let reported = self.queued.unwrap_or(0.0) + self.running.unwrap_or(0.0);
        let outstanding = f64::from(self.in_flight).max(reported);
        let kv_penalty = if self.kv_usage.unwrap_or(0.0) > 0.9 { 1.0 } else { 0.0 };
        outstanding / f64::from(upstream.max_concurrency) + kv_penalty
    }

    /// Time to first token a new request can expect: the recent TTFT, longer by the queue ahead.
    pub fn expected_ttft(&self) -> Option<Duration> {
        let waiting = self.queued.unwrap_or(0.0).max(0.0);
        self.ttft.map(|t| t.mul_f64(1.0 + waiting.min(1e6)))
    }
}

/// One request as routing sees it.
#[derive(Clone, Debug)]
pub struct RequestInfo<'a> {
    pub model: &'a str,
    /// Hash of the prompt's first characters (see [`affinity_key`]); `None`: no affinity.
    pub affinity: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Index into the fleet's upstreams.
    pub upstream: usize,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// No upstream serves the model at all.
    UnknownModel,
    /// Upstreams serve it, but the tenant's policy permits none of them (403).
    Forbidden(Vec<String>),
    /// Permitted upstreams exist but none can take the request now (503).
    Unavailable(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Upstreams to try, best first.
    pub order: Vec<Choice>,
    /// Every upstream left out, with the reason.
    pub excluded: Vec<(usize, String)>,
}

impl Decision {
    /// The order, or why there is none.
    pub fn refusal(&self, fleet: &[Upstream], model: &str) -> Option<Refusal> {
        if !self.order.is_empty() {
            return None;
        }
        let serving: Vec<&(usize, String)> = self.excluded.iter().filter(|(i, _)| fleet[*i].serves(model)).collect();
        if serving.is_empty() {
            return Some(Refusal::UnknownModel);
        }
        let reasons = serving.iter().map(|(i, why)| format!("{}: {why}", fleet[*i].name)).collect();
        if serving.iter().all(|(_, why)| why.starts_with(POLICY)) {
            Some(Refusal::Forbidden(reasons))
        } else {
            Some(Refusal::Unavailable(reasons))
        }
    }
}

const POLICY: &str = "policy: ";

/// Ranks the upstreams for one request of a tenant with `policy`.
pub fn rank(
    fleet: &[Upstream],
    observed: &[Observed],
    policy: &crate::config::Policy,
    request: &RequestInfo<'_>,
    settings: &RouterSettings,
) -> Decision {
    let mut excluded = Vec::new();
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for (i, (u, o)) in fleet.iter().zip(observed).enumerate() {
        let why_not = if !u.serves(request.model) {
            Some(format!("does not serve {}", request.model))
        } else if let Some(why) = policy::denial(policy, u) {
            Some(format!("{POLICY}{why}"))
        } else if let Some(left) = o.ejected_for {
            Some(format!("ejected after failures for {:.1} s more", left.as_secs_f64()))
        } else if !o.healthy {
            Some("failing its health check".to_string())
        } else if o.in_flight >= u.max_concurrency {
            Some(format!("at its concurrency limit ({})", u.max_concurrency))
        } else {
            None
        };
        match why_not {
            Some(why) => excluded.push((i, why)),
            None => match o.expected_ttft() {
                Some(t) if t > settings.ttft_slo => slow.push(i),
                _ => fast.push(i),
            },
        }
    }

    let load = |i: usize| observed[i].load(&fleet[i]);
    let describe = |i: usize, what: &str| {
        let ttft = observed[i]
            .expected_ttft()
            .map_or("TTFT not yet measured".to_string(), |t| format!("expected TTFT {} ms", t.as_millis()));
        format!("{what}: ${:.3}/Mtok, load {:.2}, {ttft}", fleet[i].cost_per_mtok, load(i))
    };
    let mut order = Vec::new();
    fast.sort_by(|&a, &b| fleet[a].cost_per_mtok.total_cmp(&fleet[b].cost_per_mtok).then(load(a).total_cmp(&load(b))));
    if let Some(&first) = fast.first() {
        let cheapest = fleet[first].cost_per_mtok;
        let tier: Vec<usize> = fast.iter().copied().filter(|&i| fleet[i].cost_per_mtok <= cheapest).collect();
        let affine = request.affinity.and_then(|key| {
            let mean = tier.iter().map(|&i| load(i)).sum::<f64>() / tier.len() as f64;
            // A newly idle fleet has mean 0: one slot's worth of load is always allowed.
            let slack = tier.iter().map(|&i| 1.0 / f64::from(fleet[i].max_concurrency)).fold(0.0, f64::max);
            let bound = settings.affinity_max_imbalance * mean + slack;
            let mut by_score: Vec<usize> = tier.clone();
            by_score.sort_by_key(|&i| std::cmp::Reverse(rendezvous(key, &fleet[i].name)));
            by_score.into_iter().find(|&i| load(i) <= bound)
        });
        if let Some(a) = affine {
            order.push(Choice { upstream: a, why: describe(a, "prefix affinity, meets the TTFT SLO") });
        }
        for &i in fast.iter().filter(|&&i| Some(i) != affine) {
            let what = if fleet[i].cost_per_mtok <= cheapest {
                "cheapest that meets the TTFT SLO"
            } else {
                "meets the TTFT SLO"
            };
            order.push(Choice { upstream: i, why: describe(i, what) });
        }
    }
    slow.sort_by(|&a, &b| load(a).total_cmp(&load(b)).then(fleet[a].cost_per_mtok.total_cmp(&fleet[b].cost_per_mtok)));
    for &i in &slow {
        order.push(Choice { upstream: i, why: describe(i, "misses the TTFT SLO, least loaded of those") });
    }
    Decision { order, excluded }
}

/// 64-bit FNV-1a: a stable hash (the same across processes and versions, unlike `DefaultHasher`),
/// so every router replica maps a prefix to the same upstream.
fn fnv1a(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix, since FNV's low bits are weak for short keys.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The key that gives a prompt its affinity upstream: the model and its first `chars` characters.
pub fn affinity_key(model: &str, prompt: &str, chars: usize) -> Option<u64> {
    if chars == 0 || prompt.is_empty() {
        return None;
    }
    let end = prompt.char_indices().nth(chars).map_or(prompt.len(), |(i, _)| i);
    Some(fnv1a(model.bytes().chain([0]).chain(prompt[..end].bytes()), 0))
}

/// Rendezvous (highest random weight) score: removing an upstream moves only its own prefixes.
fn rendezvous(key: u64, upstream: &str) -> u64 {
    fnv1a(upstream.bytes(), key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{Policy, NOT_CONTROLLED, UNKNOWN_CLASS};

    const SET: &str = "us-2025-01";

    fn upstream(name: &str, cost: f64, region: &str, class: &str) -> Upstream {
        Upstream {
            name: name.into(),
            base_url: format!("http://{name}"),
            models: vec!["m".into()],
            hardware: Some(format!("hw-{name}")),
            region: region.into(),
            tags: vec![],
            cost_per_mtok: cost,
            cost_basis: "given".into(),
            max_concurrency: 4,
            api_key: None,
            classes: BTreeMap::from([(SET.to_string(), class.to_string())]),
        }
    }

    fn healthy() -> Observed {
        Observed { healthy: true, ..Observed::default() }
    }

    fn names(fleet: &[Upstream], d: &Decision) -> Vec<String> {
        d.order.iter().map(|c| fleet[c.upstream].name.clone()).collect()
    }

    fn request(affinity: Option<u64>) -> RequestInfo<'static> {
        RequestInfo { model: "m", affinity }
    }

    #[test]
    fn cheap_hardware_first_while_it_meets_the_slo() {
        let fleet = [upstream("gpu", 0.5, "us", "x"), upstream("cpu", 0.1, "us", "x")];
        let settings = RouterSettings { ttft_slo: Duration::from_millis(500), ..RouterSettings::default() };
        let mut obs = vec![healthy(), healthy()];
        let d = rank(&fleet, &obs, &Policy::default(), &request(None), &settings);
        assert_eq!(names(&fleet, &d), ["cpu", "gpu"]);
        assert!(d.order[0].why.starts_with("cheapest that meets the TTFT SLO"), "{}", d.order[0].why);
        // The CPU pool's queue pushes its expected TTFT past the SLO: the GPU pool goes first.
        obs[1] = Observed { ttft: Some(Duration::from_millis(300)), queued: Some(2.0), ..healthy() };
        let d = rank(&fleet, &obs, &Policy::default(), &request(None), &settings);
        assert_eq!(names(&fleet, &d), ["gpu", "cpu"]);
        assert!(d.order[1].why.contains("misses the TTFT SLO") && d.order[1].why.contains("900 ms"));
    }

    #[test]
    fn equal_prices_go_to_the_least_loaded() {
        let fleet = [upstream("a", 0.1, "us", "x"), upstream("b", 0.1, "us", "x")];
        let obs = [Observed { in_flight: 2, ..healthy() }, Observed { running: Some(1.0), ..healthy() }];
        let d = rank(&fleet, &obs, &Policy::default(), &request(None), &RouterSettings::default());
        assert_eq!(names(&fleet, &d), ["b", "a"]);
    }

    #[test]
    fn unhealthy_ejected_and_full_upstreams_are_left_out_with_the_reason() {
        let fleet = [upstream("a", 0.1, "us", "x"), upstream("b", 0.1, "us", "x"), upstream("c", 0.1, "us", "x")];
        let obs = [
            Observed { healthy: false, ..Observed::default() },
            Observed { ejected_for: Some(Duration::from_secs(3)), ..healthy() },
            Observed { in_flight: 4, ..healthy() },
        ];
        let d = rank(&fleet, &obs, &Policy::default(), &request(None), &RouterSettings::default());
        assert!(d.order.is_empty());
        let reasons: Vec<&str> = d.excluded.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(
            reasons,
            ["failing its health check", "ejected after failures for 3.0 s more", "at its concurrency limit (4)"]
        );
        assert!(matches!(d.refusal(&fleet, "m"), Some(Refusal::Unavailable(r)) if r.len() == 3));
        let other = RequestInfo { model: "other", affinity: None };
        let d = rank(&fleet, &obs, &Policy::default(), &other, &RouterSettings::default());
        assert_eq!(d.refusal(&fleet, "other"), Some(Refusal::UnknownModel));
    }

    #[test]
    fn a_forbidden_request_is_refused_not_rerouted() {
        let fleet = [upstream("gpu", 0.5, "us", "3A090.a"), upstream("eu", 0.1, "eu", NOT_CONTROLLED)];
        let policy = Policy {
            regions: Some(vec!["us".into()]),
            classes: Some((SET.into(), vec![NOT_CONTROLLED.into()])),
            ..Policy::default()
        };
        let d = rank(&fleet, &[healthy(), healthy()], &policy, &request(None), &RouterSettings::default());
        match d.refusal(&fleet, "m") {
            Some(Refusal::Forbidden(reasons)) => {
                assert!(reasons[0].contains("export class 3A090.a"), "{reasons:?}");
                assert!(reasons[1].contains("region eu is not allowed"), "{reasons:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_prefix_finds_the_same_upstream_until_it_is_overloaded() {
        let fleet: Vec<Upstream> = (0..4).map(|i| upstream(&format!("u{i}"), 0.1, "us", "x")).collect();
        let settings = RouterSettings::default();
        let mut obs = vec![healthy(); 4];
        let key = affinity_key("m", "You are a helpful assistant. Summarise:", 256);
        let first = rank(&fleet, &obs, &Policy::default(), &request(key), &settings).order[0].clone();
        assert!(first.why.starts_with("prefix affinity"), "{}", first.why);
        obs[first.upstream].in_flight = 1;
        // One request more than the others is within the bound.
        assert_eq!(rank(&fleet, &obs, &Policy::default(), &request(key), &settings).order[0].upstream, first.upstream);
        obs[first.upstream].in_flight = 3;
        let moved = rank(&fleet, &obs, &Policy::default(), &request(key), &settings).order[0].clone();
        assert_ne!(moved.upstream, first.upstream);
        // Prefixes spread over the upstreams.
        let mut hits = [0; 4];
        for p in 0..400 {
            let key = affinity_key("m", &format!("prompt {p}"), 256);
            hits[rank(
                &fleet,
                &[healthy(), healthy(), healthy(), healthy()],
                &Policy::default(),
                &request(key),
                &settings,
            )
            .order[0]
                .upstream] += 1;
        }
        assert!(hits.iter().all(|&h| h > 60), "{hits:?}");
    }

    #[test]
    fn the_affinity_key_reads_only_the_prefix() {
        assert_eq!(affinity_key("m", "abcdef", 3), affinity_key("m", "abcxyz", 3));
        assert_ne!(affinity_key("m", "abcdef", 3), affinity_key("n", "abcdef", 3));
        assert_eq!(affinity_key("m", "ééé", 2), affinity_key("m", "ééx", 2));
        assert_eq!(affinity_key("m", "", 3), None);
        assert_eq!(affinity_key("m", "abc", 0), None);
    }

    fn arb_fleet() -> impl Strategy<Value = (Vec<Upstream>, Vec<Observed>)> {
        let regions = prop::sample::select(vec!["us", "eu", "cn"]);
        let classes = prop::sample::select(vec!["3A090.a", "3A090.b", NOT_CONTROLLED, UNKNOWN_CLASS]);
        let one = (
            regions,
            classes,
            0u32..4,
            any::<bool>(),
            0u32..6,
            prop::option::of(0u64..3000),
            any::<bool>(),
            any::<bool>(),
        );
        prop::collection::vec(one, 1..8).prop_map(|items| {
            let mut fleet = Vec::new();
            let mut obs = Vec::new();
            for (i, (region, class, cost, healthy, in_flight, ttft, ejected, serves)) in items.into_iter().enumerate() {
                let mut u = upstream(&format!("u{i}"), f64::from(cost) / 10.0, region, class);
                if !serves {
                    u.models = vec!["other".into()];
                }
                if i % 3 == 0 {
                    u.tags = vec!["gpu".into()];
                }
                fleet.push(u);
                obs.push(Observed {
                    healthy,
                    in_flight,
                    ttft: ttft.map(Duration::from_millis),
                    ejected_for: ejected.then(|| Duration::from_secs(1)),
                    ..Observed::default()
                });
            }
            (fleet, obs)
        })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let regions = prop::option::of(prop::collection::vec(prop::sample::select(vec!["us", "eu", "cn"]), 0..3));
        let classes = prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["3A090.a", "3A090.b", NOT_CONTROLLED, UNKNOWN_CLASS]),
            0..3,
        ));
        let hardware = prop::option::of(prop::collection::vec((0usize..8).prop_map(|i| format!("hw-u{i}")), 0..4));
        (regions, classes, hardware, any::<bool>()).prop_map(|(regions, classes, hardware, tag)| Policy {
            regions: regions.map(|r| r.into_iter().map(str::to_string).collect()),
            classes: classes.map(|c| (SET.to_string(), c.into_iter().map(str::to_string).collect())),
            hardware,
            tags: if tag { vec!["gpu".into()] } else { vec![] },
        })
    }

    proptest! {
        /// Random fleets, policies and failures: nothing is ever routed against policy, to an
        /// unhealthy, ejected or full upstream, or one that lacks the model; every upstream is
        /// either ranked once or excluded with a reason; and a refusal is 403 exactly when
        /// policy alone forbade every upstream serving the model.
        #[test]
        fn routing_never_breaks_policy((fleet, obs) in arb_fleet(), policy in arb_policy(), prefix in ".{0,40}") {
            let settings = RouterSettings { ttft_slo: Duration::from_millis(1000), ..RouterSettings::default() };
            let req = RequestInfo { model: "m", affinity: affinity_key("m", &prefix, 16) };
            let d = rank(&fleet, &obs, &policy, &req, &settings);
            for c in &d.order {
                let (u, o) = (&fleet[c.upstream], &obs[c.upstream]);
                prop_assert!(policy::denial(&policy, u).is_none(), "{} routed against policy", u.name);
                if let Some(regions) = &policy.regions { prop_assert!(regions.contains(&u.region)); }
                if let Some((set, allowed)) = &policy.classes { prop_assert!(allowed.contains(&u.classes[set])); }
                prop_assert!(u.serves("m") && o.healthy && o.ejected_for.is_none() && o.in_flight < u.max_concurrency);
            }
            let mut seen: Vec<usize> = d.order.iter().map(|c| c.upstream).chain(d.excluded.iter().map(|e| e.0)).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..fleet.len()).collect::<Vec<_>>());
            if let Some(Refusal::Forbidden(_)) = d.refusal(&fleet, "m") {
                prop_assert!(fleet.iter().filter(|u| u.serves("m")).all(|u| policy::denial(&policy, u).is_some()));
            }
        }
    }
}
