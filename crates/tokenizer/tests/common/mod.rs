//! Shared helpers for the tokenizer's integration tests.

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;

pub use tessera_testkit::{ids, read_json, test_model as model};

/// `tests/fixtures/tokenizer` at the workspace root.
pub fn fixtures() -> PathBuf {
    tessera_testkit::fixtures_dir().join("tokenizer")
}
