//! What every end-to-end test of the `tessera` binary needs: running it against the test models'
//! cache and reading what it printed.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Command, Output};

use tessera_testkit::models_dir;

/// Runs `tessera ARGS` with the test models' cache as its models directory.
pub fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_MODELS_DIR", models_dir())
        .output()
        .expect("tessera starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed command exits 1 with one line on stderr that starts `error:` and contains `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected, got: {err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{err:?} should mention {needle:?}");
}
