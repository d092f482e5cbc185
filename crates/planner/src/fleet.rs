//! The fleet optimiser: the cheapest mix of allowed hardware that serves a workload within its
//! latency targets, in the manner of Mélange (Griggs et al., 2024): requests are bucketed by size,
//! each hardware type gets a capacity per bucket under the SLO, and an exact integer program picks
//! how many of each type to run and which buckets they serve.
//!
//! Capacity of one instance (a chip, or a tensor-parallel group of them) for a bucket of requests
//! with `I` input and `O` output tokens, from the performance model:
//! - prefill of `I` tokens takes `t_pf`; prompts queue for the prefill (M/D/1), so the mean TTFT is
//!   `t_pf (1 + rho / (2 (1 - rho)))` with `rho = lambda t_pf`; the TTFT target bounds `rho`;
//! - decode runs `B` sequences per step of `t_dec(B)` during the time prefill leaves free, so the
//!   inter-token latency is `t_dec / (1 - rho)` and the request rate at most
//!   `B / (O t_dec + B t_pf)`; `B` is limited by KV-cache memory and chosen to maximise the rate.
//!
//! Loads add linearly across buckets on one instance (`sum lambda_b / capacity_b <= n`), as
//! Mélange assumes. Every chip not in the plan is listed with the reason it is not.

use serde::Serialize;

use crate::assumptions::Assumptions;
use crate::catalog::Catalog;
use crate::ilp::{self, Problem, Row, Sense};
use crate::model::ModelShape;
use crate::perf::{self, default_precisions, Efficiency, Hardware};
use crate::rules::{RuleBook, Verdict};
use crate::tco::{hourly_cost, PricePoint, Pricing};
use crate::PlanError;

/// A class of requests and its share of the traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Share of requests (the shares sum to 1).
    pub share: f64,
}

/// What the fleet must serve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    /// Requests per second.
    pub rate_rps: f64,
    pub buckets: Vec<Bucket>,
    /// Target mean time to first token, seconds.
    pub slo_ttft_s: f64,
    /// Target inter-token latency, seconds (none: unconstrained).
    pub slo_itl_s: Option<f64>,
}

impl Workload {
    /// Buckets from input and output length distributions (`(tokens, weight)`), crossed.
    pub fn from_distributions(
        rate_rps: f64,
        inputs: &[(u32, f64)],
        outputs: &[(u32, f64)],
        slo_ttft_s: f64,
        slo_itl_s: Option<f64>,
    ) -> Result<Workload, PlanError> {
        let check = |d: &[(u32, f64)], what: &str| -> Result<f64, PlanError> {
            if d.is_empty() || d.iter().any(|&(t, w)| t == 0 || !(w.is_finite() && w > 0.0)) {
                return Err(PlanError::Invalid(format!(
                    "{what}: every length must be at least 1 with a positive weight"
                )));
            }
            Ok(d.iter().map(|&(_, w)| w).sum())
        };
        let (si, so) = (check(inputs, "input tokens")?, check(outputs, "output tokens")?);
        if !(rate_rps.is_finite() && rate_rps > 0.0) {
            return Err(PlanError::Invalid(format!("request rate {rate_rps} must be positive")));
        }
        if !(slo_ttft_s.is_finite() && slo_ttft_s > 0.0) || slo_itl_s.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(PlanError::Invalid("latency targets must be positive".into()));
        }
        let mut buckets = Vec::new();
        for &(i, wi) in inputs {
            for &(o, wo) in outputs {
                buckets.push(Bucket { input_tokens: i, output_tokens: o, share: wi / si * wo / so });
            }
        }
        Ok(Workload { rate_rps, buckets, slo_ttft_s, slo_itl_s })
    }
}

/// Knobs of the search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetOptions {
    pub region: String,
    /// Tensor-parallel degrees to consider.
    pub tp_degrees: Vec<u32>,
    /// Count "allowed after notification" (NAC) as allowed.
    pub allow_notified: bool,
    /// Consider chips whose classification the data cannot decide.
    pub include_unknown_class: bool,
    pub pricing: Pricing,
    pub price_point: PricePoint,
    pub max_batch: u32,
    pub ubatch: u32,
    pub node_limit: usize,
}

