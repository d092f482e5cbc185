//! Export-control rules as versioned data: each rule set (`data/rules/*.toml`) transcribes the ECCN
//! 3A090 parameters of one U.S. rule, the destinations it licenses, and its exceptions, with
//! citations; this module judges chips against them.
//!
//! Classification is three-valued: a chip whose classification depends on a figure the catalog
//! lacks is [`Class::Unknown`] naming that figure, never silently "not controlled". A rule set may
//! `extends` an earlier one and inherit its classes, exemptions, license lines and memory items.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Chip};
use crate::interval::{Op, Quantity, Truth};
use crate::PlanError;

/// The rule sets compiled into the binary, oldest first.
pub const BUILTIN_RULES: [(&str, &str); 5] = [
    ("us-2022-10", include_str!("../data/rules/us-2022-10.toml")),
    ("us-2023-10", include_str!("../data/rules/us-2023-10.toml")),
    ("us-2024-12", include_str!("../data/rules/us-2024-12.toml")),
    ("us-2025-01", include_str!("../data/rules/us-2025-01.toml")),
    ("us-2025-05", include_str!("../data/rules/us-2025-05.toml")),
];

/// Destinations and country groups compiled into the binary.
pub const BUILTIN_COUNTRIES: &str = include_str!("../data/countries.toml");

/// A figure the rules compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Total processing performance of one IC.
    Tpp,
    /// TPP / applicable die area.
    PerformanceDensity,
    /// Aggregate bidirectional I/O of one IC, GB/s.
    IoBandwidth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Designed or marketed for use in datacenters.
    Datacenter,
}

/// One condition of a clause: a metric against a threshold, or a yes/no property.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Condition {
    Metric { metric: Metric, op: Op, value: f64 },
    Flag { flag: Flag, is: bool },
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Condition, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            metric: Option<Metric>,
            op: Option<Op>,
            value: Option<f64>,
            flag: Option<Flag>,
            is: Option<bool>,
        }
        use serde::de::Error;
        let raw = Raw::deserialize(d)?;
        match raw {
            Raw { metric: Some(metric), op: Some(op), value: Some(value), flag: None, is: None } => {
                if !value.is_finite() || value < 0.0 {
                    return Err(D::Error::custom(format!("threshold {value} must be a non-negative number")));
                }
                Ok(Condition::Metric { metric, op, value })
            }
            Raw { flag: Some(flag), is: Some(is), metric: None, op: None, value: None } => {
                Ok(Condition::Flag { flag, is })
            }
            _ => Err(D::Error::custom("a condition is { metric, op, value } or { flag, is }")),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Metric { metric, op, value } => {
                let name = match metric {
                    Metric::Tpp => "TPP",
                    Metric::PerformanceDensity => "PD",
                    Metric::IoBandwidth => "I/O GB/s",
                };
                write!(f, "{name} {op} {}", crate::interval::short(*value))
            }
            Condition::Flag { flag: Flag::Datacenter, is } => {
                write!(f, "{}designed for datacenters", if *is { "" } else { "not " })
            }
        }
    }
}

/// One way to fall in a class: all its conditions hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    pub id: String,
    pub text: String,
    pub all: Vec<Condition>,
}

/// A control class (an ECCN paragraph): any of its clauses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlClass {
    pub id: String,
    /// The ECCN for systems containing such ICs (4A090.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<String>,
    pub cite: String,
    #[serde(rename = "clause")]
    pub clauses: Vec<Clause>,
}

/// A note that takes items out of the ECCN altogether (Note 2 to 3A090).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exemption {
    pub id: String,
    pub text: String,
    pub cite: String,
    pub all: Vec<Condition>,
}

/// A set of destinations by country group and country code.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destinations {
    /// Every destination (before the exceptions).
    #[serde(default)]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_countries: Vec<String>,
}

impl Destinations {
    /// Whether `code` (canonical) is among these destinations.
    pub fn contains(&self, countries: &Countries, code: &str) -> bool {
        let groups = countries.groups_of(code);
        let included = self.all
            || self.countries.iter().any(|c| c == code)
            || self.groups.iter().any(|g| groups.contains(&g.as_str()));
        let excluded = self.except_countries.iter().any(|c| c == code)
            || self.except_groups.iter().any(|g| groups.contains(&g.as_str()));
        included && !excluded
    }
}

/// What a rule asks before an item goes to a destination, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// Nothing (an exception lifts the requirement).
    None,
    /// Notify the regulator before the export (License Exception NAC).
    Notification,
    /// Allowed up to a quantity per year (License Exception LPP).
    Quota,
    /// A license is required.
    License,
    /// Guidance says dealing in the item at all risks a violation.
    Risk,
}

/// An exception to a license line, for some items and destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseException {
    pub id: String,
    pub text: String,
    /// Classes it covers (empty: all the line covers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_destinations: Option<Destinations>,
    pub effect: Requirement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_tpp_per_year: Option<f64>,
}

/// A license requirement: for these classes (or named chips), to these destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseLine {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Chips named individually (an is-informed letter, guidance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chips: Vec<String>,
    pub destinations: Destinations,
    pub requirement: Requirement,
    pub review: String,
    pub cite: String,
    /// Applies inside the United States too (guidance on use, not an export control).
    #[serde(default)]
    pub domestic: bool,
    /// Applies only to items subject to the EAR (default); false for guidance on any item.
    #[serde(default = "yes")]
    pub requires_ear: bool,
    #[serde(default, rename = "exception", skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<LicenseException>,
}

