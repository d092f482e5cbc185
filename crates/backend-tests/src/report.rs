//! What a conformance run found.

use std::collections::BTreeMap;
use std::fmt;

use tessera_backend::NodeId;

/// One case that failed: wrong numbers, an error where a result was due, a panic, or a missing
/// error for bad input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case, with its shapes and types (`mat_mul q4_K x[3, 256] w[16, 256]`).
    pub case: String,
    /// The node whose result was wrong, when known.
    pub node: Option<NodeId>,
    pub op: String,
    pub shape: String,
    /// Largest error relative to the output's scale (infinite for errors and non-finite values).
    pub max_error: f32,
    pub tolerance: f32,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.case)?;
        if let Some(n) = self.node {
            write!(f, "node {n} ")?;
        }
        if !self.shape.is_empty() {
            write!(f, "{} {}: ", self.op, self.shape)?;
        }
        write!(f, "{}", self.message)?;
        if self.max_error.is_finite() {
            write!(f, " (max error {:.3e}, tolerance {:.1e})", self.max_error, self.tolerance)?;
        }
        Ok(())
    }
}

/// Largest error seen in a group of cases, against the tolerance that applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Worst {
    pub cases: usize,
    pub max_error: f32,
    pub tolerance: f32,
}

/// The outcome of [`crate::run_conformance`] or of the per-op checks.
#[derive(Debug, Default)]
pub struct ConformanceReport {
    /// `DeviceInfo::name` of the backend tested.
    pub backend: String,
    pub passed: usize,
    /// Cases skipped because the backend's `supports_op` declined one of their nodes.
    pub unsupported: Vec<String>,
    pub failures: Vec<Failure>,
    /// Per group of cases (`mat_mul q4_K`, `attention f16`, `contract`): the largest error.
    pub worst: BTreeMap<String, Worst>,
}

impl ConformanceReport {
    pub fn new(backend: impl Into<String>) -> ConformanceReport {
        ConformanceReport { backend: backend.into(), ..ConformanceReport::default() }
    }

    /// No failures (unsupported ops are not failures).
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub(crate) fn record(&mut self, group: &str, error: f32, tolerance: f32) {
        let w = self.worst.entry(group.to_string()).or_default();
        w.cases += 1;
        w.max_error = w.max_error.max(error);
        w.tolerance = w.tolerance.max(tolerance);
    }

    pub(crate) fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    /// A failure outside any graph (contract checks).
    pub(crate) fn fail_contract(&mut self, case: &str, message: impl Into<String>) {
        self.failures.push(Failure {
            case: case.to_string(),
            node: None,
            op: "contract".into(),
            shape: String::new(),
            max_error: f32::INFINITY,
            tolerance: 0.0,
            message: message.into(),
        });
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of {}: {} passed, {} failed, {} unsupported",
            self.backend,
            self.passed,
            self.failures.len(),
            self.unsupported.len()
        )?;
        writeln!(f, "  {:<28} {:>6} {:>11} {:>10}", "group", "cases", "max error", "tolerance")?;
        for (group, w) in &self.worst {
            writeln!(f, "  {group:<28} {:>6} {:>11.3e} {:>10.1e}", w.cases, w.max_error, w.tolerance)?;
        }
        for u in &self.unsupported {
            writeln!(f, "  unsupported: {u}")?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILED {failure}")?;
        }
        Ok(())
    }
}