impl FleetOptions {
    pub fn new(region: &str) -> FleetOptions {
        FleetOptions {
            region: region.to_string(),
            tp_degrees: vec![1, 2, 4, 8],
            allow_notified: true,
            include_unknown_class: false,
            pricing: Pricing::Auto,
            price_point: PricePoint::Mid,
            max_batch: 512,
            ubatch: 512,
            node_limit: 20_000,
        }
    }
}

/// One instance's performance on one bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BucketCapacity {
    /// Requests per second one instance serves within the SLO (0: it cannot).
    pub rps: f64,
    pub batch: u32,
    pub ttft_s: f64,
    pub itl_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// A chip at a tensor-parallel degree, priced and measured against every bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceType {
    pub chip: String,
    pub tp: u32,
    pub usd_per_hour: f64,
    pub price_basis: String,
    pub capacity: Vec<BucketCapacity>,
    /// TPP of the instance, counted against a quota.
    pub tpp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_tpp_per_year: Option<f64>,
    pub efficiency_basis: String,
}

/// A line of the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanLine {
    pub chip: String,
    pub tp: u32,
    pub instances: u32,
    pub chips: u32,
    pub usd_per_hour: f64,
    /// Share of each bucket's requests this type serves.
    pub bucket_shares: Vec<f64>,
    /// Fraction of the instances' capacity in use.
    pub load: f64,
}

/// Why a chip is not in the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exclusion {
    pub chip: String,
    pub stage: &'static str,
    pub reason: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetPlan {
    pub model: String,
    pub rule_set: String,
    pub region: String,
    pub workload: Workload,
    pub lines: Vec<PlanLine>,
    pub usd_per_hour: f64,
    pub usd_per_million_tokens: f64,
    pub usd_per_request: f64,
    pub proven_optimal: bool,
    pub nodes: usize,
    pub considered: Vec<InstanceType>,
    pub excluded: Vec<Exclusion>,
    pub notes: Vec<String>,
}

/// Capacity of one instance for one bucket, or why it has none.
pub fn capacity(
    model: &ModelShape,
    hw: &Hardware,
    eff: &Efficiency,
    usable: f64,
    bucket: &Bucket,
    w: &Workload,
    options: &FleetOptions,
) -> BucketCapacity {
    let (max_batch, ubatch) = (options.max_batch, options.ubatch);
    let (i, o) = (bucket.input_tokens, bucket.output_tokens);
    let none = |limit: String, ttft: f64, itl: f64| BucketCapacity {
        rps: 0.0,
        batch: 0,
        ttft_s: ttft,
        itl_s: itl,
        limit: Some(limit),
    };
    if !perf::fits(model, hw, usable, 1, i + o) {
        let need = model.weight_bytes() + f64::from(i + o) * model.kv_bytes_per_token();
        return none(format!("needs {:.1} GB, {:.1} GB usable", need / 1e9, usable * hw.memory_bytes / 1e9), 0.0, 0.0);
    }
    let t_pf = perf::prefill(model, hw, eff, i, 0, ubatch).seconds;
    if t_pf >= w.slo_ttft_s {
        return none(
            format!("prefill of {i} tokens takes {:.0} ms, TTFT target {:.0} ms", t_pf * 1e3, w.slo_ttft_s * 1e3),
            t_pf,
            0.0,
        );
    }
    let r = w.slo_ttft_s / t_pf;
    let rho_max = 2.0 * (r - 1.0) / (2.0 * r - 1.0);
    let lambda_ttft = rho_max / t_pf;
    let b_mem = perf::max_sequences(model, hw, usable, i + o).min(max_batch).max(1);
    let context = f64::from(i) + f64::from(o) / 2.0;
    let mut best = BucketCapacity { rps: 0.0, batch: 0, ttft_s: t_pf, itl_s: 0.0, limit: None };
    let mut fastest_step = f64::INFINITY;
    for b in 1..=b_mem {
        let t_dec = perf::decode_step(model, hw, eff, b, context).seconds;
        fastest_step = fastest_step.min(t_dec);
        let lambda_dec = f64::from(b) / (t_dec * f64::from(o) + f64::from(b) * t_pf);
        let lambda_itl = match w.slo_itl_s {
            Some(s) if t_dec >= s => continue,
            Some(s) => (1.0 - t_dec / s) / t_pf,
            None => f64::INFINITY,
        };
        let lambda = lambda_ttft.min(lambda_dec).min(lambda_itl);
        if lambda > best.rps {
            let rho = lambda * t_pf;
            best = BucketCapacity { rps: lambda, batch: b, ttft_s: t_pf, itl_s: t_dec / (1.0 - rho), limit: None };
        }
    }
    if best.rps == 0.0 {
        let s = w.slo_itl_s.unwrap_or(0.0);
        return none(
            format!("a decode step takes {:.1} ms, ITL target {:.1} ms", fastest_step * 1e3, s * 1e3),
            t_pf,
            fastest_step,
        );
    }
    best
}

