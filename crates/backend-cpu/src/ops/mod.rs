//! The graph ops, each over plain slices; `exec` resolves nodes to slices and back.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod rows;

/// Elements per parallel task for cheap per-element work: below this, threads cost more than
/// they save.
pub(crate) const CHUNK: usize = 16 * 1024;