fn yes() -> bool {
    true
}

/// A memory control item (3A090.c, HBM by bandwidth density).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryItem {
    pub id: String,
    pub text: String,
    pub threshold_gbs_per_mm2: f64,
    pub cite: String,
    pub memory_types: Vec<String>,
    /// How the item treats memory co-packaged with a logic IC.
    pub co_packaged: String,
}

/// One version of the rules, with everything it inherits resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleSet {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    pub title: String,
    pub citation: String,
    pub url: String,
    pub published: String,
    pub effective: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    pub summary: String,
    pub notes: Vec<String>,
    pub classes: Vec<ControlClass>,
    pub exemptions: Vec<Exemption>,
    pub licenses: Vec<LicenseLine>,
    pub memory_items: Vec<MemoryItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    id: String,
    extends: Option<String>,
    title: String,
    citation: String,
    url: String,
    published: String,
    effective: String,
    supersedes: Option<String>,
    summary: String,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default, rename = "class")]
    classes: Vec<ControlClass>,
    #[serde(default, rename = "exemption")]
    exemptions: Vec<Exemption>,
    #[serde(default, rename = "license")]
    licenses: Vec<LicenseLine>,
    #[serde(default, rename = "memory_item")]
    memory_items: Vec<MemoryItem>,
    #[serde(default)]
    remove_licenses: Vec<String>,
}

/// A destination known to the planner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Country {
    pub name: String,
    /// Treated as another destination (Hong Kong as China).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treated_as: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub title: String,
    pub members: Vec<String>,
}

/// Destinations and country groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Countries {
    pub as_of: String,
    pub countries: BTreeMap<String, Country>,
    pub groups: BTreeMap<String, Group>,
}

impl Countries {
    pub fn parse(text: &str, origin: &str) -> Result<Countries, PlanError> {
        let c: Countries = crate::parse_toml(text, origin)?;
        for (code, country) in &c.countries {
            if code.len() != 2 || !code.chars().all(|ch| ch.is_ascii_uppercase()) {
                return Err(PlanError::data(origin, format!("{code:?} is not an ISO 3166-1 alpha-2 code")));
            }
            if let Some(t) = &country.treated_as {
                match c.countries.get(t) {
                    Some(target) if target.treated_as.is_none() => {}
                    _ => {
                        return Err(PlanError::data(
                            origin,
                            format!("{code}: treated_as {t:?} is not a plain destination"),
                        ))
                    }
                }
            }
        }
        for (name, group) in &c.groups {
            if let Some(m) = group.members.iter().find(|m| !c.countries.contains_key(*m)) {
                return Err(PlanError::data(origin, format!("group {name}: member {m:?} is not in [countries]")));
            }
        }
        Ok(c)
    }

    /// The canonical code and name for a region as typed (`cn`, `HK` -> `CN`).
    pub fn resolve(&self, region: &str) -> Result<(String, &str), PlanError> {
        let code = region.trim().to_ascii_uppercase();
        let country = self
            .countries
            .get(&code)
            .ok_or_else(|| PlanError::unknown_name("region", region, self.countries.keys().map(String::as_str)))?;
        match &country.treated_as {
            Some(t) => Ok((t.clone(), self.countries.get(t).map_or(country.name.as_str(), |c| c.name.as_str()))),
            None => Ok((code, country.name.as_str())),
        }
    }

    pub fn groups_of(&self, code: &str) -> Vec<&str> {
        self.groups.iter().filter(|(_, g)| g.members.iter().any(|m| m == code)).map(|(n, _)| n.as_str()).collect()
    }
}

/// Every rule set plus the country groups they name.
#[derive(Clone, Debug, Serialize)]
pub struct RuleBook {
    pub countries: Countries,
    pub sets: Vec<RuleSet>,
}

impl RuleBook {
    /// The rule sets and countries compiled into the binary.
    pub fn builtin() -> Result<RuleBook, PlanError> {
        RuleBook::builtin_with(&[])
    }

    /// Parses rule sets (`(origin, text)` pairs), resolves `extends` and checks every reference.
    pub fn from_texts(countries: Countries, texts: &[(String, &str)]) -> Result<RuleBook, PlanError> {
        let mut raw: Vec<(String, RawRuleSet)> = Vec::new();
        for (origin, text) in texts {
            let r: RawRuleSet = crate::parse_toml(text, origin)?;
            if let Some(i) = raw.iter().position(|(_, other)| other.id == r.id) {
                raw.remove(i);
            }
            raw.push((origin.clone(), r));
        }
        let mut sets: Vec<RuleSet> = Vec::new();
        // Resolve in dependency order; a pass that resolves nothing means a cycle or a missing base.
        while !raw.is_empty() {
            let before = raw.len();
            let mut i = 0;
            while i < raw.len() {
                let ready = match &raw[i].1.extends {
                    None => true,
                    Some(base) => sets.iter().any(|s| &s.id == base),
                };
                if ready {
                    let (origin, r) = raw.remove(i);
                    let set = resolve(r, &sets, &origin)?;
                    check(&set, &countries, &origin)?;
                    sets.push(set);
                } else {
                    i += 1;
                }
            }
            if raw.len() == before {
                let (origin, r) = &raw[0];
                return Err(PlanError::data(
                    origin.clone(),
                    format!("rule set {:?} extends {:?}, which is not defined (or the chain loops)", r.id, r.extends),
                ));
            }
        }
        sets.sort_by(|a, b| a.published.cmp(&b.published).then(a.id.cmp(&b.id)));
        Ok(RuleBook { countries, sets })
    }

