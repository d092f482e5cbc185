//! Fitting the performance model's efficiency factors to measured `tessera bench` profiles, and
//! testing the fit honestly: leave one model out, fit on the others, predict it.
//!
//! Four factors are fitted by least squares on log tokens/s (Nelder-Mead over their logarithms):
//! the compute fraction with many rows per step (prompt processing), the rows at which half of it
//! is reached (a one-token decode step reuses each weight block once), the fixed cost per
//! layer per step, and the hidden width at which multi-row steps reach half of their compute
//! fraction (narrow models prefill at a lower fraction of peak than wide ones). Memory efficiency is not fitted: against a *measured* read bandwidth (a
//! profile's `mem_read` record, `--mem-bw`, or a catalog figure whose source is a measurement) it
//! is 1, since the measurement is what streaming reads achieve; against a datasheet peak it is the
//! cited default. A prediction for a model none of whose records took part in the fit says how
//! well the model transfers across sizes.

use serde::Serialize;

use crate::assumptions::Assumptions;
use crate::catalog::{Catalog, Chip, ChipKind, SourceKind, Spec};
use crate::perf::{self, default_precisions, Bound, Efficiency, Hardware};
use crate::profile::{BenchRecord, Profile, Statistic};
use crate::PlanError;

/// The hardware a record ran on: the chip at the record's thread count, with the profile's
/// measured bandwidth for that thread count when there is one (or `memory_bandwidth_gbs`).
pub fn hardware_for(
    chip: &Chip,
    record: &BenchRecord,
    profile: &Profile,
    memory_bandwidth_gbs: Option<f64>,
    a: &Assumptions,
) -> Result<Hardware, PlanError> {
    let backend_kind = match record.backend.as_str() {
        "cpu" => Some(ChipKind::Cpu),
        "cuda" | "rocm" | "hip" | "metal" | "vulkan" | "wgpu" => None,
        other => {
            return Err(PlanError::Invalid(format!(
                "profile record of {}: backend {other:?} is not known",
                record.model_file
            )))
        }
    };
    match (backend_kind, chip.kind) {
        (Some(ChipKind::Cpu), ChipKind::Cpu) | (None, ChipKind::Gpu | ChipKind::Accelerator) => {}
        _ => {
            return Err(PlanError::Invalid(format!(
                "a profile measured on backend {:?} cannot calibrate {} (a {:?})",
                record.backend, chip.id, chip.kind
            )))
        }
    }
    let bandwidth = memory_bandwidth_gbs.or_else(|| profile.memory_bandwidth(record.n_threads));
    Hardware::new(chip, 1, default_precisions(chip, &record.model), Some(record.n_threads), bandwidth, a)
}

/// Predicted tokens/s for a record's test, and the roof its (middle) step hit.
pub fn predict(record: &BenchRecord, hw: &Hardware, eff: &Efficiency) -> (f64, Bound) {
    let m = &record.model;
    let mut seconds = 0.0;
    let mut bound = Bound::Memory;
    if record.n_prompt > 0 {
        let pf = perf::prefill(m, hw, eff, record.n_prompt, record.n_depth, record.n_ubatch);
        seconds += pf.seconds;
        bound = pf.bound;
    }
    if record.n_gen > 0 {
        let depth = record.n_depth + record.n_prompt;
        seconds += perf::generate(m, hw, eff, record.n_gen, depth);
        if record.n_prompt == 0 {
            bound = perf::decode_step(m, hw, eff, 1, f64::from(depth + record.n_gen / 2 + 1)).bound;
        }
    }
    (f64::from(record.n_prompt + record.n_gen) / seconds, bound)
}

/// One record compared with the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub model: String,
    pub model_file: String,
    pub test: String,
    pub n_threads: u32,
    /// The measurement compared (see `statistic`).
    pub measured_ts: f64,
    /// llama-bench's mean and standard deviation, for reference.
    pub mean_ts: f64,
    pub stddev_ts: f64,
    pub predicted_ts: f64,
    /// (predicted - measured) / measured, percent.
    pub error_pct: f64,
    pub bound: Bound,
    /// Models whose records the factors were fitted on.
    pub fitted_on: Vec<String>,
    pub efficiency: Efficiency,
}

