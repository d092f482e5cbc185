//! The fleet file (`fleet.toml`): router settings, upstreams and tenants, checked as a whole so a
//! bad file is refused with one message naming the entry and field, and a reload never applies
//! half a file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use tessera_planner::perf::{self, default_precisions, Efficiency, Hardware};
use tessera_planner::tco::{self, PricePoint, Pricing};
use tessera_planner::{Assumptions, Catalog, NamedModels, RuleBook};

/// The class name a policy uses for hardware a rule set does not control.
pub const NOT_CONTROLLED: &str = "not-controlled";
/// The class name of hardware the catalog lacks figures for (or that names no catalog chip).
pub const UNKNOWN_CLASS: &str = "unknown";

#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub message: String,
}

/// A checked fleet file.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub router: RouterSettings,
    pub upstreams: Vec<Upstream>,
    pub tenants: Vec<Tenant>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouterSettings {
    pub listen: String,
    /// Upstreams whose expected time to first token is above this are used only when none is below.
    pub ttft_slo: Duration,
    pub health_interval: Duration,
    /// Consecutive failures (connection errors, 5xx, timeouts) that eject an upstream.
    pub eject_after: u32,
    /// First ejection's length; each further ejection in a row doubles it (up to 8 times).
    pub eject_for: Duration,
    /// Other upstreams tried after a failure before the first byte reached the client.
    pub retries: u32,
    pub connect_timeout: Duration,
    /// Limit on the wait for an upstream's response headers and first body bytes.
    pub first_byte_timeout: Duration,
    /// Whole-request limit; a stream past it ends with an error event.
    pub request_timeout: Duration,
    /// How many leading characters of the prompt pick the affinity upstream.
    pub affinity_prefix_chars: usize,
    /// The affinity upstream is skipped when its load exceeds this many times the mean.
    pub affinity_max_imbalance: f64,
    pub max_body_bytes: usize,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            listen: "127.0.0.1:8080".into(),
            ttft_slo: Duration::from_millis(2000),
            health_interval: Duration::from_millis(2000),
            eject_after: 3,
            eject_for: Duration::from_secs(10),
            retries: 2,
            connect_timeout: Duration::from_millis(1000),
            first_byte_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
            affinity_prefix_chars: 256,
            affinity_max_imbalance: 1.5,
            max_body_bytes: 4 << 20,
        }
    }
}

/// One OpenAI-compatible server the router may send requests to.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// `http://host:port` with no trailing slash.
    pub base_url: String,
    pub models: Vec<String>,
    /// Chip id in the planner's catalog.
    pub hardware: Option<String>,
    pub region: String,
    pub tags: Vec<String>,
    /// Dollars per million generated tokens.
    pub cost_per_mtok: f64,
    /// Where the cost came from: `given`, or the planner's estimate it was computed from.
    pub cost_basis: String,
    pub max_concurrency: u32,
    pub api_key: Option<String>,
    /// The export-control class of its hardware under each rule set a tenant names.
    pub classes: BTreeMap<String, String>,
}

impl Upstream {
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }
}

/// What a tenant's requests may reach. `None` places no limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub regions: Option<Vec<String>>,
    /// Rule set and the classes allowed under it.
    pub classes: Option<(String, Vec<String>)>,
    pub hardware: Option<Vec<String>>,
    /// Every one of these tags must be on the upstream.
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub name: String,
    pub api_keys: Vec<String>,
    pub policy: Policy,
    /// Requests per second and burst.
    pub rate_limit: Option<(f64, f64)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    router: RawRouter,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    #[serde(default)]
    tenant: Vec<RawTenant>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    listen: Option<String>,
    ttft_slo_ms: Option<u64>,
    health_interval_ms: Option<u64>,
    eject_after_failures: Option<u32>,
    eject_for_ms: Option<u64>,
    retries: Option<u32>,
    connect_timeout_ms: Option<u64>,
    first_byte_timeout_s: Option<u64>,
    request_timeout_s: Option<u64>,
    affinity_prefix_chars: Option<usize>,
    affinity_max_imbalance: Option<f64>,
    max_body_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    url: String,
    models: Vec<String>,
    hardware: Option<String>,
    region: String,
    #[serde(default)]
    tags: Vec<String>,
    cost_per_mtok: Option<f64>,
    /// A model of the planner's list (`tessera plan estimate --model`), to compute the cost from.
    plan_model: Option<String>,
    #[serde(default = "default_concurrency")]
    max_concurrency: u32,
    api_key: Option<String>,
    api_key_env: Option<String>,
}