    /// The built-in rule sets plus (or replaced by, for the same id) rule files `(origin, text)`.
    pub fn builtin_with(extra: &[(String, String)]) -> Result<RuleBook, PlanError> {
        let countries = Countries::parse(BUILTIN_COUNTRIES, "builtin countries (crates/planner/data/countries.toml)")?;
        let mut texts: Vec<(String, &str)> = BUILTIN_RULES
            .iter()
            .map(|(id, text)| (format!("builtin rules (crates/planner/data/rules/{id}.toml)"), *text))
            .collect();
        texts.extend(extra.iter().map(|(origin, text)| (origin.clone(), text.as_str())));
        RuleBook::from_texts(countries, &texts)
    }

    pub fn set(&self, id: &str) -> Result<&RuleSet, PlanError> {
        self.sets.iter().find(|s| s.id == id).ok_or_else(|| PlanError::unknown_name("rule set", id, self.ids()))
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(|s| s.id.as_str())
    }

    /// Chips a rule names that the catalog lacks (such a line can never apply): one message each.
    pub fn unknown_chips(&self, catalog: &Catalog) -> Vec<String> {
        let mut out = Vec::new();
        for set in &self.sets {
            for line in &set.licenses {
                for chip in &line.chips {
                    if catalog.chip(chip).is_err() {
                        out.push(format!(
                            "rule set {}: license line {:?} names chip {chip:?}, which {} lacks; the line cannot apply",
                            set.id, line.id, catalog.origin
                        ));
                    }
                }
            }
        }
        out
    }
}

fn resolve(r: RawRuleSet, done: &[RuleSet], origin: &str) -> Result<RuleSet, PlanError> {
    let base = r.extends.as_ref().and_then(|b| done.iter().find(|s| &s.id == b));
    let (mut classes, mut exemptions, mut licenses, mut memory_items) = match base {
        Some(b) => (b.classes.clone(), b.exemptions.clone(), b.licenses.clone(), b.memory_items.clone()),
        None => (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
    };
    for id in &r.remove_licenses {
        let before = licenses.len();
        licenses.retain(|l| &l.id != id);
        if licenses.len() == before {
            return Err(PlanError::data(origin, format!("remove_licenses: no inherited license line {id:?}")));
        }
    }
    for c in r.classes {
        match classes.iter_mut().find(|x| x.id == c.id) {
            Some(x) => *x = c,
            None => classes.push(c),
        }
    }
    exemptions.extend(r.exemptions);
    licenses.extend(r.licenses);
    memory_items.extend(r.memory_items);
    Ok(RuleSet {
        id: r.id,
        extends: r.extends,
        title: r.title,
        citation: r.citation,
        url: r.url,
        published: r.published,
        effective: r.effective,
        supersedes: r.supersedes,
        summary: r.summary,
        notes: r.notes,
        classes,
        exemptions,
        licenses,
        memory_items,
    })
}

fn check(set: &RuleSet, countries: &Countries, origin: &str) -> Result<(), PlanError> {
    let err = |what: String| PlanError::data(origin, format!("rule set {:?}: {what}", set.id));
    if set.id.trim().is_empty() {
        return Err(err("empty id".into()));
    }
    if set.classes.is_empty() {
        return Err(err("no [[class]]".into()));
    }
    for class in &set.classes {
        if class.clauses.is_empty() || class.clauses.iter().any(|c| c.all.is_empty()) {
            return Err(err(format!("class {}: every clause needs at least one condition", class.id)));
        }
    }
    let check_dest = |d: &Destinations, what: &str| -> Result<(), PlanError> {
        for g in d.groups.iter().chain(&d.except_groups) {
            if !countries.groups.contains_key(g) {
                return Err(err(format!("{what}: country group {g:?} is not defined in the countries data")));
            }
        }
        for c in d.countries.iter().chain(&d.except_countries) {
            if !countries.countries.contains_key(c) {
                return Err(err(format!("{what}: destination {c:?} is not defined in the countries data")));
            }
        }
        Ok(())
    };
    for line in &set.licenses {
        if line.classes.is_empty() && line.chips.is_empty() {
            return Err(err(format!("license {:?} names neither classes nor chips", line.id)));
        }
        if let Some(c) = line.classes.iter().find(|c| !set.classes.iter().any(|k| &k.id == *c)) {
            return Err(err(format!("license {:?} names class {c:?}, which the rule set does not define", line.id)));
        }
        if matches!(line.requirement, Requirement::None) {
            return Err(err(format!("license {:?}: requirement none makes no sense", line.id)));
        }
        check_dest(&line.destinations, &format!("license {:?}", line.id))?;
        for ex in &line.exceptions {
            if let Some(d) = &ex.except_destinations {
                check_dest(d, &format!("exception {:?}", ex.id))?;
            }
            if ex.effect >= line.requirement {
                return Err(err(format!("exception {:?} must be milder than its line's requirement", ex.id)));
            }
            match (ex.effect, ex.quota_tpp_per_year) {
                (Requirement::Quota, Some(q)) if q.is_finite() && q > 0.0 => {}
                (Requirement::Quota, _) => {
                    return Err(err(format!("exception {:?}: a quota needs quota_tpp_per_year > 0", ex.id)))
                }
                (_, Some(_)) => {
                    return Err(err(format!("exception {:?}: quota_tpp_per_year without effect = quota", ex.id)))
                }
                _ => {}
            }
        }
    }
    for m in &set.memory_items {
        if !m.threshold_gbs_per_mm2.is_finite() || m.threshold_gbs_per_mm2 <= 0.0 {
            return Err(err(format!("memory item {}: threshold must be positive", m.id)));
        }
    }
    Ok(())
}

/// Where a chip falls under a rule set.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Class {
    Controlled {
        class: String,
        clause: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        systems: Option<String>,
        cite: String,
    },
    NotControlled {
        #[serde(skip_serializing_if = "Option::is_none")]
        exemption: Option<String>,
    },
    /// The answer depends on figures the catalog lacks; `candidates` are the possible answers.
    Unknown { candidates: Vec<String>, missing: Vec<String> },
}