/// A calibration: the factors fitted on every record, and the leave-one-model-out check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    pub chip: String,
    /// Which summary of the repetitions was fitted and compared.
    pub statistic: Statistic,
    /// Fitted on all records; what estimates for this chip use.
    pub efficiency: Efficiency,
    /// Every record against the all-record fit.
    pub in_sample: Vec<Comparison>,
    /// Every record predicted by a fit that did not see its model (empty with one model).
    pub leave_one_out: Vec<Comparison>,
}

impl Calibration {
    /// The largest leave-one-out error, percent (None without a leave-one-out check).
    pub fn max_abs_loo_error_pct(&self) -> Option<f64> {
        self.leave_one_out.iter().map(|c| c.error_pct.abs()).reduce(f64::max)
    }
}

/// Memory efficiency against the bandwidth a record is modelled with: 1 for a measured figure.
fn memory_efficiency(
    catalog: &Catalog,
    chip: &Chip,
    record: &BenchRecord,
    profile: &Profile,
    supplied: bool,
    a: &Assumptions,
) -> f64 {
    let catalog_measured = match &chip.memory_bandwidth_gbs {
        Spec::Known { source, .. } => catalog.source(source).is_some_and(|s| s.kind == SourceKind::Measured),
        _ => false,
    };
    if supplied || profile.memory_bandwidth(record.n_threads).is_some() || catalog_measured {
        1.0
    } else {
        a.eff_memory.value
    }
}

/// Fits the efficiency factors of catalog chip `chip_id` to the records of `profile`.
pub fn calibrate(
    catalog: &Catalog,
    chip_id: &str,
    profile: &Profile,
    memory_bandwidth_gbs: Option<f64>,
    a: &Assumptions,
    statistic: Statistic,
) -> Result<Calibration, PlanError> {
    let chip = catalog.chip(chip_id)?;
    if profile.records.is_empty() {
        return Err(PlanError::Invalid("the profiles hold no benchmark records to calibrate on".into()));
    }
    let hws: Vec<Hardware> = profile
        .records
        .iter()
        .map(|r| hardware_for(chip, r, profile, memory_bandwidth_gbs, a))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(&BenchRecord, &Hardware)> = profile.records.iter().zip(&hws).collect();
    let models = profile.models();
    // One memory efficiency for the chip: the records share a machine.
    let memory = profile
        .records
        .iter()
        .map(|r| memory_efficiency(catalog, chip, r, profile, memory_bandwidth_gbs.is_some(), a))
        .fold(1.0, f64::min);
    let fit = |set: &[(&BenchRecord, &Hardware)], fitted_on: &[String]| fit(set, fitted_on, statistic, memory);
    let all = fit(&pairs, &models);
    let compare = |set: &[(&BenchRecord, &Hardware)], eff: &Efficiency, fitted_on: &[String]| -> Vec<Comparison> {
        set.iter()
            .map(|(r, hw)| {
                let (predicted, bound) = predict(r, hw, eff);
                let measured = r.measured(statistic);
                Comparison {
                    model: r.model_type.clone(),
                    model_file: r.model_file.clone(),
                    test: r.test(),
                    n_threads: r.n_threads,
                    measured_ts: measured,
                    mean_ts: r.avg_ts,
                    stddev_ts: r.stddev_ts,
                    predicted_ts: predicted,
                    error_pct: (predicted - measured) / measured * 100.0,
                    bound,
                    fitted_on: fitted_on.to_vec(),
                    efficiency: eff.clone(),
                }
            })
            .collect()
    };
    let in_sample = compare(&pairs, &all, &models);
    let mut leave_one_out = Vec::new();
    if models.len() >= 2 {
        for held_out in &models {
            let train: Vec<(&BenchRecord, &Hardware)> =
                pairs.iter().filter(|(r, _)| &r.model_file != held_out).copied().collect();
            let test: Vec<(&BenchRecord, &Hardware)> =
                pairs.iter().filter(|(r, _)| &r.model_file == held_out).copied().collect();
            let others: Vec<String> = models.iter().filter(|m| *m != held_out).cloned().collect();
            let eff = fit(&train, &others);
            leave_one_out.extend(compare(&test, &eff, &others));
        }
    }
    Ok(Calibration { chip: chip.id.clone(), statistic, efficiency: all, in_sample, leave_one_out })
}

