#!/usr/bin/env bash
# What `tessera route` adds to time to first token: an open-loop load (default 500 req/s for
# 10 s) of streamed requests against a fake upstream that answers at once, alternating between
# the upstream itself and the router in front of it, so both paths share the run's noise.
#
#   bench/route-overhead.sh [RATE] [SECONDS]
#
# Exits 1 when the router adds more than 1 ms at p50 or 5 ms at p99.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -p tessera-router --example route_overhead -- "${1:-500}" "${2:-10}"
