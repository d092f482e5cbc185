#!/usr/bin/env bash
# Same-device comparison of Tessera's wgpu backend with llama.cpp's Vulkan backend.
#
# Builds llama-bench with -DGGML_VULKAN=ON from the llama-cpp-python sdist (needs glslc, the
# SPIR-V headers and Vulkan headers 1.3.261 or newer: the LunarG SDK, or Debian 13's glslc,
# spirv-headers and libvulkan-dev; Debian 12's 1.3.239 headers lack VK_EXT_layer_settings,
# which llama.cpp uses only to configure the validation layer), builds Tessera, makes
# the Llama-3.2-1B shape with random weights in Q4_0 and BF16, then alternates `tessera bench
# --backend wgpu` and `llama-bench -ngl 99` on each model and prints the median ratios
# (bench/compare_llama_cpp.py). Both run on the first Vulkan device unless told otherwise.
#
#   bench/compare-llama-vulkan.sh [--small] [--rounds 3] [--reps 3] [-p 512] [-n 128] [--out FILE]
#
#   --small          SmolLM2-135M (Q4_1, the real model) instead of the 1B shape: for software
#                    drivers such as lavapipe, where the 1B shape takes hours; for the record only
#   TESSERA_BACKEND  tessera's backend (default wgpu; wgpu:N picks adapter N of `tessera devices`,
#                    wgpu-relaxed the relaxed numerics)
#   GGML_VK_VISIBLE_DEVICES  llama.cpp's device index (default 0: without it, llama.cpp skips
#                    software drivers and silently runs on the CPU)
#   LLAMA_CPP_VERSION, BENCH_DIR  see bench/llama-cpp-source.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

source bench/llama-cpp-source.sh
BACKEND="${TESSERA_BACKEND:-wgpu}"
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
BIN="$SRC/build-vulkan/bin"

if [ ! -x "$BIN/llama-bench" ]; then
  llama_cpp_source
  llama_cpp_cc_flags
  cmake -S "$SRC" -B "$SRC/build-vulkan" -DCMAKE_BUILD_TYPE=Release -DGGML_VULKAN=ON -DLLAMA_CURL=OFF \
    "${CC_FLAGS[@]}" >/dev/null
  cmake --build "$SRC/build-vulkan" -j"$(nproc)" --target llama-bench >/dev/null
fi

cargo build --release --quiet --bin tessera
TESSERA="$PWD/target/release/tessera"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then TESSERA="$CARGO_TARGET_DIR/release/tessera"; fi
"$TESSERA" devices

MODELS=()
if [ "$SMALL" = 1 ]; then
  "$TESSERA" pull smollm2
  MODELS+=(--model "smollm2-q4_1=$("$TESSERA" pull --list | sed -n 's/^smollm2 .*\[cached: \(.*\)\]$/\1/p')")
else
  python3 -m pip install --quiet numpy gguf
  for t in q4_0 bf16; do
    out="$BENCH_DIR/llama-3.2-1b-$t.gguf"
    [ -f "$out" ] || python3 bench/make_random_gguf.py --shape llama-3.2-1b --type "$t" -o "$out"
    MODELS+=(--model "llama-3.2-1b-$t=$out")
  done
fi

python3 bench/compare_llama_cpp.py --tessera "$TESSERA" --llama-bench "$BIN/llama-bench" "${MODELS[@]}" \
  --threads 2 --tessera-arg="--backend=$BACKEND" --llama-arg="-ngl=99" "${ARGS[@]}"
