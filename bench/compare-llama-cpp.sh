#!/usr/bin/env bash
# Same-machine, same-file comparison of `tessera bench` with llama.cpp's `llama-bench`.
#
# Builds llama.cpp from the llama-cpp-python sdist (clang and -march=native, so it uses every
# instruction set the CPU has, AMX included where present; with GCC 12 the AMX flags are turned
# off because it emits illegal instructions on some CPUs), builds Tessera, prepares the models,
# then alternates the two programs and prints the median ratios (bench/compare_llama_cpp.py).
#
#   bench/compare-llama-cpp.sh [--big] [--threads 1,2] [--rounds 3] [--reps 3] [--out FILE]
#
#   --big   also the Llama-3.1-8B shape (random weights; ~14 GB of disk, needs RAM for 8.5 GB)
#   LLAMA_CPP_VERSION  llama-cpp-python sdist to build (default 0.3.36)
#   BENCH_DIR          where llama.cpp and the generated models go
#                      (default ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/bench)
set -euo pipefail
cd "$(dirname "$0")/.."

BIG=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --big) BIG=1 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

source bench/llama-cpp-source.sh
BIN="$SRC/build/bin"

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
  llama_cpp_source
  llama_cpp_cc_flags
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    "${CC_FLAGS[@]}" >/dev/null
  cmake --build "$SRC/build" -j"$(nproc)" --target llama-bench llama-quantize >/dev/null
fi

cargo build --release --quiet --bin tessera
TESSERA="$PWD/target/release/tessera"
# Honour CARGO_TARGET_DIR when it is set.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then TESSERA="$CARGO_TARGET_DIR/release/tessera"; fi

"$TESSERA" pull smollm2 gemma3-270m
cached() { "$TESSERA" pull --list | sed -n "s/^$1 .*\[cached: \(.*\)\]\$/\1/p"; }
SMOL="$(cached smollm2)"
GEMMA="$(cached gemma3-270m)"

MODELS=(--model "smollm2-q4_1=$SMOL" --model "gemma3-270m-q4_k_m=$GEMMA")
for t in q8_0 q4_0; do
  out="$BENCH_DIR/smollm2-135m-$t.gguf"
  [ -f "$out" ] || "$BIN/llama-quantize" --allow-requantize "$SMOL" "$out" "${t^^}" >/dev/null 2>&1
  MODELS+=(--model "smollm2-$t=$out")
done
SHAPES=(llama-3.2-1b)
[ "$BIG" = 1 ] && SHAPES+=(llama-3.1-8b)
for shape in "${SHAPES[@]}"; do
  for t in q4_0 q8_0; do
    out="$BENCH_DIR/$shape-$t.gguf"
    [ -f "$out" ] || python3 bench/make_random_gguf.py --shape "$shape" --type "$t" -o "$out"
    MODELS+=(--model "$shape-$t=$out")
  done
done

python3 bench/compare_llama_cpp.py --tessera "$TESSERA" --llama-bench "$BIN/llama-bench" "${MODELS[@]}" "${ARGS[@]}"
