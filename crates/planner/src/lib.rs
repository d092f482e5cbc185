//! Hardware planning for LLM inference, from data alone: which chips a rule set controls and for
//! which destinations, how fast a model runs on each (a roofline calibrated on measured profiles),
//! what a million tokens costs, and the cheapest fleet that meets a latency target.
//!
//! The catalog, the rule sets, the country groups, the named model shapes and the TCO defaults are
//! TOML files under `data/`, embedded at build time so the planner works offline; each can be
//! replaced by a file of the same shape. This crate links no tensor, format or backend code: a model
//! is a [`ModelShape`], and the CLI builds one from a model file.

pub mod assumptions;
pub mod calibrate;
pub mod catalog;
pub mod fleet;
pub mod ilp;
pub mod interval;
pub mod model;
pub mod perf;
pub mod profile;
pub mod report;
pub mod rules;
mod svg;
pub mod tco;

pub use assumptions::Assumptions;
pub use catalog::{Catalog, Chip, Precision};
pub use interval::{Quantity, Truth};
pub use model::{ModelShape, NamedModels};
pub use rules::{Class, Classification, Judgement, RuleBook, RuleSet, Verdict};

/// Everything the planner can refuse: bad data files, unknown names, impossible requests.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A catalog, rule, country, model, assumption or profile file is malformed; `what` says where.
    #[error("{origin}: {what}")]
    Data { origin: String, what: String },
    /// A name that is not in the data (chip, rule set, region, model, quantisation).
    #[error("unknown {kind} {name:?} (known: {known})")]
    UnknownName { kind: &'static str, name: String, known: String },
    /// A computation needs a figure the catalog does not have.
    #[error("{chip}: {what} is unknown, so {needed_for} cannot be computed")]
    MissingFigure { chip: String, what: String, needed_for: String },
    /// A parameter out of range, or a request the data cannot answer.
    #[error("{0}")]
    Invalid(String),
}

impl PlanError {
    pub(crate) fn data(origin: impl Into<String>, what: impl Into<String>) -> PlanError {
        PlanError::Data { origin: origin.into(), what: what.into() }
    }

    pub(crate) fn unknown_name<'a>(
        kind: &'static str,
        name: &str,
        known: impl IntoIterator<Item = &'a str>,
    ) -> PlanError {
        PlanError::UnknownName { kind, name: name.to_string(), known: known.into_iter().collect::<Vec<_>>().join(", ") }
    }
}

/// Parses TOML into `T`; the error names `origin`, the problem and its line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, PlanError> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let (line, column) = line_column(text, span.start);
            format!(" at line {line} column {column}")
        });
        PlanError::data(origin, format!("{}{at}", e.message().trim().replace('\n', " ")))
    })
}

/// 1-based line and column of byte `offset` (clamped to the text).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}
