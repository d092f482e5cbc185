//! Total cost of ownership: what an hour of a chip costs (capex amortised over its lifetime, power
//! x PUE x energy price, colocation per kW; or an on-demand rental), and from that and the modelled
//! throughput, dollars per million input and output tokens.
//!
//! Input tokens are charged the chip time prefill takes, output tokens the time decode takes, each
//! at the modelled throughput scaled by utilisation.

use serde::Serialize;

use crate::assumptions::Assumptions;
use crate::catalog::{Chip, Spec};
use crate::PlanError;

const HOURS_PER_YEAR: f64 = 8766.0;

/// Buy, rent, or buy when a price is known and rent otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pricing {
    Auto,
    Buy,
    Rent,
}

/// Which end of a price range to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PricePoint {
    Low,
    Mid,
    High,
}

impl PricePoint {
    pub fn name(self) -> &'static str {
        match self {
            PricePoint::Low => "low",
            PricePoint::Mid => "mid",
            PricePoint::High => "high",
        }
    }
}

/// One device-hour and what it is made of.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourlyCost {
    pub usd_per_hour: f64,
    pub capex_per_hour: f64,
    pub energy_per_hour: f64,
    pub hosting_per_hour: f64,
    pub rental_per_hour: f64,
    /// How it was priced, with the figures' dates and sources.
    pub basis: String,
}

/// The cost of an hour of `chip`.
pub fn hourly_cost(chip: &Chip, a: &Assumptions, pricing: Pricing, point: PricePoint) -> Result<HourlyCost, PlanError> {
    let can_buy = chip.price_usd.is_some() && matches!(chip.tdp_w, Spec::Known { .. });
    let buy = match pricing {
        Pricing::Buy => true,
        Pricing::Rent => false,
        Pricing::Auto => can_buy || chip.rental_usd_per_hour.is_none(),
    };
    if !buy {
        let r = chip.rental_usd_per_hour.as_ref().ok_or_else(|| PlanError::MissingFigure {
            chip: chip.id.clone(),
            what: "rental_usd_per_hour".into(),
            needed_for: "a rented TCO".into(),
        })?;
        return Ok(HourlyCost {
            usd_per_hour: r.usd_per_hour,
            capex_per_hour: 0.0,
            energy_per_hour: 0.0,
            hosting_per_hour: 0.0,
            rental_per_hour: r.usd_per_hour,
            basis: format!("rented at ${}/h ({}, {})", r.usd_per_hour, r.date, r.source),
        });
    }
    let price = chip.price_usd.as_ref().ok_or_else(|| PlanError::MissingFigure {
        chip: chip.id.clone(),
        what: "price_usd".into(),
        needed_for: "the TCO".into(),
    })?;
    let tdp = chip.require("tdp_w", &chip.tdp_w, "the TCO (power and hosting)")?;
    let capex = match point {
        PricePoint::Low => price.low,
        PricePoint::Mid => (price.low + price.high) / 2.0,
        PricePoint::High => price.high,
    };
    let kw = tdp / 1000.0 * a.power_overhead.value;
    let capex_per_hour = capex * a.capex_overhead.value / (a.lifetime_years.value * HOURS_PER_YEAR);
    let energy_per_hour = kw * a.pue.value * a.energy_usd_per_kwh.value;
    let hosting_per_hour = kw * a.hosting_usd_per_kw_month.value * 12.0 / HOURS_PER_YEAR;
    Ok(HourlyCost {
        usd_per_hour: capex_per_hour + energy_per_hour + hosting_per_hour,
        capex_per_hour,
        energy_per_hour,
        hosting_per_hour,
        rental_per_hour: 0.0,
        basis: format!(
            "bought at ${capex:.0} ({} of ${:.0}-${:.0}, {}, {}), {tdp} W at TDP",
            point.name(),
            price.low,
            price.high,
            price.date,
            price.source
        ),
    })
}

/// Dollars per million tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenCost {
    pub usd_per_mtok_input: f64,
    pub usd_per_mtok_output: f64,
    /// Cost of the whole instance (all tensor-parallel chips) per hour.
    pub instance_usd_per_hour: f64,
    pub utilisation: f64,
    pub hourly: HourlyCost,
}

/// $/Mtok for an instance of `chips` devices with the given prefill and decode throughputs.
pub fn token_cost(
    hourly: &HourlyCost,
    chips: u32,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    utilisation: f64,
) -> TokenCost {
    let instance = hourly.usd_per_hour * f64::from(chips);
    let per_mtok = |tok_s: f64| instance / (3600.0 * tok_s * utilisation) * 1e6;
    TokenCost {
        usd_per_mtok_input: per_mtok(prefill_tok_s),
        usd_per_mtok_output: per_mtok(decode_tok_s),
        instance_usd_per_hour: instance,
        utilisation,
        hourly: hourly.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn an_h100_hour_adds_up_from_its_parts() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let h = hourly_cost(cat.chip("h100-sxm").unwrap(), &a, Pricing::Auto, PricePoint::Mid).unwrap();
        // $27,500 over 5 years = $0.627/h; 0.7 kW x 1.82 = 1.274 kW -> x 1.56 x $0.081 = $0.161/h;
        // hosting 1.274 kW x $184 x 12 / 8766 = $0.321/h.
        assert!((h.capex_per_hour - 27_500.0 / (5.0 * 8766.0)).abs() < 1e-9);
        assert!((h.energy_per_hour - 1.274 * 1.56 * 0.081).abs() < 1e-9);
        assert!((h.hosting_per_hour - 1.274 * 184.0 * 12.0 / 8766.0).abs() < 1e-9);
        assert!((h.usd_per_hour - (h.capex_per_hour + h.energy_per_hour + h.hosting_per_hour)).abs() < 1e-12);
        assert!(h.basis.contains("rj-h100"), "{}", h.basis);
    }

    #[test]
    fn cloud_only_chips_are_rented_and_unpriced_ones_say_so() {
        let cat = Catalog::builtin().unwrap();
        let a = Assumptions::builtin().unwrap();
        let t = hourly_cost(cat.chip("tpu-v5e").unwrap(), &a, Pricing::Auto, PricePoint::Mid).unwrap();
        assert_eq!(t.usd_per_hour, 1.2);
        let err = hourly_cost(cat.chip("l20").unwrap(), &a, Pricing::Auto, PricePoint::Mid).unwrap_err();
        assert_eq!(err.to_string(), "l20: price_usd is unknown, so the TCO cannot be computed");
        let err = hourly_cost(cat.chip("h100-sxm").unwrap(), &a, Pricing::Rent, PricePoint::Mid).unwrap_err();
        assert!(err.to_string().contains("rental_usd_per_hour is unknown"));
    }

    #[test]
    fn token_cost_charges_each_phase_its_own_time() {
        let h = HourlyCost {
            usd_per_hour: 3.6,
            capex_per_hour: 3.6,
            energy_per_hour: 0.0,
            hosting_per_hour: 0.0,
            rental_per_hour: 0.0,
            basis: String::new(),
        };
        // $3.6/h = $0.001/s; 1,000 tok/s at full use -> $1 per Mtok.
        let c = token_cost(&h, 1, 10_000.0, 1_000.0, 1.0);
        assert!((c.usd_per_mtok_input - 0.1).abs() < 1e-12);
        assert!((c.usd_per_mtok_output - 1.0).abs() < 1e-12);
        let half = token_cost(&h, 2, 10_000.0, 1_000.0, 0.5);
        assert!((half.usd_per_mtok_output - 4.0).abs() < 1e-12);
    }
}