pub const NOT_CONTROLLED: &str = "not controlled by 3A090";

impl Class {
    /// `3A090.a`, `not controlled by 3A090`, or `unknown`.
    pub fn label(&self) -> &str {
        match self {
            Class::Controlled { class, .. } => class,
            Class::NotControlled { .. } => NOT_CONTROLLED,
            Class::Unknown { .. } => "unknown",
        }
    }

    /// The label plus why: the clause, the exemption, or the missing figures.
    pub fn detail(&self) -> String {
        match self {
            Class::Controlled { clause, .. } => format!("by {clause}"),
            Class::NotControlled { exemption: Some(e) } => format!("by {e}"),
            Class::NotControlled { exemption: None } => "below every threshold".into(),
            Class::Unknown { candidates, missing } => {
                format!("needs {} ({})", missing.join(", "), candidates.join(" or "))
            }
        }
    }
}

/// The figures the rules look at, for one chip.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub tpp: Quantity,
    pub performance_density: Quantity,
    pub io_bandwidth: Quantity,
}

impl Metrics {
    pub fn of(chip: &Chip) -> Metrics {
        Metrics {
            tpp: chip.tpp_per_ic(),
            performance_density: chip.performance_density(),
            io_bandwidth: chip.io_bandwidth_per_ic(),
        }
    }

    fn eval(&self, chip: &Chip, c: &Condition) -> Truth {
        match c {
            Condition::Metric { metric, op, value } => {
                let q = match metric {
                    Metric::Tpp => &self.tpp,
                    Metric::PerformanceDensity => &self.performance_density,
                    Metric::IoBandwidth => &self.io_bandwidth,
                };
                q.compare(*op, *value)
            }
            Condition::Flag { flag: Flag::Datacenter, is } => Truth::from_bool(chip.datacenter == *is),
        }
    }

    fn eval_all(&self, chip: &Chip, conditions: &[Condition]) -> Truth {
        Truth::all(conditions.iter().map(|c| self.eval(chip, c)))
    }
}

/// A chip's classification under one rule set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    pub chip: String,
    pub rule_set: String,
    pub metrics: Metrics,
    pub class: Class,
    /// What the rule set's memory items say about the chip's memory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<String>,
}

impl RuleSet {
    /// Classifies one chip: the first class whose clauses hold, unless an exemption applies; unknown
    /// when an earlier class, or the exemption, cannot be decided.
    pub fn classify(&self, chip: &Chip) -> Classification {
        let metrics = Metrics::of(chip);
        let mut pending: Vec<String> = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        let add_missing = |missing: &mut Vec<String>, m: Vec<String>| {
            for x in m {
                if !missing.contains(&x) {
                    missing.push(x);
                }
            }
        };
        let mut found: Option<Class> = None;
        for class in &self.classes {
            let mut class_truth = Truth::False;
            let mut clause_id = None;
            for clause in &class.clauses {
                match metrics.eval_all(chip, &clause.all) {
                    Truth::True => {
                        class_truth = Truth::True;
                        clause_id = Some(clause.id.clone());
                        break;
                    }
                    Truth::Unknown(m) => class_truth = Truth::any([class_truth, Truth::Unknown(m)]),
                    Truth::False => {}
                }
            }
            match class_truth {
                Truth::True => {
                    found = Some(Class::Controlled {
                        class: class.id.clone(),
                        clause: clause_id.unwrap_or_default(),
                        systems: class.systems.clone(),
                        cite: class.cite.clone(),
                    });
                    break;
                }
                Truth::Unknown(m) => {
                    pending.push(class.id.clone());
                    add_missing(&mut missing, m);
                }
                Truth::False => {}
            }
        }
        // The exemption (Note 2) takes an item out whatever its class.
        let exemption = Truth::any(self.exemptions.iter().map(|e| metrics.eval_all(chip, &e.all)));
        let class = if exemption == Truth::True {
            let id =
                self.exemptions.iter().find(|e| metrics.eval_all(chip, &e.all) == Truth::True).map(|e| e.id.clone());
            Class::NotControlled { exemption: id }
        } else {
            // Every answer still possible: the undecided classes, then the one that matched (or none).
            let mut outcomes = pending;
            outcomes.push(match &found {
                Some(c) => c.label().to_string(),
                None => NOT_CONTROLLED.to_string(),
            });
            if let Truth::Unknown(m) = exemption {
                add_missing(&mut missing, m);
                if !outcomes.iter().any(|o| o == NOT_CONTROLLED) {
                    outcomes.push(NOT_CONTROLLED.to_string());
                }
            }
            if outcomes.len() == 1 {
                found.unwrap_or(Class::NotControlled { exemption: None })
            } else {
                Class::Unknown { candidates: outcomes, missing }
            }
        };
        let memory = self
            .memory_items
            .iter()
            .filter(|m| chip.memory_type.as_deref().is_some_and(|t| m.memory_types.iter().any(|x| x == t)))
            .map(|m| format!("{}: {}", m.id, m.co_packaged))
            .collect();
        Classification { chip: chip.id.clone(), rule_set: self.id.clone(), metrics, class, memory }
    }

