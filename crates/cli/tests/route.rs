//! `tessera route` end to end: `--dry-run` explains where a request would go without contacting
//! anyone, and a bad fleet file is one clear line.

mod common;
use common::{assert_one_line_error, stderr, stdout, tessera};

const FLEET: &str = r#"
[[upstream]]
name = "h100-us"
url = "http://127.0.0.1:9"
models = ["llama-3.1-8b"]
hardware = "h100-sxm"
region = "us-east"
plan_model = "llama-3.1-8b"

[[upstream]]
name = "cpu-eu"
url = "http://127.0.0.1:9"
models = ["llama-3.1-8b"]
hardware = "cpu-2x-epyc-9654"
region = "eu-west"
cost_per_mtok = 0.9

[[tenant]]
name = "eu-health"
api_keys = ["sk-eu"]
allowed_regions = ["eu-west"]

[[tenant]]
name = "strict"
api_keys = ["sk-strict"]
allowed_regions = ["us-east"]
rule_set = "us-2025-01"
allowed_classes = ["not-controlled"]
"#;

fn fleet_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn dry_run_ranks_the_permitted_upstreams_and_says_why_the_others_are_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_file(&dir, FLEET);
    let o = tessera(&["route", "--config", &config, "--dry-run", "--no-probe", "--api-key", "sk-eu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "tenant eu-health, model llama-3.1-8b", "{text}");
    assert!(lines[1].starts_with(" 1. first cpu-eu (http://127.0.0.1:9, eu-west)"), "{text}");
    assert!(text.contains("never h100-us: policy: region us-east is not allowed (allowed: eu-west)"), "{text}");
    // The H100's cost comes from the planner, and its class from the rule set a tenant names.
    assert!(text.contains("h100-us: h100-sxm, $") && text.contains("(planned: llama-3.1-8b on h100-sxm"), "{text}");
    assert!(text.contains("3A090.a under us-2025-01"), "{text}");

    let o = tessera(&["route", "--config", &config, "--dry-run", "--no-probe", "--tenant", "strict"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("refused (403: the tenant's policy permits no upstream serving this model)"), "{text}");
    assert!(text.contains("never h100-us: policy: export class 3A090.a under us-2025-01 is not allowed"), "{text}");
}

#[test]
fn dry_run_with_probes_sees_dead_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) is closed here: the health checks fail.
    let config = fleet_file(&dir, FLEET);
    let o = tessera(&["route", "--config", &config, "--dry-run", "--tenant", "eu-health"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("refused (503: no permitted upstream can take it now)"), "{text}");
    assert!(text.contains("never cpu-eu: failing its health check"), "{text}");
}

#[test]
fn bad_fleet_files_and_arguments_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_file(&dir, &FLEET.replace("\"h100-sxm\"", "\"h100-sxn\""));
    let o = tessera(&["route", "--config", &config, "--dry-run", "--no-probe"]);
    assert_one_line_error(&o, "upstream #1 (\"h100-us\"): hardware: unknown chip \"h100-sxn\"");
    let config = fleet_file(&dir, FLEET);
    let o = tessera(&["route", "--config", &config, "--dry-run", "--no-probe"]);
    assert_one_line_error(&o, "the fleet has tenants: give --tenant NAME or --api-key KEY");
    let o = tessera(&["route", "--config", &config, "--dry-run", "--no-probe", "--tenant", "nobody"]);
    assert_one_line_error(&o, "no tenant \"nobody\"");
    let o = tessera(&["route", "--config", &dir.path().join("none.toml").to_string_lossy()]);
    assert_one_line_error(&o, "none.toml");
    let o = tessera(&["route", "--config", &config, "--tenant", "x"]);
    assert_one_line_error(&o, "--dry-run");
}
