//! `tessera eval` end to end: a model against itself (KL 0, top-1 100 %), a saved reference
//! reused, the JSON and plot files, and the errors of bad inputs.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tessera_testkit::{fixtures_dir, test_model, GEMMA3_270M, SMOLLM2};

mod common;
use common::{stderr, tessera};

/// A failed command exits 1 and its last line on stderr starts `error:` and contains `needle`
/// (the models' load lines may come before it).
fn assert_ends_with_error(o: &Output, needle: &str) {
    let err = stderr(o);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert!(last.starts_with("error: ") && last.contains(needle), "{err:?} should end with an error naming {needle:?}");
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-eval-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn text() -> PathBuf {
    fixtures_dir().join("text/ppl.txt")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn read_json(path: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("valid json");
    v.as_array().expect("an array of records").clone()
}

#[test]
fn a_model_against_itself_agrees_and_a_saved_reference_gives_the_same_figures() {
    let Some(model) = test_model(SMOLLM2) else { return };
    let dir = scratch("self");
    let (json, plot, base) = (dir.join("out.json"), dir.join("out.svg"), dir.join("base.kl"));
    let text = text();
    let common = ["-f", s(&text), "-c", "128", "--chunks", "2", "-t", "2"];
    let mut args = vec!["eval", "-m", s(&model), "-m", "smollm2"];
    args.extend(common);
    args.extend(["--json", s(&json), "--plot", s(&plot), "--save-kl-base", s(&base)]);
    let o = tessera(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 4, "header, rule and one row per model: {table}");
    assert!(table.contains("100.00 %"), "{table}");

    let records = read_json(&json);
    assert_eq!(records.len(), 2);
    let (reference, copy) = (&records[0], &records[1]);
    assert_eq!(reference["reference"], true);
    assert!(reference["kl_mean"].is_null() && reference["top1_percent"].is_null());
    for field in ["model", "path", "bits_per_weight", "size_bytes", "ppl", "ppl_error", "delta_ppl_percent", "tokens"] {
        assert!(!copy[field].is_null(), "{field} missing: {copy}");
    }
    for field in ["kl_mean", "kl_mean_error", "kl_median", "kl_p99", "kl_max", "top1_percent"] {
        assert!(copy[field].is_number(), "{field} missing: {copy}");
    }
    let num = |v: &Value, f: &str| v[f].as_f64().unwrap_or_else(|| panic!("{f} is a number"));
    assert!(num(copy, "kl_mean").abs() < 1e-4 && num(copy, "kl_max") < 1e-3, "{copy}");
    assert_eq!(num(copy, "top1_percent"), 100.0);
    assert!(num(copy, "delta_ppl_percent").abs() < 1e-4, "{copy}");
    assert_eq!(copy["tokens"], 2 * 63);
    let bpw = num(copy, "bits_per_weight");
    assert!((4.5..8.0).contains(&bpw), "a Q4_1 model with a Q8_0 embedding: {bpw}");
    assert_eq!(copy["size_bytes"], reference["size_bytes"]);

    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg") && svg.contains("smollm2") && svg.contains("bits per weight"), "{svg:.200}");

    // The saved reference, reused without the text: the same tokens and the same figures.
    let json2 = dir.join("again.json");
    let o = tessera(&["eval", "-m", "smollm2", "--kl-base", s(&base), "-t", "2", "--json", s(&json2)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = read_json(&json2);
    assert_eq!(again[0]["model"], reference["model"], "the file names its reference");
    assert_eq!(again[0]["bits_per_weight"], reference["bits_per_weight"]);
    for field in ["ppl", "kl_mean", "kl_p99", "kl_max", "top1_percent"] {
        assert_eq!(again[1][field], copy[field], "{field}");
    }

    // Reusing it with another context is refused before anything runs.
    let o = tessera(&["eval", "-m", "smollm2", "--kl-base", s(&base), "-c", "64"]);
    assert_ends_with_error(&o, "context of 128 tokens, not 64");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn models_with_another_vocabulary_are_refused() {
    if test_model(SMOLLM2).is_none() || test_model(GEMMA3_270M).is_none() {
        return;
    }
    let o = tessera(&["eval", "-m", "smollm2", "-m", "gemma3-270m", "-f", s(&text()), "-c", "128", "--chunks", "2"]);
    assert_ends_with_error(&o, "vocabulary of 262144 tokens but the reference has 49152");
}

#[test]
fn bad_inputs_get_clear_errors() {
    if test_model(SMOLLM2).is_none() {
        return;
    }
    let dir = scratch("bad");
    let missing = dir.join("missing.txt");
    assert_ends_with_error(&tessera(&["eval", "-m", "smollm2", "-f", s(&missing)]), "missing.txt");
    let short = dir.join("short.txt");
    std::fs::write(&short, "Too short to score.").expect("write");
    assert_ends_with_error(&tessera(&["eval", "-m", "smollm2", "-f", s(&short), "-c", "128"]), "fewer than one chunk");
    assert_ends_with_error(&tessera(&["eval", "-f", s(&short)]), "no model");
    assert_ends_with_error(&tessera(&["eval", "-m", "smollm2"]), "no text");

    let garbage = dir.join("garbage.kl");
    std::fs::write(&garbage, b"not a kl base at all").expect("write");
    assert_ends_with_error(&tessera(&["eval", "-m", "smollm2", "--kl-base", s(&garbage)]), "not a usable KL base");
    let absent = dir.join("absent.kl");
    assert_ends_with_error(&tessera(&["eval", "-m", "smollm2", "--kl-base", s(&absent)]), "absent.kl");
    let both = ["eval", "-m", "smollm2", "-f", s(&short), "--kl-base", s(&absent), "--save-kl-base", s(&garbage)];
    assert_ends_with_error(&tessera(&both), "cannot be used with");
    std::fs::remove_dir_all(&dir).ok();
}
