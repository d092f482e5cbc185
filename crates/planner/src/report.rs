//! What the planner prints: terminal tables, JSON, and a self-contained HTML report with inline
//! SVG plots (cost per token against throughput; the classification map of TPP against performance
//! density with the rule set's thresholds drawn from its data).

use std::fmt::Write;

use serde_json::{json, Value};

use crate::assumptions::Assumptions;
use crate::calibrate::Calibration;
use crate::catalog::{Catalog, Chip};
use crate::fleet::FleetPlan;
use crate::interval::{short, Op, Quantity};
use crate::model::ModelShape;
use crate::perf::{self, default_precisions, Efficiency, Estimate, Hardware};
use crate::rules::{Class, Classification, Condition, Judgement, Metric, RuleBook, RuleSet, NOT_CONTROLLED};
use crate::svg::{self, escape, Axis, Plot, Point, Region, Rule};
use crate::tco::{hourly_cost, token_cost, PricePoint, Pricing, TokenCost};
use crate::PlanError;

/// Left-aligned text columns, right-aligned when every cell below the header looks numeric.
pub fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            rows.iter().all(|r| {
                r.get(i).is_none_or(|c| {
                    let c = c.trim_start_matches(">= ").trim_start_matches(['$', '-', '+']).trim_end_matches('%');
                    c == "-" || c == "?" || c.is_empty() || c.replace(',', "").parse::<f64>().is_ok()
                })
            })
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate().take(cols) {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cols {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    line(&mut out, &width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for r in rows {
        line(&mut out, r);
    }
    out
}

/// A chip's classification, with its verdict for a destination when one was asked for.
#[derive(Clone, Debug)]
pub struct ChipRow<'a> {
    pub chip: &'a Chip,
    pub classification: Classification,
    pub judgement: Option<Judgement>,
}

/// Classifies every chip of the catalog under `set` (and judges it for `region`).
pub fn chip_rows<'a>(
    catalog: &'a Catalog,
    book: &RuleBook,
    set: &RuleSet,
    region: Option<&str>,
) -> Result<Vec<ChipRow<'a>>, PlanError> {
    catalog
        .chips
        .iter()
        .map(|chip| {
            let judgement = region.map(|r| set.judge(chip, &book.countries, r)).transpose()?;
            Ok(ChipRow { chip, classification: set.classify(chip), judgement })
        })
        .collect()
}

fn uses_io(set: &RuleSet) -> bool {
    set.classes
        .iter()
        .flat_map(|c| &c.clauses)
        .flat_map(|c| &c.all)
        .any(|c| matches!(c, Condition::Metric { metric: Metric::IoBandwidth, .. }))
}

/// The chips table under one rule set.
pub fn chips_text(rows: &[ChipRow<'_>], set: &RuleSet) -> String {
    let io = uses_io(set);
    let region = rows.first().and_then(|r| r.judgement.as_ref()).map(|j| format!("{} ({})", j.region, j.region_name));
    let mut header = vec!["chip", "TPP", "PD"];
    if io {
        header.push("I/O GB/s");
    }
    header.extend(["class", "why"]);
    if region.is_some() {
        header.push("destination");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.classification.metrics;
            let mut cells = vec![r.chip.id.clone(), m.tpp.to_string(), m.performance_density.to_string()];
            if io {
                cells.push(m.io_bandwidth.to_string());
            }
            cells.push(r.classification.class.label().to_string());
            cells.push(r.classification.class.detail());
            if let Some(j) = &r.judgement {
                cells.push(j.verdict.label());
            }
            cells
        })
        .collect();
    let mut out = format!("Rule set {}: {}\n", set.id, set.citation);
    if let Some(r) = region {
        let _ = writeln!(out, "Destination: {r}");
    }
    out.push_str("TPP = 2 x MacTOPS x bit length per IC (dense, max over precisions); PD = TPP / die area (mm2)\n\n");
    out.push_str(&text_table(&header, &table));
    for item in &set.memory_items {
        let with: Vec<&str> = rows
            .iter()
            .filter(|r| r.classification.memory.iter().any(|m| m.starts_with(&item.id)))
            .map(|r| r.chip.id.as_str())
            .collect();
        if !with.is_empty() {
            let _ = writeln!(
                out,
                "\n{} ({}): {}. Chips with HBM: {}.",
                item.id,
                item.cite,
                item.co_packaged,
                with.join(", ")
            );
        }
    }
    out
}

