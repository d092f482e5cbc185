//! Figures that may be partly unknown, and the three-valued logic the rules are judged in.
//!
//! A [`Quantity`] is a closed range `[lo, hi]` that holds the true value, with the names of the
//! catalog fields that left it open: an exact figure has `lo == hi`, an unknown one `[0, inf]`, a
//! maximum over precisions where one precision is unknown `[max of the known, inf]`. Comparing a
//! range with a threshold gives [`Truth::Unknown`] (naming those fields) only when the answer really
//! depends on them; a TPP of at least 29,360 is at least 4800 whatever the unknown precision is.

use std::fmt;

use serde::Serialize;

/// A non-negative figure known to lie in `[lo, hi]`; `missing` names what keeps it from being exact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quantity {
    pub lo: f64,
    pub hi: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl Quantity {
    pub fn exact(value: f64) -> Quantity {
        Quantity { lo: value, hi: value, missing: Vec::new() }
    }

    /// Nothing is known but that it is not negative.
    pub fn unknown(field: impl Into<String>) -> Quantity {
        Quantity { lo: 0.0, hi: f64::INFINITY, missing: vec![field.into()] }
    }

    /// The exact value, when there is one.
    pub fn value(&self) -> Option<f64> {
        (self.lo == self.hi).then_some(self.lo)
    }

    pub fn is_exact(&self) -> bool {
        self.lo == self.hi
    }

    /// The larger of two figures (each end separately).
    pub fn max(&self, other: &Quantity) -> Quantity {
        Quantity { lo: self.lo.max(other.lo), hi: self.hi.max(other.hi), missing: union(&self.missing, &other.missing) }
    }

    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity { lo: self.lo + other.lo, hi: self.hi + other.hi, missing: union(&self.missing, &other.missing) }
    }

    /// Multiplies by a known non-negative factor.
    pub fn scale(&self, k: f64) -> Quantity {
        let hi = if self.hi.is_infinite() && k > 0.0 { f64::INFINITY } else { self.hi * k };
        Quantity { lo: self.lo * k, hi, missing: self.missing.clone() }
    }

    /// The quotient of two non-negative figures: `[lo / other.hi, hi / other.lo]`, with x/0 = inf
    /// for x > 0 and 0/0 taken as 0 (a zero numerator stays zero).
    pub fn div(&self, other: &Quantity) -> Quantity {
        let lower = |a: f64, b: f64| {
            if a == 0.0 || b.is_infinite() {
                0.0
            } else if b == 0.0 {
                f64::INFINITY
            } else {
                a / b
            }
        };
        let upper = |a: f64, b: f64| {
            if a == 0.0 {
                0.0
            } else if b == 0.0 || a.is_infinite() {
                f64::INFINITY
            } else {
                a / b
            }
        };
        Quantity {
            lo: lower(self.lo, other.hi),
            hi: upper(self.hi, other.lo),
            missing: union(&self.missing, &other.missing),
        }
    }

    /// `self op threshold`, decided where the range allows it.
    pub fn compare(&self, op: Op, threshold: f64) -> Truth {
        let (all, none) = match op {
            Op::Ge => (self.lo >= threshold, self.hi < threshold),
            Op::Gt => (self.lo > threshold, self.hi <= threshold),
            Op::Lt => (self.hi < threshold, self.lo >= threshold),
            Op::Le => (self.hi <= threshold, self.lo > threshold),
        };
        if all {
            Truth::True
        } else if none {
            Truth::False
        } else {
            Truth::Unknown(self.missing.clone())
        }
    }
}

impl fmt::Display for Quantity {
    /// `15830`, `>= 29360`, `unknown`, or `2.0..6.1`, with up to three significant decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_exact() {
            write!(f, "{}", short(self.lo))
        } else if self.lo == 0.0 && self.hi.is_infinite() {
            write!(f, "unknown")
        } else if self.hi.is_infinite() {
            write!(f, ">= {}", short(self.lo))
        } else {
            write!(f, "{}..{}", short(self.lo), short(self.hi))
        }
    }
}

/// A number to about four significant digits, without trailing zeros.
pub fn short(v: f64) -> String {
    if v.is_infinite() {
        return "inf".into();
    }
    let decimals = match v.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 100.0 => 1,
        a if a >= 10.0 => 2,
        a if a >= 0.01 => 3,
        _ => 6,
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// A comparison in a rule's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
pub enum Op {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Le => "<=",
        })
    }
}

/// Kleene's three-valued logic; `Unknown` carries the fields it waits on.
#[derive(Clone, Debug, PartialEq)]
pub enum Truth {
    True,
    False,
    Unknown(Vec<String>),
}

impl Truth {
    pub fn from_bool(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }

