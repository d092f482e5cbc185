//! Shared by the test suites: where the real test models and the reference fixtures live.
//! Only tests depend on this crate.

mod peak_alloc;
pub use peak_alloc::{largest_allocation, PeakAlloc};

use std::path::PathBuf;

/// The directory holding test models, as the `tessera` CLI's model cache finds it:
/// `$TESSERA_MODELS_DIR`, else `$XDG_CACHE_HOME/tessera/models`, else
/// `$HOME/.cache/tessera/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("tessera").join("models")
}

/// The path of test model `file`, or `None` (with a note) when it is not there. Under CI (env
/// `CI` set) a missing model fails the test instead: CI fetches the models first.
pub fn test_model(file: &str) -> Option<PathBuf> {
    let path = models_dir().join(file);
    if path.is_file() {
        return Some(path);
    }
    missing_prerequisite(&format!("test model {} is missing (set TESSERA_MODELS_DIR)", path.display()));
    None
}

/// Reports that something a test needs is missing: under CI (env `CI` set) the test fails,
/// since CI installs everything first; elsewhere it is skipped with a note. The caller returns.
pub fn missing_prerequisite(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} (CI is set, so this is an error)");
    }
    eprintln!("note: skipping: {what}");
}

/// Whether `python3` can import every one of `modules` (see [`missing_prerequisite`] when not;
/// `scripts/test.sh` installs them).
pub fn python_imports(modules: &[&str]) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing_prerequisite(&format!("python3 cannot import {} (run scripts/test.sh)", modules.join(", ")));
    }
    ok
}

/// The repository's `tests/fixtures` directory.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// File names of the models `tessera pull` fetches, as the tests refer to them.
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3_270M: &str = "gemma-3-270m-Q4_K_M.gguf";

/// Reads a JSON fixture, panicking with the path on failure (tests only).
pub fn read_json(path: impl AsRef<std::path::Path>) -> serde_json::Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("an id list").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}