fn range_json(q: &Quantity) -> Value {
    json!([q.lo, if q.hi.is_finite() { json!(q.hi) } else { Value::Null }])
}

/// The chips as a JSON array (`chip`, `tpp`, `performance_density`, `class`, ...).
pub fn chips_json(rows: &[ChipRow<'_>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                let c = &r.classification;
                let m = &c.metrics;
                let mut v = json!({
                    "chip": r.chip.id,
                    "name": r.chip.name,
                    "vendor": r.chip.vendor,
                    "rule_set": c.rule_set,
                    "tpp": m.tpp.value(),
                    "tpp_range": range_json(&m.tpp),
                    "performance_density": m.performance_density.value(),
                    "performance_density_range": range_json(&m.performance_density),
                    "io_bandwidth_gbs": m.io_bandwidth.value(),
                    "class": c.class.label(),
                    "detail": c.class.detail(),
                });
                match &c.class {
                    Class::Controlled { clause, systems, cite, .. } => {
                        v["clause"] = json!(clause);
                        v["systems_eccn"] = json!(systems);
                        v["cite"] = json!(cite);
                    }
                    Class::NotControlled { exemption } => v["exemption"] = json!(exemption),
                    Class::Unknown { candidates, missing } => {
                        v["missing"] = json!(missing);
                        v["candidates"] = json!(candidates);
                    }
                }
                let mut missing: Vec<String> = m.tpp.missing.clone();
                for f in &m.performance_density.missing {
                    if !missing.contains(f) {
                        missing.push(f.clone());
                    }
                }
                v["unknown_figures"] = json!(missing);
                if !c.memory.is_empty() {
                    v["memory"] = json!(c.memory);
                }
                if let Some(j) = &r.judgement {
                    v["destination"] = json!({
                        "region": j.region,
                        "verdict": j.verdict.label(),
                        "detail": j.verdict,
                        "findings": j.findings,
                        "notes": j.notes,
                    });
                }
                v
            })
            .collect(),
    )
}

/// The rule sets, one line each with citation and summary.
pub fn rules_text(book: &RuleBook) -> String {
    let rows: Vec<Vec<String>> = book
        .sets
        .iter()
        .map(|s| {
            let classes: Vec<&str> = s.classes.iter().map(|c| c.id.as_str()).collect();
            let mut classes = classes.join(", ");
            for m in &s.memory_items {
                classes.push_str(&format!(", {}", m.id));
            }
            vec![s.id.clone(), s.effective.clone(), short_citation(&s.citation), classes]
        })
        .collect();
    let mut out = text_table(&["id", "effective", "citation", "classes"], &rows);
    for s in &book.sets {
        let _ = write!(out, "\n{} — {}\n  {}\n  {}\n", s.id, s.title, s.citation, s.summary);
        for c in &s.classes {
            for cl in &c.clauses {
                let conds: Vec<String> = cl.all.iter().map(ToString::to_string).collect();
                let _ = writeln!(out, "  {}: {}", cl.id, conds.join(" and "));
            }
        }
        for e in &s.exemptions {
            let conds: Vec<String> = e.all.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  {} (exempt): {}", e.id, conds.join(" and "));
        }
        for l in &s.licenses {
            let what = if l.chips.is_empty() { l.classes.join(", ") } else { l.chips.join(", ") };
            let _ =
                writeln!(out, "  {:?} for {what} to {}: {}", l.requirement, destinations_text(&l.destinations), l.cite);
        }
    }
    out
}

/// A Federal Register citation up to its date (`88 FR 73458 (Oct. 25, 2023)`), else the citation's
/// first clause (`BIS press release`).
fn short_citation(c: &str) -> String {
    match c.find(')') {
        Some(i) if c[..i].contains(" FR ") => c[..=i].to_string(),
        _ => c.split(',').next().unwrap_or(c).to_string(),
    }
}