    /// False if any is false, else unknown if any is unknown, else true.
    pub fn all(items: impl IntoIterator<Item = Truth>) -> Truth {
        let mut missing: Option<Vec<String>> = None;
        for t in items {
            match t {
                Truth::False => return Truth::False,
                Truth::Unknown(m) => missing = Some(union(missing.as_deref().unwrap_or(&[]), &m)),
                Truth::True => {}
            }
        }
        missing.map_or(Truth::True, Truth::Unknown)
    }

    /// True if any is true, else unknown if any is unknown, else false.
    pub fn any(items: impl IntoIterator<Item = Truth>) -> Truth {
        let mut missing: Option<Vec<String>> = None;
        for t in items {
            match t {
                Truth::True => return Truth::True,
                Truth::Unknown(m) => missing = Some(union(missing.as_deref().unwrap_or(&[]), &m)),
                Truth::False => {}
            }
        }
        missing.map_or(Truth::False, Truth::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_figures_decide_every_comparison() {
        let q = Quantity::exact(4800.0);
        assert_eq!(q.compare(Op::Ge, 4800.0), Truth::True);
        assert_eq!(q.compare(Op::Lt, 4800.0), Truth::False);
        assert_eq!(q.compare(Op::Gt, 4800.0), Truth::False);
        assert_eq!(q.compare(Op::Le, 4800.0), Truth::True);
    }

    #[test]
    fn a_lower_bound_decides_what_it_can() {
        let q = Quantity::exact(29360.0).max(&Quantity::unknown("int8_tops"));
        assert_eq!(q.lo, 29360.0);
        assert_eq!(q.compare(Op::Ge, 4800.0), Truth::True);
        assert_eq!(q.compare(Op::Lt, 40000.0), Truth::Unknown(vec!["int8_tops".into()]));
        assert_eq!(q.to_string(), ">= 29360");
    }

    #[test]
    fn density_with_unknown_area_is_unknown() {
        let pd = Quantity::exact(3040.0).div(&Quantity::unknown("die_area_mm2"));
        assert_eq!((pd.lo, pd.hi), (0.0, f64::INFINITY));
        assert_eq!(pd.compare(Op::Ge, 5.92), Truth::Unknown(vec!["die_area_mm2".into()]));
        assert_eq!(pd.to_string(), "unknown");
        assert_eq!(Quantity::exact(0.0).div(&Quantity::unknown("a")).value(), Some(0.0));
    }

    #[test]
    fn kleene_logic() {
        let u = || Truth::Unknown(vec!["x".into()]);
        assert_eq!(Truth::all([Truth::True, u(), Truth::False]), Truth::False);
        assert_eq!(Truth::all([Truth::True, u()]), u());
        assert_eq!(Truth::any([Truth::False, u(), Truth::True]), Truth::True);
        assert_eq!(Truth::any([Truth::False, u()]), u());
        assert_eq!(Truth::all([]), Truth::True);
        assert_eq!(Truth::any([]), Truth::False);
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(short(15830.4), "15830");
        assert_eq!(short(2.909090), "2.909");
        assert_eq!(short(19.447), "19.45");
        assert_eq!(short(0.0), "0");
    }

    proptest! {
        /// Whatever the true value in the range, a decided comparison agrees with it.
        #[test]
        fn decided_comparisons_hold_for_every_value_in_range(
            lo in 0.0f64..1e5, width in 0.0f64..1e5, t in 0.0f64..2e5, frac in 0.0f64..=1.0,
        ) {
            let q = Quantity { lo, hi: lo + width, missing: vec!["f".into()] };
            let v = lo + width * frac;
            for op in [Op::Ge, Op::Gt, Op::Lt, Op::Le] {
                let truth = match op { Op::Ge => v >= t, Op::Gt => v > t, Op::Lt => v < t, Op::Le => v <= t };
                match q.compare(op, t) {
                    Truth::True => prop_assert!(truth),
                    Truth::False => prop_assert!(!truth),
                    Truth::Unknown(_) => {}
                }
            }
        }

        /// The quotient range holds every quotient of values in the operand ranges.
        #[test]
        fn quotient_ranges_hold_the_quotients(a in 1.0f64..1e4, aw in 0.0f64..1e4, b in 1.0f64..1e3, bw in 0.0f64..1e3,
                                             fa in 0.0f64..=1.0, fb in 0.0f64..=1.0) {
            let x = Quantity { lo: a, hi: a + aw, missing: vec![] };
            let y = Quantity { lo: b, hi: b + bw, missing: vec![] };
            let q = x.div(&y);
            let v = (a + aw * fa) / (b + bw * fb);
            prop_assert!(q.lo <= v * (1.0 + 1e-12) && v <= q.hi * (1.0 + 1e-12));
        }
    }
}