/// Bounds on the log-parameters (compute fraction, rows for half of it, seconds per layer), so a
/// flat direction cannot run off to infinity.
const LOG_BOUNDS: [(f64, f64); DIMS] = [(-12.0, 1.0), (-16.0, 9.0), (-32.0, -2.0), (-10.0, 12.0)];
const DIMS: usize = 4;

fn efficiency_of(x: &[f64; DIMS], fitted_on: &[String], memory: f64) -> Efficiency {
    Efficiency {
        compute: x[0].exp(),
        rows_half: x[1].exp(),
        memory,
        layer_overhead_s: x[2].exp(),
        width_half: x[3].exp(),
        basis: format!("fitted to tessera bench profiles of {}", fitted_on.join(", ")),
    }
}

/// Least squares on log tokens/s; several starts, best result.
fn fit(pairs: &[(&BenchRecord, &Hardware)], fitted_on: &[String], statistic: Statistic, memory: f64) -> Efficiency {
    let loss = |x: &[f64; DIMS]| -> f64 {
        let eff = efficiency_of(x, fitted_on, memory);
        pairs
            .iter()
            .map(|(r, hw)| {
                let (p, _) = predict(r, hw, &eff);
                let d = p.ln() - r.measured(statistic).ln();
                if d.is_finite() {
                    d * d
                } else {
                    1e6
                }
            })
            .sum()
    };
    let mut best = ([0.0f64; DIMS], f64::INFINITY);
    for &c in &[0.03f64, 0.3] {
        for &h in &[0.01f64, 1.0, 30.0] {
            for &t in &[1e-6f64, 1e-4] {
                for &v in &[1.0f64, 300.0] {
                    let (x, value) = nelder_mead(&loss, [c.ln(), h.ln(), t.ln(), v.ln()], 0.5, 1200);
                    if value < best.1 {
                        best = (x, value);
                    }
                }
            }
        }
    }
    efficiency_of(&best.0, fitted_on, memory)
}

fn clamp(x: [f64; DIMS]) -> [f64; DIMS] {
    let mut y = x;
    for (v, (lo, hi)) in y.iter_mut().zip(LOG_BOUNDS) {
        *v = v.clamp(lo, hi);
    }
    y
}

