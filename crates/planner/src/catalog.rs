//! The hardware catalog: accelerators with every figure cited, read from `data/catalog.toml` (or a
//! file of the same shape) and checked before use.
//!
//! Invariant: a [`Chip`]'s figures are finite and non-negative, and each known or unsupported
//! figure names a source declared in the catalog. An unknown figure stays [`Spec::Unknown`]; the
//! computations that need it return [`PlanError::MissingFigure`] or an open [`Quantity`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::interval::Quantity;
use crate::PlanError;

/// The catalog compiled into the binary.
pub const BUILTIN_CATALOG: &str = include_str!("../data/catalog.toml");

/// A numeric precision the catalog gives dense throughput for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Fp8,
    Int8,
    Fp4,
}

impl Precision {
    pub const ALL: [Precision; 5] = [Precision::Fp32, Precision::Fp16, Precision::Fp8, Precision::Int8, Precision::Fp4];

    /// The bit length of the operation, as the TPP definition counts it.
    pub fn bits(self) -> f64 {
        match self {
            Precision::Fp32 => 32.0,
            Precision::Fp16 => 16.0,
            Precision::Fp8 | Precision::Int8 => 8.0,
            Precision::Fp4 => 4.0,
        }
    }

    /// The catalog field holding this precision's throughput.
    pub fn field(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32_tflops",
            Precision::Fp16 => "fp16_tflops",
            Precision::Fp8 => "fp8_tflops",
            Precision::Int8 => "int8_tops",
            Precision::Fp4 => "fp4_tflops",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
            Precision::Fp4 => "fp4",
        }
    }

    /// Parses `fp32`, `fp16`/`bf16`, `fp8`, `int8`, `fp4`.
    pub fn parse(s: &str) -> Result<Precision, PlanError> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "fp16" | "f16" | "bf16" => Ok(Precision::Fp16),
            "fp8" => Ok(Precision::Fp8),
            "int8" | "i8" => Ok(Precision::Int8),
            "fp4" => Ok(Precision::Fp4),
            _ => Err(PlanError::unknown_name("precision", s, ["fp32", "fp16", "bf16", "fp8", "int8", "fp4"])),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Vendor,
    Regulation,
    Secondary,
    Measured,
    Derived,
    Estimate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl SourceKind {
    /// How far a figure from this kind of source is trusted unless the field says otherwise.
    pub fn default_confidence(self) -> Confidence {
        match self {
            SourceKind::Vendor | SourceKind::Regulation | SourceKind::Measured => Confidence::High,
            SourceKind::Secondary | SourceKind::Derived => Confidence::Medium,
            SourceKind::Estimate => Confidence::Low,
        }
    }
}

