//! The Kubernetes manifests under `deploy/k8s/`: every object validates against the Kubernetes
//! schemas (strict), the references between objects resolve, the `tessera` containers'
//! arguments parse, and the router's fleet file keeps its tenants' policy.
//! `scripts/check_k8s_manifests.py` does the checking with the `kubernetes-validate` package
//! (offline schemas), which `scripts/test.sh` installs; without it
//! the tests are skipped with a note locally and fail under CI. Broken copies of the manifests
//! show the checker catches each kind of mistake.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{stderr, stdout};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn check(manifests: &Path, docs: &Path) -> Output {
    Command::new("python3")
        .arg(repo().join("scripts/check_k8s_manifests.py"))
        .arg(manifests)
        .arg("--docs")
        .arg(docs)
        .args(["--tessera", env!("CARGO_BIN_EXE_tessera")])
        .output()
        .expect("python3 starts")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Checks a copy of the manifests and docs with one text replacement made in `file`, which must
/// fail with a line containing `expected`.
fn assert_broken_copy_fails(file: &str, from: &str, to: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("k8s");
    copy_dir(&repo().join("deploy/k8s"), &manifests);
    let docs = dir.path().join("deploy-kubernetes.md");
    std::fs::copy(repo().join("docs/deploy-kubernetes.md"), &docs).unwrap();
    let path = if file == "docs" { docs.clone() } else { manifests.join(file) };
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} no longer contains {from:?}: update this test");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let o = check(&manifests, &docs);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{file}: {from:?} -> {to:?} passed the check: {out}{}", stderr(&o));
    assert!(out.lines().any(|l| l.starts_with("error: ") && l.contains(expected)), "expected {expected:?} in:\n{out}");
}

#[test]
fn the_manifests_validate_and_their_references_resolve() {
    if !tessera_testkit::python_imports(&["kubernetes_validate", "yaml"]) {
        return;
    }
    let o = check(&repo().join("deploy/k8s"), &repo().join("docs/deploy-kubernetes.md"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("ok: 16 objects from 7 files valid against Kubernetes 1.37.0"), "{}", stdout(&o));
}

#[test]
fn schema_errors_name_the_object_and_field() {
    if !tessera_testkit::python_imports(&["kubernetes_validate", "yaml"]) {
        return;
    }
    assert_broken_copy_fails(
        "serve-cpu.yaml",
        "replicas: 2",
        "replicas: two",
        "serve-cpu.yaml: Deployment/tessera-serve-cpu: schema: spec.replicas",
    );
    // Strict: a misspelt field is an error, not silently ignored.
    assert_broken_copy_fails(
        "router.yaml",
        "readinessProbe:",
        "readinesProbe:",
        "router.yaml: Deployment/tessera-router: schema: spec.template.spec.containers.0",
    );
    // An object kind the schemas do not know is an error too.
    assert_broken_copy_fails(
        "network-policy.yaml",
        "apiVersion: networking.k8s.io/v1",
        "apiVersion: networking.k8s.io/v9",
        "no schema for NetworkPolicy networking.k8s.io/v9",
    );
}

#[test]
fn broken_references_between_objects_are_caught() {
    if !tessera_testkit::python_imports(&["kubernetes_validate", "yaml"]) {
        return;
    }
    assert_broken_copy_fails(
        "serve-cpu.yaml",
        "name: tessera_queue_depth",
        "name: tessera_queue_length",
        "scales on pods metric 'tessera_queue_length', which no prometheus-adapter rule",
    );
    assert_broken_copy_fails(
        "serve-gpu.yaml",
        "  selector:\n    app.kubernetes.io/component: serve-gpu",
        "  selector:\n    app.kubernetes.io/component: serve-gpus",
        "Service/tessera-serve-gpu: its selector matches no Deployment's pods",
    );
    assert_broken_copy_fails("router.yaml", "name: tessera-fleet", "name: tessera-fleets", "ConfigMap tessera-fleets");
    assert_broken_copy_fails(
        "fleet.toml",
        "svc.cluster.local:8000",
        "svc.cluster.local:8080",
        "Service tessera-serve-gpu has no port 8080",
    );
    assert_broken_copy_fails(
        "fleet.toml",
        "TESSERA_TENANT_RESTRICTED_KEYS",
        "TESSERA_TENANT_GOV_KEYS",
        "names the variable TESSERA_TENANT_GOV_KEYS, which Deployment/tessera-router does not set",
    );
    assert_broken_copy_fails(
        "docs",
        " --from-literal=tenant-restricted-keys=\"sk-gov-1\"",
        "",
        "the docs create Secret tessera-keys without the key 'tenant-restricted-keys'",
    );
    // A flag the binary does not have.
    assert_broken_copy_fails(
        "serve-cpu.yaml",
        "- --max-queue=64",
        "- --max-queue-len=64",
        "Deployment/tessera-serve-cpu container serve: tessera rejects its arguments",
    );
    assert_broken_copy_fails(
        "kustomization.yaml",
        "  - network-policy.yaml\n",
        "",
        "network-policy.yaml is in the directory but not in resources",
    );
}

#[test]
fn the_deployed_fleet_file_loads_and_keeps_the_restricted_tenant_off_controlled_gpus() {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["route", "--config"])
        .arg(repo().join("deploy/k8s/fleet.toml"))
        .args(["--dry-run", "--no-probe", "--tenant", "restricted", "--model", "smollm2"])
        .env("TESSERA_UPSTREAM_KEY", "upstream")
        .env("TESSERA_TENANT_DEFAULT_KEYS", "sk-a,sk-b")
        .env("TESSERA_TENANT_RESTRICTED_KEYS", "sk-r")
        .output()
        .expect("tessera starts");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(" 1. first cpu-pool ("), "{text}");
    assert!(text.contains("never gpu-pool: policy: export class 3A090.a under us-2025-01 is not allowed"), "{text}");
}
