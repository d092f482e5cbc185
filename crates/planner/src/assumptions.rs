//! Every assumption of the performance model and the TCO, each with its cited default
//! (`data/assumptions.toml`) and the CLI flag that overrides it.

use serde::{Deserialize, Serialize};

use crate::PlanError;

/// The defaults compiled into the binary.
pub const BUILTIN_ASSUMPTIONS: &str = include_str!("../data/assumptions.toml");

/// One assumption: its value, where the default comes from, and whether a flag replaced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assumption {
    pub value: f64,
    pub flag: String,
    pub source: String,
    #[serde(default)]
    pub overridden: bool,
}

/// All of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assumptions {
    pub lifetime_years: Assumption,
    pub pue: Assumption,
    pub energy_usd_per_kwh: Assumption,
    pub hosting_usd_per_kw_month: Assumption,
    pub power_overhead: Assumption,
    pub capex_overhead: Assumption,
    pub utilisation: Assumption,
    pub usable_memory_fraction: Assumption,
    pub eff_compute: Assumption,
    pub eff_memory: Assumption,
    pub eff_rows_half: Assumption,
    pub allreduce_latency_us: Assumption,
}

impl Assumptions {
    pub fn builtin() -> Result<Assumptions, PlanError> {
        Assumptions::parse(BUILTIN_ASSUMPTIONS, "builtin assumptions (crates/planner/data/assumptions.toml)")
    }

    pub fn parse(text: &str, origin: &str) -> Result<Assumptions, PlanError> {
        let a: Assumptions = crate::parse_toml(text, origin)?;
        for (name, x) in a.entries() {
            check(name, x.value).map_err(|e| PlanError::data(origin, e.to_string()))?;
        }
        Ok(a)
    }

    /// Name and assumption, in file order.
    pub fn entries(&self) -> [(&'static str, &Assumption); 12] {
        [
            ("lifetime_years", &self.lifetime_years),
            ("pue", &self.pue),
            ("energy_usd_per_kwh", &self.energy_usd_per_kwh),
            ("hosting_usd_per_kw_month", &self.hosting_usd_per_kw_month),
            ("power_overhead", &self.power_overhead),
            ("capex_overhead", &self.capex_overhead),
            ("utilisation", &self.utilisation),
            ("usable_memory_fraction", &self.usable_memory_fraction),
            ("eff_compute", &self.eff_compute),
            ("eff_memory", &self.eff_memory),
            ("eff_rows_half", &self.eff_rows_half),
            ("allreduce_latency_us", &self.allreduce_latency_us),
        ]
    }

    /// Replaces one assumption (from its flag), checking its range.
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), PlanError> {
        check(name, value)?;
        let slot = match name {
            "lifetime_years" => &mut self.lifetime_years,
            "pue" => &mut self.pue,
            "energy_usd_per_kwh" => &mut self.energy_usd_per_kwh,
            "hosting_usd_per_kw_month" => &mut self.hosting_usd_per_kw_month,
            "power_overhead" => &mut self.power_overhead,
            "capex_overhead" => &mut self.capex_overhead,
            "utilisation" => &mut self.utilisation,
            "usable_memory_fraction" => &mut self.usable_memory_fraction,
            "eff_compute" => &mut self.eff_compute,
            "eff_memory" => &mut self.eff_memory,
            "eff_rows_half" => &mut self.eff_rows_half,
            "allreduce_latency_us" => &mut self.allreduce_latency_us,
            _ => return Err(PlanError::Invalid(format!("no assumption named {name}"))),
        };
        slot.value = value;
        slot.overridden = true;
        Ok(())
    }
}

/// The range each assumption may take.
fn check(name: &str, v: f64) -> Result<(), PlanError> {
    let (lo, hi, lo_open) = match name {
        "lifetime_years" => (0.0, 50.0, true),
        "pue" => (1.0, 5.0, false),
        "energy_usd_per_kwh" => (0.0, 10.0, false),
        "hosting_usd_per_kw_month" => (0.0, 10_000.0, false),
        "power_overhead" | "capex_overhead" => (1.0, 10.0, false),
        "utilisation" | "usable_memory_fraction" => (0.0, 1.0, true),
        "eff_compute" | "eff_memory" => (0.0, 2.0, true),
        "allreduce_latency_us" => (0.0, 1e6, false),
        "eff_rows_half" => (0.0, 1e6, false),
        _ => return Err(PlanError::Invalid(format!("no assumption named {name}"))),
    };
    let ok = v.is_finite() && v <= hi && if lo_open { v > lo } else { v >= lo };
    if ok {
        Ok(())
    } else {
        let open = if lo_open { "(" } else { "[" };
        Err(PlanError::Invalid(format!("{name} = {v} is outside {open}{lo}, {hi}]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_names_its_source_and_flag() {
        let a = Assumptions::builtin().unwrap();
        for (name, x) in a.entries() {
            assert!(x.source.len() > 20, "{name}");
            assert!(x.flag.starts_with("--"), "{name}");
            assert!(!x.overridden);
        }
    }

    #[test]
    fn overrides_are_range_checked() {
        let mut a = Assumptions::builtin().unwrap();
        a.set("pue", 1.2).unwrap();
        assert!(a.pue.overridden && a.pue.value == 1.2);
        assert_eq!(a.set("pue", 0.5).unwrap_err().to_string(), "pue = 0.5 is outside [1, 5]");
        assert!(a.set("utilisation", 0.0).is_err());
        assert!(a.set("utilisation", f64::NAN).is_err());
    }
}