/// Where figures come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub kind: SourceKind,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// One catalog figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Spec {
    Known {
        value: f64,
        source: String,
        confidence: Confidence,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The hardware has no such path (e.g. FP4 on Hopper): not a gap in the data.
    Unsupported {
        source: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Unknown {
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

impl Spec {
    pub fn value(&self) -> Option<f64> {
        match self {
            Spec::Known { value, .. } => Some(*value),
            _ => None,
        }
    }
}

/// A purchase price range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Price {
    pub low: f64,
    pub high: f64,
    pub date: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An on-demand rental price per device-hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rental {
    pub usd_per_hour: f64,
    pub date: String,
    pub source: String,
    pub confidence: Confidence,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChipKind {
    Gpu,
    Accelerator,
    Cpu,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Purchase,
    /// Rented only (Inferentia, TPU).
    Cloud,
}

/// One accelerator (module, card or server), every figure per device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chip {
    pub id: String,
    pub name: String,
    pub vendor: String,
    pub kind: ChipKind,
    pub origin: String,
    pub subject_to_ear: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_to_ear_note: Option<String>,
    /// Designed or marketed for use in datacenters (Note 2 to 3A090).
    pub datacenter: bool,
    /// Integrated circuits per device; the rules classify one IC.
    pub ics: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dies: Option<u32>,
    /// CPU cores the throughput figures cover (CPUs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_type: Option<String>,
    pub availability: Availability,
    pub fp32_tflops: Spec,
    pub fp16_tflops: Spec,
    pub fp8_tflops: Spec,
    pub int8_tops: Spec,
    pub fp4_tflops: Spec,
    pub memory_gb: Spec,
    pub memory_bandwidth_gbs: Spec,
    pub interconnect_gbs: Spec,
    pub host_io_gbs: Spec,
    pub tdp_w: Spec,
    /// Applicable die area of one IC (non-planar logic dies), mm2.
    pub die_area_mm2: Spec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_usd: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rental_usd_per_hour: Option<Rental>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Chip {
    /// Dense throughput at a precision, per device (TFLOPS or TOPS).
    pub fn throughput(&self, p: Precision) -> &Spec {
        match p {
            Precision::Fp32 => &self.fp32_tflops,
            Precision::Fp16 => &self.fp16_tflops,
            Precision::Fp8 => &self.fp8_tflops,
            Precision::Int8 => &self.int8_tops,
            Precision::Fp4 => &self.fp4_tflops,
        }
    }

    /// Every figure by catalog field name.
    pub fn figures(&self) -> [(&'static str, &Spec); 11] {
        [
            ("fp32_tflops", &self.fp32_tflops),
            ("fp16_tflops", &self.fp16_tflops),
            ("fp8_tflops", &self.fp8_tflops),
            ("int8_tops", &self.int8_tops),
            ("fp4_tflops", &self.fp4_tflops),
            ("memory_gb", &self.memory_gb),
            ("memory_bandwidth_gbs", &self.memory_bandwidth_gbs),
            ("interconnect_gbs", &self.interconnect_gbs),
            ("host_io_gbs", &self.host_io_gbs),
            ("tdp_w", &self.tdp_w),
            ("die_area_mm2", &self.die_area_mm2),
        ]
    }

    /// A figure as a range: exact when known, `[0, inf]` naming the field when unknown, and 0
    /// when the hardware has no such path.
    pub fn quantity(&self, field: &str, spec: &Spec) -> Quantity {
        match spec {
            Spec::Known { value, .. } => Quantity::exact(*value),
            Spec::Unsupported { .. } => Quantity::exact(0.0),
            Spec::Unknown { .. } => Quantity::unknown(field),
        }
    }

    /// A known figure, or the error naming it and what needed it.
    pub fn require(&self, field: &str, spec: &Spec, needed_for: &str) -> Result<f64, PlanError> {
        match spec {
            Spec::Known { value, .. } => Ok(*value),
            Spec::Unsupported { .. } => Err(PlanError::MissingFigure {
                chip: self.id.clone(),
                what: format!("{field} (unsupported by the hardware)"),
                needed_for: needed_for.to_string(),
            }),
            Spec::Unknown { .. } => Err(PlanError::MissingFigure {
                chip: self.id.clone(),
                what: field.to_string(),
                needed_for: needed_for.to_string(),
            }),
        }
    }

    /// Total processing performance of one IC: 2 x MacTOPS x bit length, dense, the maximum over
    /// the catalog's precisions, divided over the device's ICs. An unknown precision leaves the
    /// upper end open.
    pub fn tpp_per_ic(&self) -> Quantity {
        let mut tpp = Quantity::exact(0.0);
        for p in Precision::ALL {
            let spec = self.throughput(p);
            if let Spec::Unsupported { .. } = spec {
                continue;
            }
            tpp = tpp.max(&self.quantity(p.field(), spec).scale(p.bits()));
        }
        tpp.scale(1.0 / f64::from(self.ics))
    }

    /// TPP per IC divided by the applicable die area of one IC.
    pub fn performance_density(&self) -> Quantity {
        self.tpp_per_ic().div(&self.quantity("die_area_mm2", &self.die_area_mm2))
    }

    /// Aggregate bidirectional I/O per IC to anything but memory: interconnect plus host link.
    pub fn io_bandwidth_per_ic(&self) -> Quantity {
        let io = self
            .quantity("interconnect_gbs", &self.interconnect_gbs)
            .add(&self.quantity("host_io_gbs", &self.host_io_gbs));
        io.scale(1.0 / f64::from(self.ics))
    }
}

/// The whole catalog.
#[derive(Clone, Debug, Serialize)]
pub struct Catalog {
    /// Where it was read from (`builtin` or a path), for messages.
    pub origin: String,
    pub sources: BTreeMap<String, Source>,
    pub chips: Vec<Chip>,
}

impl Catalog {
    /// The catalog compiled into the binary.
    pub fn builtin() -> Result<Catalog, PlanError> {
        Catalog::parse(BUILTIN_CATALOG, "builtin catalog (crates/planner/data/catalog.toml)")
    }

    /// Parses and checks a catalog; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, PlanError> {
        let raw: RawCatalog = crate::parse_toml(text, origin)?;
        if raw.schema != 1 {
            return Err(PlanError::data(origin, format!("schema {} is not supported (expected 1)", raw.schema)));
        }
        for (id, s) in &raw.sources {
            if id.trim().is_empty() || s.title.trim().is_empty() {
                return Err(PlanError::data(origin, format!("source {id:?} needs an id and a title")));
            }
        }
        let mut chips: Vec<Chip> = Vec::with_capacity(raw.chips.len());
        for c in raw.chips {
            let chip = c.check(&raw.sources, origin)?;
            if chips.iter().any(|other| other.id == chip.id) {
                return Err(PlanError::data(origin, format!("chip {:?} appears twice", chip.id)));
            }
            chips.push(chip);
        }
        if chips.is_empty() {
            return Err(PlanError::data(origin, "no [[chip]] entries"));
        }
        Ok(Catalog { origin: origin.to_string(), sources: raw.sources, chips })
    }

    pub fn chip(&self, id: &str) -> Result<&Chip, PlanError> {
        self.chips
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| PlanError::unknown_name("chip", id, self.chips.iter().map(|c| c.id.as_str())))
    }

    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.get(id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    schema: u32,
    #[serde(default)]
    sources: BTreeMap<String, Source>,
    #[serde(default, rename = "chip")]
    chips: Vec<RawChip>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    value: Option<f64>,
    source: Option<String>,
    note: Option<String>,
    confidence: Option<Confidence>,
    unknown: Option<bool>,
    unsupported: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    low: f64,
    high: f64,
    date: String,
    source: String,
    confidence: Option<Confidence>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRental {
    value: f64,
    date: String,
    source: String,
    confidence: Option<Confidence>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChip {
    id: String,
    name: String,
    vendor: String,
    kind: ChipKind,
    origin: String,
    subject_to_ear: bool,
    subject_to_ear_note: Option<String>,
    datacenter: bool,
    ics: u32,
    dies: Option<u32>,
    cores: Option<u32>,
    memory_type: Option<String>,
    #[serde(default)]
    availability: Availability,
    fp32_tflops: Option<RawSpec>,
    fp16_tflops: Option<RawSpec>,
    fp8_tflops: Option<RawSpec>,
    int8_tops: Option<RawSpec>,
    fp4_tflops: Option<RawSpec>,
    memory_gb: Option<RawSpec>,
    memory_bandwidth_gbs: Option<RawSpec>,
    interconnect_gbs: Option<RawSpec>,
    host_io_gbs: Option<RawSpec>,
    tdp_w: Option<RawSpec>,
    die_area_mm2: Option<RawSpec>,
    price_usd: Option<RawPrice>,
    rental_usd_per_hour: Option<RawRental>,
    #[serde(default)]
    notes: Vec<String>,
}

/// Largest plausible figure: catches a unit slip (W for kW, GB/s for Gb/s) without judging hardware.
const MAX_FIGURE: f64 = 1e7;

impl RawChip {
    fn check(self, sources: &BTreeMap<String, Source>, origin: &str) -> Result<Chip, PlanError> {
        let id = self.id.clone();
        let err = |what: String| PlanError::data(origin, format!("chip {id:?}: {what}"));
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(err("id must be lowercase letters, digits and '-'".into()));
        }
        if self.name.trim().is_empty() || self.vendor.trim().is_empty() {
            return Err(err("name and vendor must not be empty".into()));
        }
        if self.ics == 0 || self.ics > 64 {
            return Err(err(format!("ics = {} (integrated circuits per device) must be 1 to 64", self.ics)));
        }
        if self.dies == Some(0) || self.cores == Some(0) {
            return Err(err("dies and cores must be at least 1".into()));
        }
        let source_confidence = |field: &str, source: &str| -> Result<Confidence, PlanError> {
            sources
                .get(source)
                .map(|s| s.kind.default_confidence())
                .ok_or_else(|| err(format!("{field}: source {source:?} is not declared in [sources]")))
        };
        let spec = |field: &str, raw: Option<RawSpec>, may_be_unsupported: bool| -> Result<Spec, PlanError> {
            let Some(raw) = raw else { return Ok(Spec::Unknown { note: None }) };
            let flags = [raw.value.is_some(), raw.unknown == Some(true), raw.unsupported == Some(true)];
            if flags.iter().filter(|&&f| f).count() != 1 {
                return Err(err(format!("{field}: give exactly one of value, unknown = true, unsupported = true")));
            }
            if let Some(value) = raw.value {
                if !value.is_finite() || !(0.0..=MAX_FIGURE).contains(&value) {
                    return Err(err(format!("{field}: value {value} must be a number from 0 to {MAX_FIGURE}")));
                }
                let source = raw.source.ok_or_else(|| err(format!("{field}: a value needs a source")))?;
                let confidence = match raw.confidence {
                    Some(c) => {
                        source_confidence(field, &source)?;
                        c
                    }
                    None => source_confidence(field, &source)?,
                };
                return Ok(Spec::Known { value, source, confidence, note: raw.note });
            }
            if raw.unsupported == Some(true) {
                if !may_be_unsupported {
                    return Err(err(format!("{field}: only throughput figures can be unsupported")));
                }
                let source = raw.source.ok_or_else(|| err(format!("{field}: unsupported needs a source")))?;
                source_confidence(field, &source)?;
                return Ok(Spec::Unsupported { source, note: raw.note });
            }
            if raw.source.is_some() || raw.confidence.is_some() {
                return Err(err(format!("{field}: an unknown figure takes only a note")));
            }
            Ok(Spec::Unknown { note: raw.note })
        };
        let price = match self.price_usd {
            None => None,
            Some(p) => {
                if !(p.low.is_finite() && p.high.is_finite() && p.low > 0.0 && p.low <= p.high && p.high <= 1e9) {
                    return Err(err(format!(
                        "price_usd: low {} and high {} must satisfy 0 < low <= high",
                        p.low, p.high
                    )));
                }
                let conf = source_confidence("price_usd", &p.source)?;
                Some(Price {
                    low: p.low,
                    high: p.high,
                    date: p.date,
                    source: p.source,
                    confidence: p.confidence.unwrap_or(conf),
                    note: p.note,
                })
            }
        };
        let rental = match self.rental_usd_per_hour {
            None => None,
            Some(r) => {
                if !(r.value.is_finite() && r.value > 0.0 && r.value <= 1e6) {
                    return Err(err(format!("rental_usd_per_hour: {} must be a positive number", r.value)));
                }
                let conf = source_confidence("rental_usd_per_hour", &r.source)?;
                Some(Rental {
                    usd_per_hour: r.value,
                    date: r.date,
                    source: r.source,
                    confidence: r.confidence.unwrap_or(conf),
                    note: r.note,
                })
            }
        };
        Ok(Chip {
            fp32_tflops: spec("fp32_tflops", self.fp32_tflops, true)?,
            fp16_tflops: spec("fp16_tflops", self.fp16_tflops, true)?,
            fp8_tflops: spec("fp8_tflops", self.fp8_tflops, true)?,
            int8_tops: spec("int8_tops", self.int8_tops, true)?,
            fp4_tflops: spec("fp4_tflops", self.fp4_tflops, true)?,
            memory_gb: spec("memory_gb", self.memory_gb, false)?,
            memory_bandwidth_gbs: spec("memory_bandwidth_gbs", self.memory_bandwidth_gbs, false)?,
            interconnect_gbs: spec("interconnect_gbs", self.interconnect_gbs, false)?,
            host_io_gbs: spec("host_io_gbs", self.host_io_gbs, false)?,
            tdp_w: spec("tdp_w", self.tdp_w, false)?,
            die_area_mm2: spec("die_area_mm2", self.die_area_mm2, false)?,
            price_usd: price,
            rental_usd_per_hour: rental,
            id: self.id,
            name: self.name,
            vendor: self.vendor,
            kind: self.kind,
            origin: self.origin,
            subject_to_ear: self.subject_to_ear,
            subject_to_ear_note: self.subject_to_ear_note,
            datacenter: self.datacenter,
            ics: self.ics,
            dies: self.dies,
            cores: self.cores,
            memory_type: self.memory_type,
            availability: self.availability,
            notes: self.notes,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A one-chip catalog for tests: `fields` is TOML for the chip's figures.
    pub(crate) fn catalog_with(id: &str, datacenter: bool, fields: &str) -> Catalog {
        let text = format!(
            "schema = 1\n[sources]\ns = {{ kind = \"vendor\", title = \"test\" }}\n[[chip]]\nid = \"{id}\"\nname = \"{id}\"\n\
             vendor = \"Test\"\nkind = \"gpu\"\norigin = \"US\"\nsubject_to_ear = true\ndatacenter = {datacenter}\nics = 1\n{fields}\n"
        );
        Catalog::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_builtin_catalog_has_every_chip_the_issue_names() {
        let cat = Catalog::builtin().unwrap();
        for id in [
            "h100-sxm",
            "h100-pcie",
            "h800",
            "h20",
            "a100-sxm",
            "a800",
            "l20",
            "l40s",
            "b200",
            "mi300x",
            "gaudi3",
            "ascend-910b",
            "ascend-910c",
            "qaic-standard",
            "qaic-pro",
            "qaic-ultra",
            "inferentia2",
            "tpu-v5e",
            "cpu-2x-epyc-9654",
            "local-zen3-2c",
        ] {
            cat.chip(id).unwrap();
        }
    }

    #[test]
    fn tpp_is_the_maximum_over_precisions_of_throughput_times_bits() {
        let cat = Catalog::builtin().unwrap();
        let h100 = cat.chip("h100-sxm").unwrap();
        assert_eq!(h100.tpp_per_ic().value(), Some(1978.9 * 8.0));
        let ultra = cat.chip("qaic-ultra").unwrap();
        // Four SoCs: the rules look at one IC; FP32 is unpublished so the figure is a lower bound.
        let tpp = ultra.tpp_per_ic();
        assert_eq!(tpp.lo, 870.0 * 8.0 / 4.0);
        assert_eq!(tpp.missing, vec!["fp32_tflops".to_string()]);
    }

    #[test]
    fn unknown_figures_stay_unknown() {
        let cat = Catalog::builtin().unwrap();
        let b200 = cat.chip("b200").unwrap();
        assert!(matches!(b200.die_area_mm2, Spec::Unknown { .. }));
        let err = b200.require("die_area_mm2", &b200.die_area_mm2, "performance density").unwrap_err();
        assert_eq!(err.to_string(), "b200: die_area_mm2 is unknown, so performance density cannot be computed");
    }

    #[test]
    fn malformed_catalogs_name_the_problem() {
        let cases = [
            ("schema = 2\n", "schema 2"),
            ("schema = 1\n", "no [[chip]]"),
            ("schema = 1\n[[chip]]\nid = \"x\"", "missing field"),
            (
                "schema = 1\n[[chip]]\nid=\"x\"\nname=\"x\"\nvendor=\"v\"\nkind=\"gpu\"\norigin=\"US\"\nsubject_to_ear=true\n\
                 datacenter=true\nics=1\ntdp_w = { value = 700.0, source = \"nowhere\" }",
                "source \"nowhere\" is not declared",
            ),
            (
                "schema = 1\n[sources]\ns={kind=\"vendor\",title=\"t\"}\n[[chip]]\nid=\"x\"\nname=\"x\"\nvendor=\"v\"\n\
                 kind=\"gpu\"\norigin=\"US\"\nsubject_to_ear=true\ndatacenter=true\nics=1\ntdp_w = { value = -1.0, source = \"s\" }",
                "tdp_w: value -1",
            ),
            (
                "schema = 1\n[sources]\ns={kind=\"vendor\",title=\"t\"}\n[[chip]]\nid=\"x\"\nname=\"x\"\nvendor=\"v\"\n\
                 kind=\"gpu\"\norigin=\"US\"\nsubject_to_ear=true\ndatacenter=true\nics=1\nmemory_gb = { unsupported = true, source = \"s\" }",
                "only throughput figures can be unsupported",
            ),
            (
                "schema = 1\n[sources]\ns={kind=\"vendor\",title=\"t\"}\n[[chip]]\nid=\"x\"\nname=\"x\"\nvendor=\"v\"\n\
                 kind=\"gpu\"\norigin=\"US\"\nsubject_to_ear=true\ndatacenter=true\nics=0",
                "ics = 0",
            ),
            ("schema = 1\n[[chip]]\nid = [", "line 3"),
        ];
        for (text, needle) in cases {
            let err = Catalog::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.starts_with("c.toml: ") && err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn unknown_chip_names_the_known_ones() {
        let cat = Catalog::builtin().unwrap();
        let err = cat.chip("h300").unwrap_err().to_string();
        assert!(err.starts_with("unknown chip \"h300\" (known: h100-sxm, h100-pcie"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any prefix of the real catalog parses or gives an error; never a panic.
        #[test]
        fn truncated_catalogs_do_not_panic(cut in 0usize..BUILTIN_CATALOG.len()) {
            let text = &BUILTIN_CATALOG.as_bytes()[..cut];
            if let Ok(text) = std::str::from_utf8(text) {
                let _ = Catalog::parse(text, "cut");
            }
        }

        /// Random bytes, and the catalog with random bytes spliced in, give errors, not panics.
        #[test]
        fn corrupted_catalogs_do_not_panic(at in 0usize..BUILTIN_CATALOG.len(), junk in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut bytes = BUILTIN_CATALOG.as_bytes().to_vec();
            let at = at.min(bytes.len());
            bytes.splice(at..at, junk);
            let text = String::from_utf8_lossy(&bytes);
            let _ = Catalog::parse(&text, "junk");
        }
    }
}