fn destinations_text(d: &crate::rules::Destinations) -> String {
    let mut parts = Vec::new();
    if d.all {
        parts.push("all destinations".to_string());
    }
    if !d.groups.is_empty() {
        parts.push(d.groups.join(", "));
    }
    if !d.countries.is_empty() {
        parts.push(d.countries.join(", "));
    }
    let mut s = parts.join(" + ");
    let except: Vec<String> = d.except_groups.iter().chain(&d.except_countries).cloned().collect();
    if !except.is_empty() {
        s.push_str(&format!(" except {}", except.join(", ")));
    }
    s
}

/// The rule sets as JSON.
pub fn rules_json(book: &RuleBook) -> Value {
    json!(book.sets)
}

fn bound_name(b: crate::perf::Bound) -> &'static str {
    match b {
        crate::perf::Bound::Compute => "compute",
        crate::perf::Bound::Memory => "memory",
    }
}

/// An estimate and its cost, for the terminal.
pub fn estimate_text(e: &Estimate, cost: &Result<TokenCost, PlanError>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {} on {} x{} ({} matmuls, {} attention)",
        e.model, e.chip, e.tp, e.linear_precision, e.attention_precision
    );
    let _ = writeln!(
        s,
        "memory: weights {:.2} GB + KV cache {:.2} GB (batch {} x {} tokens) of {:.1} GB: {}",
        e.weights_gb,
        e.kv_cache_gb,
        e.batch,
        e.context,
        e.memory_gb,
        if e.fits { "fits" } else { "DOES NOT FIT" }
    );
    let _ = writeln!(
        s,
        "prefill: {:.1} tokens/s for a {}-token prompt (TTFT {:.1} ms, {}-bound)",
        e.prefill_tokens_per_s,
        e.context,
        e.ttft_s * 1e3,
        bound_name(e.prefill.bound)
    );
    let _ = writeln!(
        s,
        "decode:  {:.1} tokens/s at batch {} ({:.1} per sequence, ITL {:.2} ms, {}-bound)",
        e.decode_tokens_per_s,
        e.batch,
        e.decode_tokens_per_s_per_seq,
        e.itl_s * 1e3,
        bound_name(e.decode.bound)
    );
    let _ = writeln!(
        s,
        "efficiency: compute {:.4} at {} rows ({:.4} with {:.2} rows for half), memory {:.3}, {:.1} us per layer per step, half compute at width {:.0} in multi-row steps ({})",
        e.decode_compute_fraction,
        e.batch,
        e.efficiency.compute,
        e.efficiency.rows_half,
        e.efficiency.memory,
        e.efficiency.layer_overhead_s * 1e6,
        e.efficiency.width_half,
        e.efficiency.basis
    );
    match cost {
        Ok(c) => {
            let _ = writeln!(
                s,
                "cost: ${:.4} per million input tokens, ${:.4} per million output tokens (${:.3}/h per instance, utilisation {})",
                c.usd_per_mtok_input, c.usd_per_mtok_output, c.instance_usd_per_hour, c.utilisation
            );
            let _ = writeln!(
                s,
                "      per device-hour: capex ${:.3} + energy ${:.3} + hosting ${:.3} + rental ${:.3}; {}",
                c.hourly.capex_per_hour,
                c.hourly.energy_per_hour,
                c.hourly.hosting_per_hour,
                c.hourly.rental_per_hour,
                c.hourly.basis
            );
        }
        Err(err) => {
            let _ = writeln!(s, "cost: unknown ({err})");
        }
    }
    s
}