/// Nelder-Mead minimisation; returns the best point and its value.
fn nelder_mead(
    f: &dyn Fn(&[f64; DIMS]) -> f64,
    start: [f64; DIMS],
    step: f64,
    iterations: usize,
) -> ([f64; DIMS], f64) {
    let eval = |x: [f64; DIMS]| {
        let x = clamp(x);
        (x, f(&x))
    };
    let mut simplex: Vec<([f64; DIMS], f64)> = vec![eval(start)];
    for i in 0..DIMS {
        let mut x = start;
        x[i] += step;
        simplex.push(eval(x));
    }
    for _ in 0..iterations {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[DIMS].1 - simplex[0].1).abs() < 1e-14 {
            break;
        }
        let mut centroid = [0.0; DIMS];
        for (x, _) in &simplex[..DIMS] {
            for k in 0..DIMS {
                centroid[k] += x[k] / DIMS as f64;
            }
        }
        let worst = simplex[DIMS];
        let along = |t: f64| {
            let mut x = [0.0; DIMS];
            for k in 0..DIMS {
                x[k] = centroid[k] + t * (worst.0[k] - centroid[k]);
            }
            eval(x)
        };
        let reflected = along(-1.0);
        if reflected.1 < simplex[0].1 {
            let expanded = along(-2.0);
            simplex[DIMS] = if expanded.1 < reflected.1 { expanded } else { reflected };
        } else if reflected.1 < simplex[DIMS - 1].1 {
            simplex[DIMS] = reflected;
        } else {
            let contracted = if reflected.1 < worst.1 { along(-0.5) } else { along(0.5) };
            if contracted.1 < worst.1.min(reflected.1) {
                simplex[DIMS] = contracted;
            } else {
                let best = simplex[0].0;
                for point in simplex.iter_mut().skip(1) {
                    let mut x = [0.0; DIMS];
                    for k in 0..DIMS {
                        x[k] = best[k] + 0.5 * (point.0[k] - best[k]);
                    }
                    *point = eval(x);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::profile::tests::record;

    /// Profiles generated from known factors are fitted back and predicted across models.
    #[test]
    fn factors_that_made_the_data_are_recovered_and_transfer() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let chip = cat.chip("local-zen3-2c").unwrap();
        // Like the real machine: slow kernels, so decode is compute-bound and every factor shows.
        let truth = Efficiency {
            compute: 0.03,
            rows_half: 0.5,
            memory: 1.0,
            layer_overhead_s: 300e-6,
            width_half: 400.0,
            basis: "truth".into(),
        };
        let shapes = [
            ("small.gguf", (30, 576, 1536, 9, 3, 64, 49152), 134_515_008.0, 86e6),
            ("mid.gguf", (18, 640, 2048, 4, 1, 256, 262144), 268_098_176.0, 242e6),
            ("big.gguf", (16, 2048, 8192, 32, 8, 64, 128256), 1_235_814_400.0, 770e6),
        ];
        let mut profile = Profile::default();
        for (file, shape, params, bytes) in shapes {
            for test in [(512, 0), (0, 128)] {
                // Measure with placeholder speed, then replace it with the truth's prediction.
                let text =
                    serde_json::to_string(&serde_json::json!([record(file, shape, params, bytes, test, 1.0)])).unwrap();
                let mut p = Profile::parse(&text, "synthetic").unwrap();
                let hw = hardware_for(chip, &p.records[0], &p, None, &a).unwrap();
                let ts = predict(&p.records[0], &hw, &truth).0;
                p.records[0].avg_ts = ts;
                p.records[0].samples_ts = vec![ts];
                profile.records.push(p.records.remove(0));
            }
        }
        let cal = calibrate(&cat, "local-zen3-2c", &profile, None, &a, Statistic::Best).unwrap();
        assert!((cal.efficiency.compute / 0.03 - 1.0).abs() < 0.02, "{:?}", cal.efficiency);
        assert!((cal.efficiency.rows_half / 0.5 - 1.0).abs() < 0.05, "{:?}", cal.efficiency);
        assert!((cal.efficiency.layer_overhead_s / 300e-6 - 1.0).abs() < 0.05, "{:?}", cal.efficiency);
        assert!((cal.efficiency.width_half / 400.0 - 1.0).abs() < 0.1, "{:?}", cal.efficiency);
        assert_eq!(cal.efficiency.memory, 1.0, "the catalog bandwidth of this machine is a measurement");
        assert_eq!(cal.leave_one_out.len(), 6);
        assert!(cal.max_abs_loo_error_pct().unwrap() < 1.0, "{:?}", cal.leave_one_out);
        for c in &cal.leave_one_out {
            assert!(!c.fitted_on.contains(&c.model_file), "held-out model must not be in the fit");
        }
    }

    #[test]
    fn profiles_from_another_backend_cannot_calibrate_a_cpu() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let mut r = record("m.gguf", (30, 576, 1536, 9, 3, 64, 49152), 1.3e8, 8e7, (512, 0), 100.0);
        r["backend"] = serde_json::json!("cuda");
        let p = Profile::parse(&serde_json::to_string(&serde_json::json!([r])).unwrap(), "p").unwrap();
        let err = calibrate(&cat, "local-zen3-2c", &p, None, &a, Statistic::Best).unwrap_err().to_string();
        assert!(err.contains("cannot calibrate local-zen3-2c"), "{err}");
        let err = calibrate(&cat, "h100-sxm", &Profile::default(), None, &a, Statistic::Best).unwrap_err().to_string();
        assert!(err.contains("no benchmark records"), "{err}");
    }
}