    /// Judges a chip for a destination: its class, and every license line that reaches it there.
    pub fn judge(&self, chip: &Chip, countries: &Countries, region: &str) -> Result<Judgement, PlanError> {
        let (code, name) = countries.resolve(region)?;
        let classification = self.classify(chip);
        let metrics = &classification.metrics;
        let mut findings = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut notes = Vec::new();
        for line in &self.licenses {
            if code == "US" && !line.domestic {
                continue;
            }
            if !line.destinations.contains(countries, &code) {
                continue;
            }
            if line.requires_ear && !chip.subject_to_ear {
                let why = chip.subject_to_ear_note.as_deref().unwrap_or("not subject to the EAR");
                notes.push(format!("{} does not reach {} ({why})", line.id, chip.id));
                continue;
            }
            let applies = if line.chips.iter().any(|c| c == &chip.id) {
                Truth::True
            } else {
                match &classification.class {
                    Class::Controlled { class, .. } => Truth::from_bool(line.classes.contains(class)),
                    Class::NotControlled { .. } => Truth::False,
                    Class::Unknown { candidates, missing } => {
                        if candidates.iter().any(|c| line.classes.contains(c)) {
                            Truth::Unknown(missing.clone())
                        } else {
                            Truth::False
                        }
                    }
                }
            };
            match applies {
                Truth::False => continue,
                Truth::Unknown(m) => {
                    open.push(format!(
                        "{} applies if the chip is {}; needs {}",
                        line.id,
                        line.classes.join(" or "),
                        m.join(", ")
                    ));
                    continue;
                }
                Truth::True => {}
            }
            let mut finding = Finding {
                rule: line.id.clone(),
                requirement: line.requirement,
                exception: None,
                quota_tpp_per_year: None,
                review: line.review.clone(),
                cite: line.cite.clone(),
            };
            for ex in &line.exceptions {
                let class_ok = ex.classes.is_empty() || ex.classes.iter().any(|c| c == classification.class.label());
                let dest_ok = ex.except_destinations.as_ref().is_none_or(|d| !d.contains(countries, &code));
                if class_ok && dest_ok && metrics.eval_all(chip, &ex.all) == Truth::True {
                    finding.requirement = ex.effect;
                    finding.exception = Some(format!("{}: {}", ex.id, ex.text));
                    finding.quota_tpp_per_year = ex.quota_tpp_per_year;
                    break;
                }
            }
            findings.push(finding);
        }
        let worst = findings.iter().map(|f| f.requirement).max().unwrap_or(Requirement::None);
        let verdict = if !open.is_empty() && worst < Requirement::License {
            Verdict::Unknown { reason: open.join("; ") }
        } else {
            match worst {
                Requirement::None => Verdict::Allowed,
                Requirement::Notification => Verdict::Notification,
                Requirement::Quota => Verdict::Quota {
                    tpp_per_year: findings.iter().filter_map(|f| f.quota_tpp_per_year).fold(f64::INFINITY, f64::min),
                },
                Requirement::License => Verdict::License,
                Requirement::Risk => Verdict::Risk,
            }
        };
        Ok(Judgement {
            chip: chip.id.clone(),
            rule_set: self.id.clone(),
            region: code,
            region_name: name.to_string(),
            classification,
            verdict,
            findings,
            notes,
        })
    }
}

/// A license line that reaches a chip at a destination, after its exceptions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub requirement: Requirement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_tpp_per_year: Option<f64>,
    pub review: String,
    pub cite: String,
}

/// Whether a chip may go to a destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// No license requirement reaches it.
    Allowed,
    /// Allowed after notifying the regulator.
    Notification,
    /// Allowed up to this much TPP per consignee per year.
    Quota {
        tpp_per_year: f64,
    },
    License,
    /// Guidance warns against dealing in it at all.
    Risk,
    /// Depends on a classification the data cannot decide.
    Unknown {
        reason: String,
    },
}

impl Verdict {
    pub fn label(&self) -> String {
        match self {
            Verdict::Allowed => "no license required".into(),
            Verdict::Notification => "allowed after notification (NAC)".into(),
            Verdict::Quota { tpp_per_year } => {
                format!("allowed up to {} TPP/year per consignee", crate::interval::short(*tpp_per_year))
            }
            Verdict::License => "license required".into(),
            Verdict::Risk => "enforcement risk (guidance)".into(),
            Verdict::Unknown { .. } => "unknown".into(),
        }
    }
}