/// The data a plan is made from.
pub struct Inputs<'a> {
    pub catalog: &'a Catalog,
    pub rules: &'a RuleBook,
    pub assumptions: &'a Assumptions,
    /// Fitted efficiency factors per chip id (others use the defaults).
    pub calibrated: &'a [(String, Efficiency)],
}

/// Plans the cheapest fleet for `model` and `workload` under `rule_set`.
pub fn plan_fleet(
    inputs: &Inputs<'_>,
    rule_set: &str,
    model: &ModelShape,
    workload: &Workload,
    options: &FleetOptions,
) -> Result<FleetPlan, PlanError> {
    let Inputs { catalog, rules, assumptions, calibrated } = *inputs;
    model.validate()?;
    let set = rules.set(rule_set)?;
    let (region, _) = rules.countries.resolve(&options.region)?;
    let usable = assumptions.usable_memory_fraction.value;
    let mut excluded = Vec::new();
    let mut notes = Vec::new();
    let mut types: Vec<InstanceType> = Vec::new();
    for chip in &catalog.chips {
        let judgement = set.judge(chip, &rules.countries, &region)?;
        let quota = match &judgement.verdict {
            Verdict::Allowed => None,
            Verdict::Notification if options.allow_notified => {
                notes.push(format!("{}: {}", chip.id, judgement.explain()));
                None
            }
            Verdict::Quota { tpp_per_year } => Some(*tpp_per_year),
            Verdict::Unknown { .. } if options.include_unknown_class => {
                notes.push(format!(
                    "{}: classification undecided, included as asked: {}",
                    chip.id,
                    judgement.explain()
                ));
                None
            }
            _ => {
                excluded.push(Exclusion { chip: chip.id.clone(), stage: "rules", reason: judgement.explain() });
                continue;
            }
        };
        let hourly = match hourly_cost(chip, assumptions, options.pricing, options.price_point) {
            Ok(h) => h,
            Err(e) => {
                excluded.push(Exclusion { chip: chip.id.clone(), stage: "data", reason: e.to_string() });
                continue;
            }
        };
        let eff = calibrated
            .iter()
            .find(|(id, _)| id == &chip.id)
            .map_or_else(|| Efficiency::defaults(assumptions), |(_, e)| e.clone());
        let precisions = default_precisions(chip, model);
        let tpp_chip = chip.tpp_per_ic().lo * f64::from(chip.ics);
        let mut reasons: Vec<String> = Vec::new();
        let mut any = false;
        for &tp in &options.tp_degrees {
            let hw = match Hardware::new(chip, tp, precisions, None, None, assumptions) {
                Ok(hw) => hw,
                Err(e) => {
                    reasons.push(format!("tp {tp}: {e}"));
                    continue;
                }
            };
            let caps: Vec<BucketCapacity> =
                workload.buckets.iter().map(|b| capacity(model, &hw, &eff, usable, b, workload, options)).collect();
            if caps.iter().all(|c| c.rps == 0.0) {
                let why: Vec<String> = caps.iter().filter_map(|c| c.limit.clone()).collect();
                reasons.push(format!("tp {tp}: {}", why.join("; ")));
                continue;
            }
            any = true;
            types.push(InstanceType {
                chip: chip.id.clone(),
                tp,
                usd_per_hour: hourly.usd_per_hour * f64::from(tp),
                price_basis: hourly.basis.clone(),
                capacity: caps,
                tpp: tpp_chip * f64::from(tp),
                quota_tpp_per_year: quota,
                efficiency_basis: eff.basis.clone(),
            });
        }
        if !any {
            excluded.push(Exclusion { chip: chip.id.clone(), stage: "model/SLO", reason: reasons.join("; ") });
        }
    }
    // Buckets nobody can serve make the plan impossible; say which.
    for (b, bucket) in workload.buckets.iter().enumerate() {
        if !types.iter().any(|t| t.capacity[b].rps > 0.0) {
            let tried: Vec<String> = types
                .iter()
                .filter_map(|t| t.capacity[b].limit.as_ref().map(|l| format!("{} x{}: {l}", t.chip, t.tp)))
                .collect();
            return Err(PlanError::Invalid(format!(
                "no allowed hardware serves requests of {} input / {} output tokens within the targets ({}; excluded: {})",
                bucket.input_tokens,
                bucket.output_tokens,
                if tried.is_empty() { "nothing else is allowed".to_string() } else { tried.join("; ") },
                excluded.iter().map(|e| format!("{} ({})", e.chip, e.stage)).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let loads: Vec<f64> = workload.buckets.iter().map(|b| b.share * workload.rate_rps).collect();
    let solution = optimise(&types, &loads, options.node_limit)?;
    let mut lines = Vec::new();
    for (g, t) in types.iter().enumerate() {
        let n = solution.counts[g];
        if n == 0 {
            continue;
        }
        let shares: Vec<f64> = (0..loads.len()).map(|b| solution.shares[b][g]).collect();
        let used: f64 = (0..loads.len())
            .filter(|&b| t.capacity[b].rps > 0.0)
            .map(|b| loads[b] * shares[b] / t.capacity[b].rps)
            .sum();
        lines.push(PlanLine {
            chip: t.chip.clone(),
            tp: t.tp,
            instances: n,
            chips: n * t.tp,
            usd_per_hour: f64::from(n) * t.usd_per_hour,
            bucket_shares: shares,
            load: used / f64::from(n),
        });
        if let Some(q) = t.quota_tpp_per_year {
            notes.push(format!(
                "{}: {} chips use {:.0} of the {:.0} TPP per consignee per year the quota allows",
                t.chip,
                n * t.tp,
                f64::from(n) * t.tpp,
                q
            ));
        }
    }
    // Chips that could serve but lost on cost.
    for chip in &catalog.chips {
        if lines.iter().any(|l| l.chip == chip.id) || excluded.iter().any(|e| e.chip == chip.id) {
            continue;
        }
        let alone = types
            .iter()
            .filter(|t| t.chip == chip.id)
            .filter_map(|t| {
                let mut units = 0.0;
                for (b, load) in loads.iter().enumerate() {
                    if t.capacity[b].rps == 0.0 {
                        return None;
                    }
                    units += load / t.capacity[b].rps;
                }
                Some((units.ceil().max(1.0) * t.usd_per_hour, t.tp))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let reason = match alone {
            Some((cost, tp)) => format!(
                "not selected on cost: serving everything alone (tp {tp}) costs ${cost:.2}/h vs ${:.2}/h",
                solution.value
            ),
            None => "not selected on cost: cannot serve every bucket alone and adds nothing cheaper".to_string(),
        };
        excluded.push(Exclusion { chip: chip.id.clone(), stage: "cost", reason });
    }
    let tokens_per_s: f64 = workload.rate_rps
        * workload.buckets.iter().map(|b| b.share * f64::from(b.input_tokens + b.output_tokens)).sum::<f64>();
    if !solution.proven_optimal {
        notes.push(format!("search stopped at {} nodes: best plan found, optimality not proven", solution.nodes));
    }
    Ok(FleetPlan {
        model: model.name.clone(),
        rule_set: set.id.clone(),
        region,
        workload: workload.clone(),
        usd_per_hour: solution.value,
        usd_per_million_tokens: solution.value / (3600.0 * tokens_per_s) * 1e6,
        usd_per_request: solution.value / (3600.0 * workload.rate_rps),
        lines,
        proven_optimal: solution.proven_optimal,
        nodes: solution.nodes,
        considered: types,
        excluded,
        notes,
    })
}

/// Integer counts per type and the share of each bucket's load per type.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub counts: Vec<u32>,
    pub shares: Vec<Vec<f64>>,
    pub value: f64,
    pub proven_optimal: bool,
    pub nodes: usize,
}

/// The integer program: minimise sum cost_g n_g subject to each bucket fully assigned, each type's
/// load within n_g instances, and quotas on TPP.
pub fn optimise(types: &[InstanceType], loads: &[f64], node_limit: usize) -> Result<Solution, PlanError> {
    let g_n = types.len();
    let b_n = loads.len();
    // Variables: n_g first, then x_bg for the pairs that can serve.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for b in 0..b_n {
        for (g, t) in types.iter().enumerate() {
            if t.capacity[b].rps > 0.0 {
                pairs.push((b, g));
            }
        }
    }
    let n = g_n + pairs.len();
    let mut objective = vec![0.0; n];
    for (g, t) in types.iter().enumerate() {
        objective[g] = t.usd_per_hour;
    }
    let mut rows = Vec::new();
    for b in 0..b_n {
        let coeffs: Vec<(usize, f64)> =
            pairs.iter().enumerate().filter(|(_, &(pb, _))| pb == b).map(|(k, _)| (g_n + k, 1.0)).collect();
        rows.push(Row { coeffs, sense: Sense::Eq, rhs: 1.0 });
    }
    for (g, t) in types.iter().enumerate() {
        let mut coeffs: Vec<(usize, f64)> = pairs
            .iter()
            .enumerate()
            .filter(|(_, &(_, pg))| pg == g)
            .map(|(k, &(b, _))| (g_n + k, loads[b] / t.capacity[b].rps))
            .collect();
        coeffs.push((g, -1.0));
        rows.push(Row { coeffs, sense: Sense::Le, rhs: 0.0 });
    }
    let mut quotas: Vec<f64> = types.iter().filter_map(|t| t.quota_tpp_per_year).collect();
    quotas.sort_by(f64::total_cmp);
    quotas.dedup();
    for q in &quotas {
        let coeffs: Vec<(usize, f64)> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.quota_tpp_per_year == Some(*q))
            .map(|(g, t)| (g, t.tpp))
            .collect();
        rows.push(Row { coeffs, sense: Sense::Le, rhs: *q });
    }
    let problem = Problem { n, objective, rows, integers: (0..g_n).collect() };
    // Start from each bucket on its cheapest type per request, rounded up (if quotas allow).
    let mut units = vec![0.0; g_n];
    let mut start_x = vec![0.0; n];
    for (b, load) in loads.iter().enumerate() {
        let best = pairs.iter().enumerate().filter(|(_, &(pb, _))| pb == b).min_by(|(_, &(_, g1)), (_, &(_, g2))| {
            (types[g1].usd_per_hour / types[g1].capacity[b].rps)
                .total_cmp(&(types[g2].usd_per_hour / types[g2].capacity[b].rps))
        });
        if let Some((k, &(_, g))) = best {
            start_x[g_n + k] = 1.0;
            units[g] += load / types[g].capacity[b].rps;
        }
    }
    for (x, u) in start_x.iter_mut().zip(&units) {
        *x = u.ceil();
    }
    let start_value: f64 = (0..g_n).map(|g| start_x[g] * types[g].usd_per_hour).sum();
    let quota_ok = quotas.iter().all(|q| {
        types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.quota_tpp_per_year == Some(*q))
            .map(|(g, t)| start_x[g] * t.tpp)
            .sum::<f64>()
            <= *q
    });
    let incumbent = quota_ok.then_some((start_x, start_value));
    let s = ilp::solve_mip(&problem, node_limit, incumbent)
        .ok_or_else(|| PlanError::Invalid("no fleet meets the workload within the quotas and targets".into()))?;
    let counts: Vec<u32> = s.x[..g_n].iter().map(|v| v.round().max(0.0) as u32).collect();
    let mut shares = vec![vec![0.0; g_n]; b_n];
    for (k, &(b, g)) in pairs.iter().enumerate() {
        shares[b][g] = s.x[g_n + k];
    }
    Ok(Solution { counts, shares, value: s.value, proven_optimal: s.proven_optimal, nodes: s.nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NamedModels;
    use proptest::prelude::*;

    fn setup() -> (Catalog, RuleBook, Assumptions, ModelShape) {
        (
            Catalog::builtin().unwrap(),
            RuleBook::builtin().unwrap(),
            Assumptions::builtin().unwrap(),
            NamedModels::builtin().unwrap().get("llama-3.1-8b").unwrap().clone(),
        )
    }

    fn workload(rate: f64) -> Workload {
        Workload::from_distributions(rate, &[(1024, 0.7), (4096, 0.3)], &[(256, 1.0)], 2.0, Some(0.1)).unwrap()
    }

    /// Every bucket is fully assigned and no type is loaded beyond its instances.
    fn check_feasible(plan: &FleetPlan) {
        let loads: Vec<f64> = plan.workload.buckets.iter().map(|b| b.share * plan.workload.rate_rps).collect();
        for b in 0..loads.len() {
            let total: f64 = plan.lines.iter().map(|l| l.bucket_shares[b]).sum();
            assert!((total - 1.0).abs() < 1e-6, "bucket {b} assigned {total}");
        }
        for l in &plan.lines {
            assert!(l.load <= 1.0 + 1e-6, "{l:?}");
        }
    }

    #[test]
    fn china_under_2023_excludes_controlled_chips_and_says_why() {
        let (cat, rules, a, m) = setup();
        let plan = plan_fleet(
            &Inputs { catalog: &cat, rules: &rules, assumptions: &a, calibrated: &[] },
            "us-2023-10",
            &m,
            &workload(5.0),
            &FleetOptions::new("CN"),
        )
        .unwrap();
        check_feasible(&plan);
        let reason =
            |chip: &str| plan.excluded.iter().find(|e| e.chip == chip).map(|e| e.reason.clone()).unwrap_or_default();
        assert!(
            reason("h100-sxm").starts_with("license required in CN under us-2023-10 (3A090.a"),
            "{}",
            reason("h100-sxm")
        );
        assert!(reason("inferentia2").contains("needs die_area_mm2"), "{}", reason("inferentia2"));
        assert!(reason("l20").contains("price_usd is unknown"), "{}", reason("l20"));
        assert!(plan.lines.iter().all(|l| !["h100-sxm", "a100-sxm", "b200", "mi300x"].contains(&l.chip.as_str())));
        assert!(plan.usd_per_hour > 0.0 && plan.proven_optimal);
        // Every chip is accounted for: in the plan or excluded with a reason.
        for chip in &cat.chips {
            assert!(
                plan.lines.iter().any(|l| l.chip == chip.id) || plan.excluded.iter().any(|e| e.chip == chip.id),
                "{}",
                chip.id
            );
        }
    }

    #[test]
    fn an_unconstrained_region_can_use_anything() {
        let (cat, rules, a, m) = setup();
        let plan = plan_fleet(
            &Inputs { catalog: &cat, rules: &rules, assumptions: &a, calibrated: &[] },
            "us-2023-10",
            &m,
            &workload(20.0),
            &FleetOptions::new("US"),
        )
        .unwrap();
        check_feasible(&plan);
        assert!(plan.excluded.iter().all(|e| e.stage != "rules"), "{:?}", plan.excluded);
    }

    #[test]
    fn impossible_targets_name_the_bucket() {
        let (cat, rules, a, m) = setup();
        let w = Workload::from_distributions(1.0, &[(32_000, 1.0)], &[(16, 1.0)], 0.001, None).unwrap();
        let err = plan_fleet(
            &Inputs { catalog: &cat, rules: &rules, assumptions: &a, calibrated: &[] },
            "us-2023-10",
            &m,
            &w,
            &FleetOptions::new("US"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("no allowed hardware serves requests of 32000 input / 16 output tokens"),
            "{err}"
        );
    }

    #[test]
    fn capacity_respects_the_targets_it_reports() {
        let (cat, _, a, m) = setup();
        let chip = cat.chip("h100-sxm").unwrap();
        let hw = Hardware::new(chip, 1, default_precisions(chip, &m), None, None, &a).unwrap();
        let w = workload(1.0);
        let c = capacity(&m, &hw, &Efficiency::defaults(&a), 0.9, &w.buckets[0], &w, &FleetOptions::new("US"));
        assert!(c.rps > 0.0);
        let rho = c.rps * c.ttft_s;
        let mean_ttft = c.ttft_s * (1.0 + rho / (2.0 * (1.0 - rho)));
        assert!(mean_ttft <= w.slo_ttft_s * (1.0 + 1e-9), "{mean_ttft}");
        assert!(c.itl_s <= 0.1 * (1.0 + 1e-9), "{}", c.itl_s);
    }

    fn synthetic(costs: &[f64], caps: &[Vec<f64>]) -> Vec<InstanceType> {
        costs
            .iter()
            .zip(caps)
            .enumerate()
            .map(|(g, (&cost, cap))| InstanceType {
                chip: format!("t{g}"),
                tp: 1,
                usd_per_hour: cost,
                price_basis: String::new(),
                capacity: cap
                    .iter()
                    .map(|&rps| BucketCapacity { rps, batch: 1, ttft_s: 0.0, itl_s: 0.0, limit: None })
                    .collect(),
                tpp: 1.0,
                quota_tpp_per_year: None,
                efficiency_basis: String::new(),
            })
            .collect()
    }

    /// The cheapest integer counts by enumeration, each checked for feasibility by an LP.
    fn brute_force(types: &[InstanceType], loads: &[f64], max: u32) -> f64 {
        let g_n = types.len();
        let mut best = f64::INFINITY;
        let mut counts = vec![0u32; g_n];
        loop {
            let cost: f64 = counts.iter().zip(types).map(|(&n, t)| f64::from(n) * t.usd_per_hour).sum();
            if cost < best {
                let fixed: Vec<InstanceType> = types.to_vec();
                let mut p = lp_for(&fixed, loads);
                for (g, &n) in counts.iter().enumerate() {
                    p.rows.push(Row { coeffs: vec![(g, 1.0)], sense: Sense::Eq, rhs: f64::from(n) });
                }
                if let ilp::LpResult::Optimal { .. } = ilp::solve_lp(&p) {
                    best = cost;
                }
            }
            let mut k = 0;
            loop {
                if k == g_n {
                    return best;
                }
                counts[k] += 1;
                if counts[k] <= max {
                    break;
                }
                counts[k] = 0;
                k += 1;
            }
        }
    }

    fn lp_for(types: &[InstanceType], loads: &[f64]) -> Problem {
        let g_n = types.len();
        let mut pairs = Vec::new();
        for b in 0..loads.len() {
            for (g, t) in types.iter().enumerate() {
                if t.capacity[b].rps > 0.0 {
                    pairs.push((b, g));
                }
            }
        }
        let mut rows = Vec::new();
        for b in 0..loads.len() {
            let coeffs =
                pairs.iter().enumerate().filter(|(_, &(pb, _))| pb == b).map(|(k, _)| (g_n + k, 1.0)).collect();
            rows.push(Row { coeffs, sense: Sense::Eq, rhs: 1.0 });
        }
        for (g, t) in types.iter().enumerate() {
            let mut coeffs: Vec<(usize, f64)> = pairs
                .iter()
                .enumerate()
                .filter(|(_, &(_, pg))| pg == g)
                .map(|(k, &(b, _))| (g_n + k, loads[b] / t.capacity[b].rps))
                .collect();
            coeffs.push((g, -1.0));
            rows.push(Row { coeffs, sense: Sense::Le, rhs: 0.0 });
        }
        Problem { n: g_n + pairs.len(), objective: vec![0.0; g_n + pairs.len()], rows, integers: vec![] }
    }

    #[test]
    fn mixing_types_beats_any_single_type() {
        // Type 0 is cheap for short requests, type 1 for long ones.
        let types = synthetic(&[1.0, 1.0], &[vec![10.0, 1.0], vec![2.0, 5.0]]);
        let s = optimise(&types, &[20.0, 10.0], 10_000).unwrap();
        assert_eq!(s.counts, vec![2, 2]);
        assert!((s.value - 4.0).abs() < 1e-9);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The branch and bound finds the same optimum as enumerating every count vector.
        #[test]
        fn the_integer_program_matches_enumeration(
            costs in proptest::collection::vec(0.5f64..5.0, 2..=3),
            caps in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(0.0), 0.5f64..6.0], 2), 3),
            loads in proptest::collection::vec(0.1f64..6.0, 2),
        ) {
            let g_n = costs.len();
            let caps: Vec<Vec<f64>> = caps.into_iter().take(g_n).collect();
            // Every bucket needs at least one type able to serve it.
            prop_assume!((0..2).all(|b| caps.iter().any(|c| c[b] > 0.0)));
            let types = synthetic(&costs, &caps);
            let s = optimise(&types, &loads, 100_000).unwrap();
            prop_assert!(s.proven_optimal);
            let max = 14;
            let brute = brute_force(&types, &loads, max);
            prop_assume!(brute.is_finite());
            prop_assert!((s.value - brute).abs() < 1e-6 * brute.max(1.0), "ilp {} vs brute {}", s.value, brute);
        }
    }
}