fn default_concurrency() -> u32 {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    #[serde(default)]
    api_keys: Vec<String>,
    api_keys_env: Option<String>,
    allowed_regions: Option<Vec<String>>,
    rule_set: Option<String>,
    allowed_classes: Option<Vec<String>>,
    allowed_hardware: Option<Vec<String>>,
    #[serde(default)]
    required_tags: Vec<String>,
    rate_limit_rps: Option<f64>,
    rate_limit_burst: Option<f64>,
}

impl FleetConfig {
    /// Parses and checks a fleet file; `origin` names it in errors, `env` reads the variables
    /// that hold keys.
    pub fn parse(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<FleetConfig, ConfigError> {
        let fail = |message: String| ConfigError { origin: origin.to_string(), message };
        let raw: RawFleet = toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().replace('\n', " ")))?;
        let router = router_settings(raw.router).map_err(fail)?;
        let catalog = Catalog::builtin().map_err(|e| fail(e.to_string()))?;
        let rules = RuleBook::builtin().map_err(|e| fail(e.to_string()))?;

        let mut tenants = Vec::with_capacity(raw.tenant.len());
        let mut keys_seen: BTreeMap<String, String> = BTreeMap::new();
        for (i, t) in raw.tenant.into_iter().enumerate() {
            let tenant = tenant(t, &rules, env).map_err(|m| fail(format!("tenant #{}: {m}", i + 1)))?;
            if tenants.iter().any(|o: &Tenant| o.name == tenant.name) {
                return Err(fail(format!("tenant {:?} appears twice", tenant.name)));
            }
            for key in &tenant.api_keys {
                if let Some(other) = keys_seen.insert(key.clone(), tenant.name.clone()) {
                    return Err(fail(format!("tenants {other:?} and {:?} share an API key", tenant.name)));
                }
            }
            tenants.push(tenant);
        }
        let rule_sets: BTreeSet<String> =
            tenants.iter().filter_map(|t| t.policy.classes.as_ref().map(|(set, _)| set.clone())).collect();

        let mut upstreams: Vec<Upstream> = Vec::with_capacity(raw.upstream.len());
        for (i, u) in raw.upstream.into_iter().enumerate() {
            let name = u.name.clone();
            let upstream = upstream(u, &catalog, &rules, &rule_sets, env)
                .map_err(|m| fail(format!("upstream #{} ({name:?}): {m}", i + 1)))?;
            if upstreams.iter().any(|o| o.name == upstream.name) {
                return Err(fail(format!("upstream {:?} appears twice", upstream.name)));
            }
            upstreams.push(upstream);
        }
        if upstreams.is_empty() {
            return Err(fail("no [[upstream]] entries: the router needs at least one".into()));
        }
        Ok(FleetConfig { router, upstreams, tenants })
    }

    /// Every model some upstream serves, sorted.
    pub fn models(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.upstreams.iter().flat_map(|u| &u.models).collect();
        set.into_iter().cloned().collect()
    }
}

fn millis(v: Option<u64>, default: Duration, field: &str) -> Result<Duration, String> {
    match v {
        Some(0) => Err(format!("[router] {field} must be at least 1")),
        Some(v) => Ok(Duration::from_millis(v)),
        None => Ok(default),
    }
}

fn router_settings(r: RawRouter) -> Result<RouterSettings, String> {
    let d = RouterSettings::default();
    let secs =
        |v: Option<u64>, default: Duration, field: &str| millis(v.map(|s| s.saturating_mul(1000)), default, field);
    let imbalance = r.affinity_max_imbalance.unwrap_or(d.affinity_max_imbalance);
    if !(imbalance.is_finite() && imbalance >= 1.0) {
        return Err(format!("[router] affinity_max_imbalance must be at least 1, not {imbalance}"));
    }
    Ok(RouterSettings {
        listen: r.listen.unwrap_or(d.listen),
        ttft_slo: millis(r.ttft_slo_ms, d.ttft_slo, "ttft_slo_ms")?,
        health_interval: millis(r.health_interval_ms, d.health_interval, "health_interval_ms")?,
        eject_after: match r.eject_after_failures {
            Some(0) => return Err("[router] eject_after_failures must be at least 1".into()),
            v => v.unwrap_or(d.eject_after),
        },
        eject_for: millis(r.eject_for_ms, d.eject_for, "eject_for_ms")?,
        retries: r.retries.unwrap_or(d.retries),
        connect_timeout: millis(r.connect_timeout_ms, d.connect_timeout, "connect_timeout_ms")?,
        first_byte_timeout: secs(r.first_byte_timeout_s, d.first_byte_timeout, "first_byte_timeout_s")?,
        request_timeout: secs(r.request_timeout_s, d.request_timeout, "request_timeout_s")?,
        affinity_prefix_chars: r.affinity_prefix_chars.unwrap_or(d.affinity_prefix_chars),
        affinity_max_imbalance: imbalance,
        max_body_bytes: r.max_body_bytes.unwrap_or(d.max_body_bytes),
    })
}