/// A chip judged for a destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    pub chip: String,
    pub rule_set: String,
    pub region: String,
    pub region_name: String,
    pub classification: Classification,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Judgement {
    /// One line: the verdict and the rule behind it.
    pub fn explain(&self) -> String {
        let mut s = format!("{} in {} under {}", self.verdict.label(), self.region, self.rule_set);
        if let Some(f) = self.findings.iter().max_by_key(|f| f.requirement) {
            s.push_str(&format!(" ({}: {}", self.classification.class.label(), f.rule));
            if let Some(e) = &f.exception {
                s.push_str(&format!("; {e}"));
            }
            s.push(')');
        }
        if let Verdict::Unknown { reason } = &self.verdict {
            s.push_str(&format!(": {reason}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::catalog_with;
    use proptest::prelude::*;

    fn book() -> RuleBook {
        RuleBook::builtin().unwrap_or_else(|e| panic!("{e}"))
    }

    fn class_of(set: &str, chip: &str) -> Classification {
        let cat = Catalog::builtin().unwrap();
        book().set(set).unwrap().classify(cat.chip(chip).unwrap())
    }

    #[test]
    fn every_rule_set_is_listed_with_its_citation() {
        let b = book();
        let ids: Vec<&str> = b.ids().collect();
        assert_eq!(ids, ["us-2022-10", "us-2023-10", "us-2024-12", "us-2025-01", "us-2025-05"]);
        assert!(b.set("us-2023-10").unwrap().citation.starts_with("88 FR 73458"));
        assert!(b.set("us-2022-10").unwrap().citation.starts_with("87 FR 62186"));
        assert!(b.set("us-2024-12").unwrap().citation.starts_with("89 FR 96790"));
        assert!(b.set("us-2025-01").unwrap().citation.starts_with("90 FR 4544"));
        assert!(b.unknown_chips(&Catalog::builtin().unwrap()).is_empty());
    }

    // Worked examples: the answers follow from the rule text and the datasheet figures.

    #[test]
    fn h100_is_3a090a_under_2022_and_2023() {
        let c = class_of("us-2023-10", "h100-sxm");
        let tpp = c.metrics.tpp.value().unwrap();
        assert!((tpp - 15_831.2).abs() < 1.0, "TPP {tpp}");
        let pd = c.metrics.performance_density.value().unwrap();
        assert!((pd - 19.45).abs() < 0.01, "PD {pd}");
        assert_eq!(c.class.label(), "3A090.a");
        assert!(matches!(&c.class, Class::Controlled { clause, .. } if clause == "3A090.a.1"));
        assert_eq!(class_of("us-2022-10", "h100-sxm").class.label(), "3A090.a");
    }

    #[test]
    fn a100_is_controlled_under_2022_and_2023() {
        let c = class_of("us-2023-10", "a100-sxm");
        assert_eq!(c.metrics.tpp.value(), Some(4992.0));
        assert_eq!(c.class.label(), "3A090.a");
        let c22 = class_of("us-2022-10", "a100-sxm");
        assert_eq!(c22.metrics.io_bandwidth.value(), Some(664.0));
        assert_eq!(c22.class.label(), "3A090.a");
    }

    #[test]
    fn a800_escapes_2022_by_its_io_rate_but_not_2023() {
        let c22 = class_of("us-2022-10", "a800");
        assert_eq!(c22.metrics.io_bandwidth.value(), Some(464.0));
        assert_eq!(c22.class.label(), NOT_CONTROLLED);
        assert_eq!(class_of("us-2023-10", "a800").class.label(), "3A090.a");
        // Same for the H800 (NVLink 400 GB/s), whose FP32 rate is unpublished: TPP >= 15,830 decides.
        assert_eq!(class_of("us-2022-10", "h800").class.label(), NOT_CONTROLLED);
        assert_eq!(class_of("us-2023-10", "h800").class.label(), "3A090.a");
    }

    #[test]
    fn h20_is_outside_both_a_and_b() {
        let c = class_of("us-2023-10", "h20");
        assert_eq!(c.metrics.tpp.value(), Some(2368.0));
        let pd = c.metrics.performance_density.value().unwrap();
        assert!((pd - 2.909).abs() < 0.001, "PD {pd}");
        assert_eq!(c.class.label(), NOT_CONTROLLED);
        assert_eq!(class_of("us-2022-10", "h20").class.label(), NOT_CONTROLLED);
    }

    #[test]
    fn unknown_die_area_leaves_mid_range_chips_unknown_and_says_why() {
        let c = class_of("us-2023-10", "inferentia2");
        assert_eq!(c.metrics.tpp.value(), Some(3040.0));
        match &c.class {
            Class::Unknown { missing, candidates } => {
                assert_eq!(missing, &vec!["die_area_mm2".to_string()]);
                assert!(candidates.contains(&"3A090.a".to_string()) && candidates.contains(&"3A090.b".to_string()));
            }
            other => panic!("{other:?}"),
        }
        // A high TPP decides without the area; a low one too.
        assert_eq!(class_of("us-2023-10", "b200").class.label(), "3A090.a");
        assert_eq!(class_of("us-2023-10", "cpu-2x-epyc-9654").class.label(), NOT_CONTROLLED);
    }

    /// A test chip with the given dense INT8 TOPS (TPP = 8 x TOPS), die area and I/O.
    fn test_chip(int8: f64, area: f64, io: f64, datacenter: bool) -> Chip {
        let fields = format!(
            "fp32_tflops = {{ unsupported = true, source = \"s\" }}\nfp16_tflops = {{ unsupported = true, source = \"s\" }}\n\
             fp8_tflops = {{ unsupported = true, source = \"s\" }}\nfp4_tflops = {{ unsupported = true, source = \"s\" }}\n\
             int8_tops = {{ value = {int8:?}, source = \"s\" }}\ndie_area_mm2 = {{ value = {area:?}, source = \"s\" }}\n\
             interconnect_gbs = {{ value = {io:?}, source = \"s\" }}\nhost_io_gbs = {{ value = 0.0, source = \"s\" }}"
        );
        catalog_with("t", datacenter, &fields).chips.remove(0)
    }

    fn label(set: &str, chip: &Chip) -> String {
        book().set(set).unwrap().classify(chip).class.label().to_string()
    }

    #[test]
    fn boundaries_2023_tpp_and_density() {
        let l = |tpp: f64, pd: f64| label("us-2023-10", &test_chip(tpp / 8.0, tpp / pd, 0.0, true));
        // a.1 at 4800.
        assert_eq!(l(4800.0, 1.0), "3A090.a");
        assert_eq!(l(4799.0, 1.0), NOT_CONTROLLED);
        // a.2: TPP 1600 and PD 5.92.
        assert_eq!(l(2960.0, 5.92), "3A090.a");
        assert_eq!(l(1600.0, 6.0), "3A090.a");
        assert_eq!(l(1599.0, 6.0), NOT_CONTROLLED);
        // b.1: 2400 <= TPP < 4800 and 1.6 <= PD < 5.92.
        assert_eq!(l(2400.0, 1.6), "3A090.b");
        assert_eq!(l(2399.0, 1.6), NOT_CONTROLLED);
        assert_eq!(l(4000.0, 1.59), NOT_CONTROLLED);
        // b.2: TPP >= 1600 and 3.2 <= PD < 5.92.
        assert_eq!(l(1600.0, 3.2), "3A090.b");
        assert_eq!(l(1600.0, 3.19), NOT_CONTROLLED);
        assert_eq!(l(1600.0, 5.91), "3A090.b");
    }

    #[test]
    fn boundaries_2022_io_and_tpp() {
        let l = |tpp: f64, io: f64| label("us-2022-10", &test_chip(tpp / 8.0, 1000.0, io, true));
        assert_eq!(l(4800.0, 600.0), "3A090.a");
        assert_eq!(l(4800.0, 599.9), NOT_CONTROLLED);
        assert_eq!(l(4799.0, 600.0), NOT_CONTROLLED);
    }

    #[test]
    fn note_2_takes_non_datacenter_parts_below_4800_out() {
        // PD 4.0, TPP 3000 would be 3A090.b (b.1) for a datacenter part.
        assert_eq!(label("us-2023-10", &test_chip(375.0, 750.0, 0.0, true)), "3A090.b");
        let c = book().set("us-2023-10").unwrap().classify(&test_chip(375.0, 750.0, 0.0, false));
        assert_eq!(c.class, Class::NotControlled { exemption: Some("Note 2 to 3A090".into()) });
        // At 4800 the note no longer applies: a gaming card at TPP 5,000 is 3A090.a.
        assert_eq!(label("us-2023-10", &test_chip(625.0, 1000.0, 0.0, false)), "3A090.a");
    }

    #[test]
    fn regions_are_judged_by_country_group() {
        let cat = Catalog::builtin().unwrap();
        let b = book();
        let set = b.set("us-2023-10").unwrap();
        let verdict =
            |chip: &str, region: &str| set.judge(cat.chip(chip).unwrap(), &b.countries, region).unwrap().verdict;
        assert_eq!(verdict("h100-sxm", "CN"), Verdict::License);
        assert_eq!(verdict("h100-sxm", "hk"), Verdict::License, "Hong Kong is treated as China");
        assert_eq!(verdict("h100-sxm", "AE"), Verdict::License, "D:4 and not A:5/A:6");
        assert_eq!(verdict("h100-sxm", "DE"), Verdict::Allowed);
        assert_eq!(verdict("h100-sxm", "SG"), Verdict::Allowed, "A:6 is excluded");
        assert_eq!(verdict("h100-sxm", "IN"), Verdict::Allowed, "A:5 is excluded");
        assert_eq!(verdict("h100-sxm", "US"), Verdict::Allowed);
        assert_eq!(verdict("h20", "CN"), Verdict::Allowed);
        assert!(matches!(verdict("inferentia2", "CN"), Verdict::Unknown { .. }));
        assert_eq!(verdict("inferentia2", "DE"), Verdict::Allowed, "no line reaches Germany whatever the class");
        // 2022: China and Macau only.
        let s22 = b.set("us-2022-10").unwrap();
        assert_eq!(s22.judge(cat.chip("h100-sxm").unwrap(), &b.countries, "AE").unwrap().verdict, Verdict::Allowed);
        assert_eq!(s22.judge(cat.chip("a800").unwrap(), &b.countries, "CN").unwrap().verdict, Verdict::Allowed);
    }

    #[test]
    fn ai_diffusion_tiers_and_the_2025_guidance() {
        let cat = Catalog::builtin().unwrap();
        let b = book();
        let s = b.set("us-2025-01").unwrap();
        let v = |chip: &str, region: &str| s.judge(cat.chip(chip).unwrap(), &b.countries, region).unwrap().verdict;
        assert_eq!(v("h100-sxm", "DE"), Verdict::Allowed, "Tier 1");
        assert_eq!(v("h100-sxm", "SG"), Verdict::Quota { tpp_per_year: 26_900_000.0 }, "Tier 2 under LPP");
        assert_eq!(v("h100-sxm", "AE"), Verdict::License, "D:4: the 2023 line still requires a license");
        assert_eq!(v("h100-sxm", "CN"), Verdict::License, "Tier 3");
        let s = b.set("us-2025-05").unwrap();
        let v = |chip: &str, region: &str| s.judge(cat.chip(chip).unwrap(), &b.countries, region).unwrap().verdict;
        assert_eq!(v("h100-sxm", "SG"), Verdict::Allowed, "diffusion not enforced");
        assert_eq!(v("h20", "CN"), Verdict::License, "is-informed letter");
        assert_eq!(v("h20", "DE"), Verdict::Allowed);
        assert_eq!(v("ascend-910b", "CN"), Verdict::Risk);
        assert_eq!(v("ascend-910b", "US"), Verdict::Risk, "guidance on use reaches the U.S. too");
        // Before the guidance, U.S. license lines do not reach a chip not subject to the EAR.
        let s23 = b.set("us-2023-10").unwrap();
        let j = s23.judge(cat.chip("ascend-910b").unwrap(), &b.countries, "CN").unwrap();
        assert_eq!(j.verdict, Verdict::Allowed);
        assert!(j.notes[0].contains("does not reach ascend-910b"), "{:?}", j.notes);
    }

    #[test]
    fn unknown_regions_and_rule_sets_are_errors() {
        let cat = Catalog::builtin().unwrap();
        let b = book();
        let err = b.set("us-2019").unwrap_err().to_string();
        assert!(err.starts_with("unknown rule set \"us-2019\" (known: us-2022-10"), "{err}");
        let err = b.set("us-2023-10").unwrap().judge(cat.chip("h100-sxm").unwrap(), &b.countries, "XX").unwrap_err();
        assert!(err.to_string().starts_with("unknown region \"XX\""), "{err}");
    }

    #[test]
    fn malformed_rule_sets_name_the_problem() {
        let countries = || Countries::parse(BUILTIN_COUNTRIES, "countries").unwrap();
        let base = "id = \"x\"\ntitle = \"t\"\ncitation = \"c\"\nurl = \"u\"\npublished = \"2020\"\neffective = \"2020\"\nsummary = \"s\"\n";
        let cases = [
            (base.to_string(), "no [[class]]"),
            (format!("{base}extends = \"nope\"\n"), "extends Some(\"nope\")"),
            (
                format!("{base}[[class]]\nid = \"A\"\ncite = \"c\"\n[[class.clause]]\nid = \"a\"\ntext = \"t\"\nall = [{{ metric = \"tpp\", op = \">=\" }}]\n"),
                "a condition is",
            ),
            (
                format!("{base}[[class]]\nid = \"A\"\ncite = \"c\"\n[[class.clause]]\nid = \"a\"\ntext = \"t\"\nall = [{{ metric = \"tpp\", op = \"=>\", value = 1.0 }}]\n"),
                "unknown variant",
            ),
            (
                format!("{base}[[class]]\nid = \"A\"\ncite = \"c\"\n[[class.clause]]\nid = \"a\"\ntext = \"t\"\nall = [{{ metric = \"tpp\", op = \">=\", value = 1.0 }}]\n\
                         [[license]]\nid = \"l\"\nclasses = [\"B\"]\ndestinations = {{ countries = [\"CN\"] }}\nrequirement = \"license\"\nreview = \"r\"\ncite = \"c\"\n"),
                "names class \"B\"",
            ),
            (
                format!("{base}[[class]]\nid = \"A\"\ncite = \"c\"\n[[class.clause]]\nid = \"a\"\ntext = \"t\"\nall = [{{ metric = \"tpp\", op = \">=\", value = 1.0 }}]\n\
                         [[license]]\nid = \"l\"\nclasses = [\"A\"]\ndestinations = {{ groups = [\"Z:9\"] }}\nrequirement = \"license\"\nreview = \"r\"\ncite = \"c\"\n"),
                "country group \"Z:9\"",
            ),
        ];
        for (text, needle) in cases {
            let err =
                RuleBook::from_texts(countries(), &[("r.toml".to_string(), text.as_str())]).unwrap_err().to_string();
            assert!(err.starts_with("r.toml: ") && err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// More TPP at the same die area never loosens the control (not controlled < .b < .a).
        #[test]
        fn control_is_monotone_in_tpp_and_density(tpp in 100.0f64..20_000.0, extra in 0.0f64..10_000.0, area in 100.0f64..1500.0,
                                                   shrink in 0.3f64..=1.0) {
            let rank = |l: &str| match l { "3A090.a" => 2, "3A090.b" => 1, _ => 0 };
            let set = book();
            let set = set.set("us-2023-10").unwrap();
            let base = rank(set.classify(&test_chip(tpp / 8.0, area, 0.0, true)).class.label());
            let more_tpp = rank(set.classify(&test_chip((tpp + extra) / 8.0, area, 0.0, true)).class.label());
            let denser = rank(set.classify(&test_chip(tpp / 8.0, area * shrink, 0.0, true)).class.label());
            prop_assert!(more_tpp >= base);
            prop_assert!(denser >= base);
        }

        /// Truncated rule files give errors, never panics.
        #[test]
        fn truncated_rule_files_do_not_panic(which in 0usize..5, cut in 0usize..4000) {
            let text = BUILTIN_RULES[which].1;
            let cut = cut.min(text.len());
            if let Ok(t) = std::str::from_utf8(&text.as_bytes()[..cut]) {
                let countries = Countries::parse(BUILTIN_COUNTRIES, "c").unwrap();
                let _ = RuleBook::from_texts(countries, &[("cut".to_string(), t)]);
            }
            let cut = cut.min(BUILTIN_COUNTRIES.len());
            if let Ok(t) = std::str::from_utf8(&BUILTIN_COUNTRIES.as_bytes()[..cut]) {
                let _ = Countries::parse(t, "cut");
            }
        }
    }
}