/// Predicted against measured, leave-one-model-out and in-sample.
pub fn calibration_text(c: &Calibration) -> String {
    let rows = |list: &[crate::calibrate::Comparison]| -> Vec<Vec<String>> {
        list.iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.test.clone(),
                    r.n_threads.to_string(),
                    format!("{:.2}", r.measured_ts),
                    format!("{:.2} ± {:.2}", r.mean_ts, r.stddev_ts),
                    format!("{:.2}", r.predicted_ts),
                    format!("{:+.1}%", r.error_pct),
                    bound_name(r.bound).to_string(),
                    r.fitted_on.len().to_string(),
                ]
            })
            .collect()
    };
    let measured = match c.statistic {
        crate::profile::Statistic::Best => "measured t/s (best)",
        crate::profile::Statistic::Mean => "measured t/s (mean)",
    };
    let header = ["model", "test", "threads", measured, "mean ± sd", "predicted t/s", "error", "bound", "fit on"];
    let mut s = format!("Calibration on {}\n", c.chip);
    let _ = writeln!(
        s,
        "fitted on all profiles: compute efficiency {:.4} (half of it at {:.2} rows per step), memory efficiency {:.2}, {:.1} us per layer per step, half compute at width {:.0} in multi-row steps",
        c.efficiency.compute,
        c.efficiency.rows_half,
        c.efficiency.memory,
        c.efficiency.layer_overhead_s * 1e6,
        c.efficiency.width_half
    );
    if !c.leave_one_out.is_empty() {
        let _ = writeln!(s, "\nleave one model out (fit on the other models, predict this one):");
        s.push_str(&text_table(&header, &rows(&c.leave_one_out)));
        if let Some(m) = c.max_abs_loo_error_pct() {
            let _ = writeln!(s, "largest leave-one-out error: {m:.1}%");
        }
    }
    let _ = writeln!(s, "\nin sample (fit on every model):");
    s.push_str(&text_table(&header, &rows(&c.in_sample)));
    s
}