fn read_env(env: &dyn Fn(&str) -> Option<String>, var: &str, field: &str) -> Result<String, String> {
    env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| format!("{field}: environment variable {var} is not set"))
}

/// `http://host:port[/]`, checked and without the trailing slash.
fn base_url(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "url {url:?}: https upstreams are not supported; reach them through a TLS-terminating proxy or \
                 sidecar"
            ))
        }
        _ => return Err(format!("url {url:?}: must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("url {url:?}: no host"));
    }
    if uri.query().is_some() {
        return Err(format!("url {url:?}: a query string is not allowed"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn upstream(
    u: RawUpstream,
    catalog: &Catalog,
    rules: &RuleBook,
    rule_sets: &BTreeSet<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, String> {
    if u.name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    let base_url = base_url(&u.url)?;
    if u.models.is_empty() || u.models.iter().any(|m| m.trim().is_empty()) {
        return Err("models must list at least one model id".into());
    }
    if u.region.trim().is_empty() {
        return Err("region must not be empty".into());
    }
    if u.max_concurrency == 0 {
        return Err("max_concurrency must be at least 1".into());
    }
    let chip = match &u.hardware {
        Some(id) => Some(catalog.chip(id).map_err(|e| format!("hardware: {e}"))?),
        None => None,
    };
    let (cost_per_mtok, cost_basis) = match (u.cost_per_mtok, &u.plan_model) {
        (Some(_), Some(_)) => return Err("give cost_per_mtok or plan_model, not both".into()),
        (Some(c), None) if c.is_finite() && c >= 0.0 => (c, "given".to_string()),
        (Some(c), None) => return Err(format!("cost_per_mtok must be a number of at least 0, not {c}")),
        (None, Some(model)) => {
            let chip = chip.ok_or("plan_model needs hardware (the chip to estimate on)")?;
            planned_cost(model, chip, u.max_concurrency)?
        }
        (None, None) => return Err("give cost_per_mtok ($ per million tokens) or plan_model to estimate it".into()),
    };
    let api_key = match (u.api_key, u.api_key_env) {
        (Some(_), Some(_)) => return Err("give api_key or api_key_env, not both".into()),
        (Some(k), None) => Some(k),
        (None, Some(var)) => Some(read_env(env, &var, "api_key_env")?),
        (None, None) => None,
    };
    let mut classes = BTreeMap::new();
    for set_id in rule_sets {
        let class = match chip {
            Some(chip) => {
                let set = rules.set(set_id).map_err(|e| e.to_string())?;
                class_name(set.classify(chip).class.label())
            }
            None => UNKNOWN_CLASS.to_string(),
        };
        classes.insert(set_id.clone(), class);
    }
    Ok(Upstream {
        name: u.name,
        base_url,
        models: u.models,
        hardware: u.hardware,
        region: u.region,
        tags: u.tags,
        cost_per_mtok,
        cost_basis,
        max_concurrency: u.max_concurrency,
        api_key,
        classes,
    })
}

/// The planner's label as a policy names it (`not-controlled` for the planner's sentence).
fn class_name(label: &str) -> String {
    if label == tessera_planner::rules::NOT_CONTROLLED {
        NOT_CONTROLLED.to_string()
    } else {
        label.to_string()
    }
}

/// $/Mtok of generated tokens for `model` on one `chip` with `batch` sequences at 1024 tokens of
/// context, as `tessera plan estimate` computes it with the built-in assumptions.
fn planned_cost(model: &str, chip: &tessera_planner::Chip, batch: u32) -> Result<(f64, String), String> {
    let plan_err = |e: tessera_planner::PlanError| format!("plan_model: {e}");
    let models = NamedModels::builtin().map_err(plan_err)?;
    let shape = models.get(model).ok_or_else(|| {
        format!("plan_model: unknown model {model:?} (known: {})", models.names().collect::<Vec<_>>().join(", "))
    })?;
    let a = Assumptions::builtin().map_err(plan_err)?;
    let hw = Hardware::new(chip, 1, default_precisions(chip, shape), chip.cores, None, &a).map_err(plan_err)?;
    let context = 1024;
    let est =
        perf::estimate(shape, &hw, &Efficiency::defaults(&a), a.usable_memory_fraction.value, batch, context, 512)
            .map_err(plan_err)?;
    let hourly = tco::hourly_cost(chip, &a, Pricing::Auto, PricePoint::Mid).map_err(plan_err)?;
    let cost = tco::token_cost(&hourly, 1, est.prefill_tokens_per_s, est.decode_tokens_per_s, a.utilisation.value);
    let basis = format!(
        "planned: {model} on {}, batch {batch}, {:.0} tok/s generated, ${:.2}/h",
        chip.id, est.decode_tokens_per_s, cost.instance_usd_per_hour
    );
    Ok((cost.usd_per_mtok_output, basis))
}

fn tenant(t: RawTenant, rules: &RuleBook, env: &dyn Fn(&str) -> Option<String>) -> Result<Tenant, String> {
    if t.name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    let mut api_keys = t.api_keys;
    if let Some(var) = &t.api_keys_env {
        let value = read_env(env, var, "api_keys_env")?;
        api_keys.extend(value.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string));
    }
    if api_keys.is_empty() {
        return Err(format!("{:?}: give api_keys or api_keys_env", t.name));
    }
    if api_keys.iter().any(|k| k.trim().is_empty() || k.chars().any(char::is_whitespace)) {
        return Err(format!("{:?}: API keys must be non-empty and contain no spaces", t.name));
    }
    let classes = match (t.rule_set, t.allowed_classes) {
        (Some(set_id), Some(classes)) => {
            let set = rules.set(&set_id).map_err(|e| format!("{:?}: rule_set: {e}", t.name))?;
            let mut known: Vec<String> = set.classes.iter().map(|c| c.id.clone()).collect();
            known.push(NOT_CONTROLLED.into());
            known.push(UNKNOWN_CLASS.into());
            for c in &classes {
                if !known.contains(c) {
                    return Err(format!(
                        "{:?}: allowed_classes: {c:?} is not a class of {set_id} (known: {})",
                        t.name,
                        known.join(", ")
                    ));
                }
            }
            Some((set_id, classes))
        }
        (None, None) => None,
        (Some(_), None) => return Err(format!("{:?}: rule_set needs allowed_classes", t.name)),
        (None, Some(_)) => {
            return Err(format!("{:?}: allowed_classes needs rule_set (the rules they are under)", t.name))
        }
    };
    let rate_limit = match (t.rate_limit_rps, t.rate_limit_burst) {
        (None, None) => None,
        (None, Some(_)) => return Err(format!("{:?}: rate_limit_burst needs rate_limit_rps", t.name)),
        (Some(rps), burst) => {
            let burst = burst.unwrap_or(rps.max(1.0));
            if !(rps.is_finite() && rps > 0.0 && burst.is_finite() && burst >= 1.0) {
                return Err(format!("{:?}: rate_limit_rps must be above 0 and rate_limit_burst at least 1", t.name));
            }
            Some((rps, burst))
        }
    };
    Ok(Tenant {
        name: t.name,
        api_keys,
        policy: Policy { regions: t.allowed_regions, classes, hardware: t.allowed_hardware, tags: t.required_tags },
        rate_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<FleetConfig, ConfigError> {
        FleetConfig::parse(text, "fleet.toml", &no_env)
    }

    const FLEET: &str = r#"
        [router]
        listen = "0.0.0.0:9000"
        ttft_slo_ms = 500

        [[upstream]]
        name = "gpu"
        url = "http://10.0.0.1:8080/"
        models = ["llama"]
        hardware = "h100-sxm"
        region = "us-east"
        cost_per_mtok = 0.2

        [[upstream]]
        name = "cpu"
        url = "http://10.0.0.2:8080"
        models = ["llama", "smollm2"]
        region = "eu-west"
        cost_per_mtok = 0.05
        tags = ["cpu"]

        [[tenant]]
        name = "acme"
        api_keys = ["k1", "k2"]
        allowed_regions = ["us-east"]
        rule_set = "us-2025-01"
        allowed_classes = ["not-controlled"]
        rate_limit_rps = 5
    "#;

    #[test]
    fn a_fleet_file_is_read_with_its_defaults() {
        let f = parse(FLEET).unwrap();
        assert_eq!(f.router.listen, "0.0.0.0:9000");
        assert_eq!(f.router.ttft_slo, Duration::from_millis(500));
        assert_eq!(f.router.retries, 2);
        assert_eq!(f.upstreams[0].base_url, "http://10.0.0.1:8080");
        assert_eq!(f.upstreams[0].max_concurrency, 64);
        // The H100 is controlled under the 2025 rules; an upstream with no hardware is unknown.
        assert_eq!(f.upstreams[0].classes["us-2025-01"], "3A090.a");
        assert_eq!(f.upstreams[1].classes["us-2025-01"], UNKNOWN_CLASS);
        assert_eq!(f.tenants[0].rate_limit, Some((5.0, 5.0)));
        assert_eq!(f.models(), ["llama", "smollm2"]);
    }

    #[test]
    fn costs_can_come_from_the_planner() {
        let text = FLEET.replace("cost_per_mtok = 0.2", "plan_model = \"llama-3.1-8b\"");
        let f = parse(&text).unwrap();
        let gpu = &f.upstreams[0];
        assert!(gpu.cost_per_mtok > 0.0 && gpu.cost_per_mtok < 10.0, "{}", gpu.cost_per_mtok);
        assert!(gpu.cost_basis.starts_with("planned: llama-3.1-8b on h100-sxm"), "{}", gpu.cost_basis);
    }

    #[test]
    fn keys_can_come_from_the_environment() {
        let text = FLEET.replace("api_keys = [\"k1\", \"k2\"]", "api_keys_env = \"ACME_KEYS\"");
        let env = |v: &str| (v == "ACME_KEYS").then(|| " a1, a2 ".to_string());
        let f = FleetConfig::parse(&text, "f", &env).unwrap();
        assert_eq!(f.tenants[0].api_keys, ["a1", "a2"]);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("environment variable ACME_KEYS is not set"), "{err}");
    }

    #[test]
    fn bad_files_name_the_entry_and_field() {
        let cases = [
            (FLEET.replace("region = \"eu-west\"", "region = \"eu-west\"\ncolour = 1"), "unknown field `colour`"),
            (FLEET.replace("http://10.0.0.2:8080", "https://10.0.0.2"), "upstream #2 (\"cpu\"): url"),
            (FLEET.replace("http://10.0.0.2:8080", "10.0.0.2:8080"), "must start with http://"),
            (FLEET.replace("\"h100-sxm\"", "\"h999\""), "upstream #1 (\"gpu\"): hardware: unknown chip \"h999\""),
            (FLEET.replace("cost_per_mtok = 0.05", ""), "give cost_per_mtok"),
            (FLEET.replace("cost_per_mtok = 0.05", "cost_per_mtok = -1.0"), "at least 0"),
            (FLEET.replace("\"not-controlled\"", "\"harmless\""), "\"harmless\" is not a class of us-2025-01"),
            (FLEET.replace("\"us-2025-01\"", "\"us-1999\""), "rule_set: unknown rule set"),
            (FLEET.replace("name = \"cpu\"", "name = \"gpu\""), "upstream \"gpu\" appears twice"),
            (FLEET.replace("ttft_slo_ms = 500", "ttft_slo_ms = 0"), "ttft_slo_ms must be at least 1"),
            (FLEET.replace("models = [\"llama\"]", "models = []"), "models must list"),
            (FLEET.replace("rate_limit_rps = 5", "rate_limit_rps = 0"), "rate_limit_rps must be above 0"),
            (FLEET.replace("api_keys = [\"k1\", \"k2\"]", "api_keys = []"), "give api_keys"),
            ("[[tenant]]\nname = \"x\"\napi_keys = [\"k\"]\n".to_string(), "no [[upstream]] entries"),
            ("[router\n".to_string(), "fleet.toml: "),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        let shared = FLEET
            .replace("rate_limit_rps = 5", "rate_limit_rps = 5\n[[tenant]]\nname = \"other\"\napi_keys = [\"k2\"]");
        assert!(parse(&shared).unwrap_err().to_string().contains("share an API key"));
    }
}
