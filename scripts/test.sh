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

# A fresh clone gains nothing from incremental state, and line tables are three quarters of
# every test binary: on CI both would only fill the disk (about 6 GB against 1.5 GB without).
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0
fi

cargo run --quiet --bin tessera -- pull smollm2 gemma3-270m

# The server's end-to-end test drives it with the official OpenAI client; the Kubernetes
# manifests are validated against the Kubernetes schemas kubernetes-validate ships; the ONNX
# Runtime backend loads the onnxruntime package's library (and onnxruntime-qnn's QNN provider,
# whose HTP backend emulates Qualcomm's NPU on x86-64), and the exported models are checked
# with onnxruntime and onnx themselves.
python3 -m pip install --quiet --disable-pip-version-check "openai==3.54.0" "jsonschema==4.26.0" \
  "kubernetes-validate==1.37.0" "onnxruntime==1.24.4" "onnx==1.23.2" "numpy<3"
if [ "$(uname -sm)" = "Linux x86_64" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "onnxruntime-qnn==2.7.0"
fi

# Debian packages: the planner's HTML report test renders in headless Chromium; the wgpu
# backend's tests run on Mesa's software Vulkan driver (lavapipe) where there is no GPU.
packages=()
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  packages+=(chromium)
fi
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  packages+=(mesa-vulkan-drivers libvulkan1)
fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