/// The fleet plan for the terminal.
pub fn fleet_text(p: &FleetPlan) -> String {
    let mut s = format!("Fleet for {} in {} under {}\n", p.model, p.region, p.rule_set);
    let w = &p.workload;
    let _ = writeln!(
        s,
        "workload: {} requests/s, TTFT target {:.0} ms (mean), ITL target {}",
        short(w.rate_rps),
        w.slo_ttft_s * 1e3,
        w.slo_itl_s.map_or("none".to_string(), |v| format!("{:.0} ms", v * 1e3))
    );
    for b in &w.buckets {
        let _ = writeln!(
            s,
            "  {:>5.1}% of requests: {} input, {} output tokens",
            b.share * 100.0,
            b.input_tokens,
            b.output_tokens
        );
    }
    let rows: Vec<Vec<String>> = p
        .lines
        .iter()
        .map(|l| {
            vec![
                l.chip.clone(),
                l.tp.to_string(),
                l.instances.to_string(),
                l.chips.to_string(),
                format!("{:.2}", l.usd_per_hour),
                format!("{:.0}%", l.load * 100.0),
                l.bucket_shares.iter().map(|x| format!("{:.0}%", x * 100.0)).collect::<Vec<_>>().join("/"),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&text_table(&["chip", "tp", "instances", "chips", "$/hour", "load", "share of each bucket"], &rows));
    let _ = writeln!(
        s,
        "total ${:.2}/hour, ${:.4} per million tokens (input + output), ${:.6} per request; {}",
        p.usd_per_hour,
        p.usd_per_million_tokens,
        p.usd_per_request,
        if p.proven_optimal {
            format!("optimal (integer program, {} nodes)", p.nodes)
        } else {
            "best found, not proven optimal".into()
        }
    );
    s.push_str("\nexcluded:\n");
    for e in &p.excluded {
        let _ = writeln!(s, "  {:<18} [{}] {}", e.chip, e.stage, e.reason);
    }
    for n in &p.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// Throughput and cost of a model on one chip (the smallest tensor-parallel group it fits in).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Economics {
    pub chip: String,
    pub tp: u32,
    pub estimate: Option<Estimate>,
    pub decode_tokens_per_s_per_chip: Option<f64>,
    pub prefill_tokens_per_s_per_chip: Option<f64>,
    pub usd_per_mtok_input: Option<f64>,
    pub usd_per_mtok_output: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The economics of `model` on every chip, at `batch` sequences of `context` tokens.
#[allow(clippy::too_many_arguments)]
pub fn economics(
    catalog: &Catalog,
    model: &ModelShape,
    a: &Assumptions,
    batch: u32,
    context: u32,
    pricing: Pricing,
    point: PricePoint,
    calibrated: &[(String, Efficiency)],
) -> Vec<Economics> {
    catalog
        .chips
        .iter()
        .map(|chip| {
            let eff = calibrated
                .iter()
                .find(|(id, _)| id == &chip.id)
                .map_or_else(|| Efficiency::defaults(a), |(_, e)| e.clone());
            let empty = |tp: u32, note: String| Economics {
                chip: chip.id.clone(),
                tp,
                estimate: None,
                decode_tokens_per_s_per_chip: None,
                prefill_tokens_per_s_per_chip: None,
                usd_per_mtok_input: None,
                usd_per_mtok_output: None,
                note: Some(note),
            };
            let mut last_err = String::new();
            for tp in [1u32, 2, 4, 8] {
                let hw = match Hardware::new(chip, tp, default_precisions(chip, model), None, None, a) {
                    Ok(hw) => hw,
                    Err(e) => {
                        last_err =
                            if last_err.is_empty() { e.to_string() } else { format!("{last_err}; tp {tp}: {e}") };
                        return empty(tp, last_err);
                    }
                };
                if !perf::fits(model, &hw, a.usable_memory_fraction.value, batch, context) {
                    last_err = format!("does not fit in {tp} x {:.0} GB", hw.memory_bytes / 1e9 / f64::from(tp));
                    continue;
                }
                let est = match perf::estimate(model, &hw, &eff, a.usable_memory_fraction.value, batch, context, 512) {
                    Ok(e) => e,
                    Err(e) => return empty(tp, e.to_string()),
                };
                let cost = hourly_cost(chip, a, pricing, point).map(|h| {
                    token_cost(&h, tp, est.prefill_tokens_per_s, est.decode_tokens_per_s, a.utilisation.value)
                });
                let note = cost.as_ref().err().map(ToString::to_string);
                return Economics {
                    chip: chip.id.clone(),
                    tp,
                    decode_tokens_per_s_per_chip: Some(est.decode_tokens_per_s / f64::from(tp)),
                    prefill_tokens_per_s_per_chip: Some(est.prefill_tokens_per_s / f64::from(tp)),
                    usd_per_mtok_input: cost.as_ref().ok().map(|c| c.usd_per_mtok_input),
                    usd_per_mtok_output: cost.as_ref().ok().map(|c| c.usd_per_mtok_output),
                    estimate: Some(est),
                    note,
                };
            }
            empty(8, last_err)
        })
        .collect()
}

/// `2026-11-23 17:05 UTC` for seconds since the Unix epoch (proleptic Gregorian calendar).
pub fn utc_date(unix_seconds: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix_seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = unix_seconds % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Everything the HTML report shows.
pub struct ReportInput<'a> {
    pub title: &'a str,
    /// When the report was made (the caller's clock; the library reads none).
    pub generated: &'a str,
    pub catalog: &'a Catalog,
    pub book: &'a RuleBook,
    pub rule_set: &'a RuleSet,
    pub region: Option<&'a str>,
    pub model: &'a ModelShape,
    pub batch: u32,
    pub context: u32,
    pub economics: &'a [Economics],
    pub fleet: Option<&'a FleetPlan>,
    pub calibration: Option<&'a Calibration>,
    pub assumptions: &'a Assumptions,
}

fn class_color(label: &str) -> &'static str {
    match label {
        "3A090.a" => "#c62828",
        "3A090.b" => "#ef6c00",
        NOT_CONTROLLED => "#2e7d32",
        _ => "#757575",
    }
}

fn html_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// Axis-aligned boxes of a class's clauses in the TPP x PD plane (other conditions noted).
fn clause_regions(set: &RuleSet) -> (Vec<Region>, Vec<Rule>) {
    let mut regions = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    for class in set.classes.iter().rev() {
        for clause in &class.clauses {
            let (mut x0, mut x1, mut y0, mut y1) = (0.0f64, f64::INFINITY, 0.0f64, f64::INFINITY);
            let mut extra = Vec::new();
            for c in &clause.all {
                match c {
                    Condition::Metric { metric: Metric::Tpp, op, value } => {
                        match op {
                            Op::Ge | Op::Gt => x0 = x0.max(*value),
                            Op::Lt | Op::Le => x1 = x1.min(*value),
                        }
                        if !rules.iter().any(|r| r.vertical && r.at == *value) {
                            rules.push(Rule { vertical: true, at: *value, label: format!("TPP {}", short(*value)) });
                        }
                    }
                    Condition::Metric { metric: Metric::PerformanceDensity, op, value } => {
                        match op {
                            Op::Ge | Op::Gt => y0 = y0.max(*value),
                            Op::Lt | Op::Le => y1 = y1.min(*value),
                        }
                        if !rules.iter().any(|r| !r.vertical && r.at == *value) {
                            rules.push(Rule { vertical: false, at: *value, label: format!("PD {}", short(*value)) });
                        }
                    }
                    other => extra.push(other.to_string()),
                }
            }
            let mut label = clause.id.clone();
            if !extra.is_empty() {
                label.push_str(&format!(" (and {})", extra.join(", ")));
            }
            regions.push(Region { x0, x1, y0, y1, color: class_color(&class.id), label, dashed: !extra.is_empty() });
        }
    }
    (regions, rules)
}

/// The classification map: TPP against performance density, with the rule set's regions.
pub fn classification_svg(rows: &[ChipRow<'_>], set: &RuleSet) -> String {
    let (regions, rules) = clause_regions(set);
    let mut points = Vec::new();
    let mut strip = Vec::new();
    for r in rows {
        let m = &r.classification.metrics;
        let label = r.classification.class.label();
        let tpp_open = !m.tpp.is_exact();
        let title = format!(
            "{}: TPP {}, PD {}, {} ({})",
            r.chip.name,
            m.tpp,
            m.performance_density,
            label,
            r.classification.class.detail()
        );
        let p = |y: f64| Point {
            x: m.tpp.lo.max(1.0),
            y,
            label: format!("{}{}", r.chip.id, if tpp_open { " (TPP >=)" } else { "" }),
            color: class_color(label),
            title: title.clone(),
            open: tpp_open,
        };
        // A known die area places the chip even when TPP is a lower bound (hollow marker at the bound).
        let pd = &m.performance_density;
        if pd.lo > 0.0 && pd.lo.is_finite() {
            points.push(p(pd.lo.max(0.011)));
        } else {
            strip.push(p(0.0));
        }
    }
    svg::scatter(&Plot {
        id: "classification-map",
        title: &format!(
            "Classification under {} ({}): TPP vs performance density",
            set.id,
            short_citation(&set.citation)
        ),
        x: Axis { label: "TPP per IC (2 x MacTOPS x bit length, dense)".into(), min: 1.0, max: 100_000.0 },
        y: Axis { label: "performance density (TPP / mm2)".into(), min: 0.01, max: 100.0 },
        regions: &regions,
        rules: &rules,
        points: &points,
        strip: Some(("PD unknown", &strip)),
        legend: &[
            (class_color("3A090.a"), "3A090.a"),
            (class_color("3A090.b"), "3A090.b"),
            (class_color(NOT_CONTROLLED), NOT_CONTROLLED),
            (class_color("unknown"), "unknown (a figure is missing)"),
        ],
    })
}

/// Cost per million output tokens against decode throughput per chip.
pub fn economics_svg(econ: &[Economics], model: &ModelShape, batch: u32, context: u32) -> String {
    let points: Vec<Point> = econ
        .iter()
        .filter_map(|e| {
            let (x, y) = (e.decode_tokens_per_s_per_chip?, e.usd_per_mtok_output?);
            Some(Point {
                x,
                y,
                label: if e.tp > 1 { format!("{} (tp {})", e.chip, e.tp) } else { e.chip.clone() },
                color: "#1565c0",
                title: format!("{}: {:.1} tok/s per chip, ${:.4}/Mtok output", e.chip, x, y),
                open: false,
            })
        })
        .collect();
    let bounds = |f: &dyn Fn(&Point) -> f64, lo: f64, hi: f64| {
        let min = points.iter().map(f).fold(f64::INFINITY, f64::min);
        let max = points.iter().map(f).fold(0.0, f64::max);
        if points.is_empty() {
            (lo, hi)
        } else {
            (10f64.powf((min * 0.8).log10().floor()), 10f64.powf((max * 1.25).log10().ceil()))
        }
    };
    let (x0, x1) = bounds(&|p: &Point| p.x, 1.0, 1e4);
    let (y0, y1) = bounds(&|p: &Point| p.y, 0.01, 100.0);
    svg::scatter(&Plot {
        id: "cost-vs-throughput",
        title: &format!(
            "{}: $ per million output tokens vs decode tokens/s per chip (batch {batch}, context {context})",
            model.name
        ),
        x: Axis { label: "decode tokens/s per chip".into(), min: x0, max: x1 },
        y: Axis { label: "$ per million output tokens".into(), min: y0, max: y1 },
        regions: &[],
        rules: &[],
        points: &points,
        strip: None,
        legend: &[],
    })
}

/// The self-contained HTML report.
pub fn html(input: &ReportInput<'_>) -> Result<String, PlanError> {
    let set = input.rule_set;
    let rows = chip_rows(input.catalog, input.book, set, input.region)?;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}}h1{{font-size:22px}}h2{{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}}\
         table{{border-collapse:collapse;font-size:12px;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}th{{background:#f0f0f0}}\
         .note{{color:#555;font-size:12px}}svg{{max-width:100%;height:auto;border:1px solid #eee}}</style></head><body>",
        escape(input.title)
    );
    let _ = write!(s, "<h1>{}</h1>", escape(input.title));
    let _ = write!(
        s,
        "<p class=\"note\">Generated {} by <code>tessera plan report</code> from the catalog ({}) and rule set {} ({}). \
         Model {} ({} parameters, {} bits/weight). Every figure below is cited in the catalog; unknown figures stay unknown.</p>",
        escape(input.generated),
        escape(&input.catalog.origin),
        escape(&set.id),
        escape(&set.citation),
        escape(&input.model.name),
        short(input.model.n_params),
        short(input.model.bits_per_weight)
    );
    // Classification under every rule set.
    s.push_str("<h2 id=\"classification\">Export-control classification</h2>");
    let mut header: Vec<String> = vec!["chip".into(), "TPP per IC".into(), "PD".into(), "I/O GB/s".into()];
    header.extend(input.book.sets.iter().map(|r| r.id.clone()));
    if let Some(r) = input.region {
        header.push(format!("{} in {}", set.id, r.to_uppercase()));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.classification.metrics;
            let mut cells = vec![
                r.chip.id.clone(),
                m.tpp.to_string(),
                m.performance_density.to_string(),
                m.io_bandwidth.to_string(),
            ];
            for other in &input.book.sets {
                let c = other.classify(r.chip);
                cells.push(match &c.class {
                    Class::Unknown { missing, .. } => format!("unknown (needs {})", missing.join(", ")),
                    k => k.label().to_string(),
                });
            }
            if let Some(j) = &r.judgement {
                cells.push(j.verdict.label());
            }
            cells
        })
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    s.push_str(&html_table(&header_refs, &table));
    s.push_str(&classification_svg(&rows, set));
    let _ = write!(
        s,
        "<p class=\"note\">Shaded boxes are the clauses of {} drawn from its data; dashed boxes have conditions the plane cannot show. \
         Hollow markers have a TPP lower bound (a precision's throughput is unpublished); chips under the plot have no published die area.</p>",
        escape(&set.id)
    );
    // Economics.
    let _ = write!(s, "<h2 id=\"economics\">Throughput and cost: {}</h2>", escape(&input.model.name));
    s.push_str(&economics_svg(input.economics, input.model, input.batch, input.context));
    let econ_rows: Vec<Vec<String>> = input
        .economics
        .iter()
        .map(|e| {
            let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
            vec![
                e.chip.clone(),
                e.tp.to_string(),
                f(e.prefill_tokens_per_s_per_chip, 1),
                f(e.decode_tokens_per_s_per_chip, 1),
                f(e.usd_per_mtok_input, 4),
                f(e.usd_per_mtok_output, 4),
                e.estimate.as_ref().map_or(String::new(), |x| x.efficiency.basis.clone()),
                e.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s.push_str(&html_table(
        &["chip", "tp", "prefill tok/s/chip", "decode tok/s/chip", "$/Mtok in", "$/Mtok out", "efficiency", "note"],
        &econ_rows,
    ));
    if let Some(f) = input.fleet {
        s.push_str("<h2 id=\"fleet\">Fleet plan</h2><pre>");
        s.push_str(&escape(&fleet_text(f)));
        s.push_str("</pre>");
    }
    if let Some(c) = input.calibration {
        s.push_str("<h2 id=\"calibration\">Predicted vs measured</h2><pre>");
        s.push_str(&escape(&calibration_text(c)));
        s.push_str("</pre>");
    }
    s.push_str("<h2 id=\"assumptions\">Assumptions</h2>");
    let arows: Vec<Vec<String>> = input
        .assumptions
        .entries()
        .iter()
        .map(|(n, a)| {
            vec![
                n.to_string(),
                short(a.value),
                a.flag.clone(),
                if a.overridden { "set by flag".into() } else { a.source.clone() },
            ]
        })
        .collect();
    s.push_str(&html_table(&["assumption", "value", "flag", "source"], &arows));
    s.push_str("<h2 id=\"rules\">Rule sets</h2>");
    let rrows: Vec<Vec<String>> = input
        .book
        .sets
        .iter()
        .map(|r| vec![r.id.clone(), r.effective.clone(), r.citation.clone(), r.summary.clone()])
        .collect();
    s.push_str(&html_table(&["id", "effective", "citation", "summary"], &rrows));
    s.push_str("<h2 id=\"sources\">Catalog sources</h2>");
    let srows: Vec<Vec<String>> = input
        .catalog
        .sources
        .iter()
        .map(|(id, src)| {
            vec![
                id.clone(),
                format!("{:?}", src.kind).to_lowercase(),
                src.title.clone(),
                src.date.clone().unwrap_or_default(),
                src.url.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s.push_str(&html_table(&["id", "kind", "title", "date", "url"], &srows));
    s.push_str("</body></html>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NamedModels;

    #[test]
    fn dates_convert() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_795_453_200), "2026-11-23 17:00 UTC");
    }

    #[test]
    fn tables_align_numbers_right() {
        let t = text_table(&["chip", "TPP"], &[vec!["h100".into(), "15830".into()], vec!["h20".into(), "2368".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "h100  15830");
        assert_eq!(lines[3], "h20    2368");
    }

    #[test]
    fn chips_json_has_the_promised_fields() {
        let cat = Catalog::builtin().unwrap();
        let book = RuleBook::builtin().unwrap();
        let set = book.set("us-2023-10").unwrap();
        let rows = chip_rows(&cat, &book, set, Some("CN")).unwrap();
        let v = chips_json(&rows);
        let h100 = v.as_array().unwrap().iter().find(|c| c["chip"] == "h100-sxm").unwrap();
        assert_eq!(h100["class"], "3A090.a");
        assert!(h100["tpp"].as_f64().unwrap() > 15_800.0);
        assert!(h100["performance_density"].as_f64().is_some());
        assert_eq!(h100["destination"]["verdict"], "license required");
        let inf2 = v.as_array().unwrap().iter().find(|c| c["chip"] == "inferentia2").unwrap();
        assert_eq!(inf2["class"], "unknown");
        assert_eq!(inf2["performance_density"], Value::Null);
        assert_eq!(inf2["missing"], json!(["die_area_mm2"]));
    }

    #[test]
    fn the_html_report_is_self_contained() {
        let cat = Catalog::builtin().unwrap();
        let book = RuleBook::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let m = NamedModels::builtin().unwrap().get("llama-3.1-8b").unwrap().clone();
        let econ = economics(&cat, &m, &a, 32, 2048, Pricing::Auto, PricePoint::Mid, &[]);
        let html = html(&ReportInput {
            title: "t",
            generated: "2026-11-23",
            catalog: &cat,
            book: &book,
            rule_set: book.set("us-2023-10").unwrap(),
            region: Some("CN"),
            model: &m,
            batch: 32,
            context: 2048,
            economics: &econ,
            fleet: None,
            calibration: None,
            assumptions: &a,
        })
        .unwrap();
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("id=\"classification-map\"") && html.contains("id=\"cost-vs-throughput\""));
        assert!(!html.contains("<script") && !html.contains("http-equiv"), "no scripts");
        assert!(html.contains("3A090.a.2"), "thresholds come from the rule data");
        let h100 = econ.iter().find(|e| e.chip == "h100-sxm").unwrap();
        assert!(h100.usd_per_mtok_output.unwrap() > 0.0);
        let qaic = econ.iter().find(|e| e.chip == "qaic-standard").unwrap();
        assert!(qaic.note.as_deref().unwrap_or("").contains("price_usd"), "{:?}", qaic.note);
    }
}
