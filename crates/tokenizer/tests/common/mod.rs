//! Shared helpers for the integration tests: locating the test models and fixtures.

#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/fixtures/tokenizer` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer")
}

/// A test model in `$TESSERA_MODELS_DIR` (default `~/.cache/tessera/models`). Missing models skip
/// the test with a note, except under CI (`CI` set), where they fail it.
pub fn model(file: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("TESSERA_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tessera/models"),
    };
    let path = dir.join(file);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("test model {} is missing (run `tessera pull`)", path.display());
    }
    eprintln!("skipping: test model {} not found (set TESSERA_MODELS_DIR)", path.display());
    None
}

pub fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("an id list").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}
