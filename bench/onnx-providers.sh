#!/usr/bin/env bash
# SmolLM2 through ONNX Runtime's execution providers beside Tessera's own CPU backend: quality
# of each export against the CPU backend on the same weights, and prompt/generation speed of
# every path in the same run (alternated rounds, medians).
#
#   bench/onnx-providers.sh [--rounds 3] [--chunks 4] [--qnn-chunks 2] [--no-qnn] [--out DIR]
#
# Installs onnxruntime and onnxruntime-qnn for python3 (as scripts/test.sh does) and
# onnxruntime-openvino into its own virtual environment under DIR (it ships its own build of
# ONNX Runtime, selected with ORT_DYLIB_PATH). QNN's HTP backend is an emulator on x86-64:
# its quality is the HTP's, its speed is for the record only (seconds per token).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 CHUNKS=4 QNN_CHUNKS=2 QNN=1 OUT="${TMPDIR:-/tmp}/tessera-onnx-bench"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --chunks) CHUNKS="$2"; shift ;;
    --qnn-chunks) QNN_CHUNKS="$2"; shift ;;
    --no-qnn) QNN=0 ;;
    --out) OUT="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
THREADS="${THREADS:-$(nproc)}"
TEXT=tests/fixtures/text/ppl.txt

python3 -m pip install --quiet --disable-pip-version-check "onnxruntime==1.24.4" "numpy<3"
[ "$QNN" = 1 ] && python3 -m pip install --quiet --disable-pip-version-check "onnxruntime-qnn==2.7.0"
if [ ! -x "$OUT/ov-venv/bin/python" ]; then
  python3 -m venv "$OUT/ov-venv"
  "$OUT/ov-venv/bin/pip" install --quiet --disable-pip-version-check "onnxruntime-openvino==1.24.1"
fi
OV_LIB=$(ls "$OUT"/ov-venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)

# TESSERA_BIN: an already built binary to use instead of building a release one.
if [ -n "${TESSERA_BIN:-}" ]; then
  T="$TESSERA_BIN"
else
  cargo build --release --quiet
  T="${CARGO_TARGET_DIR:-target}/release/tessera"
fi
[ -f "$OUT/smollm2-f32.gguf" ] || $T quantize -m smollm2 --format f32 -o "$OUT/smollm2-f32.gguf" >/dev/null
for p in fp32 qdq-a16w8; do
  [ -f "$OUT/$p/manifest.json" ] || $T export onnx -m smollm2 -o "$OUT/$p" --precision "$p" --seq-len 32 --ctx 256 -t "$THREADS" 2>/dev/null
done

echo "== quality: tessera eval against the CPU backend on the same weights (F32), $TEXT, -c 256"
$T eval -m "$OUT/smollm2-f32.gguf" -m "$OUT/fp32" -m "$OUT/qdq-a16w8" -f "$TEXT" -c 256 --chunks "$CHUNKS" \
  --onnx-backend ort:cpu -t "$THREADS" 2>/dev/null
if [ "$QNN" = 1 ]; then
  echo "== quality on the QNN HTP (emulated), every node on the HTP"
  $T eval -m "$OUT/smollm2-f32.gguf" -m "$OUT/qdq-a16w8" -f "$TEXT" -c 256 --chunks "$QNN_CHUNKS" \
    --onnx-backend ort:qnn --no-cpu-fallback -t "$THREADS" 2>/dev/null
fi

# About 70 tokens: two runs of the exports' 32-token prefill graph, then the decode graph.
PROMPT="The history of the printing press begins in China, where woodblock printing spread across East Asia long before movable type reached Europe. In the fifteenth century, Johannes Gutenberg combined a screw press, oil-based ink and cast metal type, and within fifty years presses in more than two hundred cities had printed"
# name|environment|model|backend|tokens
CONFIGS=(
  "tessera cpu, Q4_1 gguf||smollm2|cpu|32"
  "tessera cpu, F32 gguf||$OUT/smollm2-f32.gguf|cpu|32"
  "ort:cpu, Tessera graphs (Q4_1 file)||smollm2|ort:cpu|32"
  "ort:cpu, fp32 export||$OUT/fp32|ort:cpu|32"
  "ort:cpu, qdq-a16w8 export||$OUT/qdq-a16w8|ort:cpu|32"
  "ort:openvino, fp32 export|ORT_DYLIB_PATH=$OV_LIB|$OUT/fp32|ort:openvino|32"
)
declare -A PP TG
for ((r = 1; r <= ROUNDS; r++)); do
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r name envs model backend n <<<"$c"
    line=$(env $envs $T run -m "$model" --backend "$backend" -t "$THREADS" -c 256 -p "$PROMPT" -n "$n" --temp 0 2>&1 >/dev/null | grep '^prompt:')
    PP[$name]+="$(echo "$line" | sed -E 's/.*\(([0-9.]+) tok\/s\) \| generation.*/\1/') "
    TG[$name]+="$(echo "$line" | sed -E 's/.*generation.*\(([0-9.]+) tok\/s\).*/\1/') "
  done
done
if [ "$QNN" = 1 ]; then
  name="ort:qnn (HTP emulated), qdq-a16w8"
  $T run -m "$OUT/qdq-a16w8" --backend ort:qnn --no-cpu-fallback -p "hi" -n 1 >/dev/null 2>&1 # compile once
  line=$($T run -m "$OUT/qdq-a16w8" --backend ort:qnn --no-cpu-fallback -t "$THREADS" -p "$PROMPT" -n 8 --temp 0 2>&1 >/dev/null | grep '^prompt:')
  PP[$name]="$(echo "$line" | sed -E 's/.*\(([0-9.]+) tok\/s\) \| generation.*/\1/')"
  TG[$name]="$(echo "$line" | sed -E 's/.*generation.*\(([0-9.]+) tok\/s\).*/\1/')"
  CONFIGS+=("$name||||")
fi

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "== speed, $THREADS threads, median of $ROUNDS alternated rounds (QNN: one run); ratio to tessera cpu on the Q4_1 file"
base_pp=$(echo "${PP["tessera cpu, Q4_1 gguf"]}" | median)
base_tg=$(echo "${TG["tessera cpu, Q4_1 gguf"]}" | median)
printf '| %-36s | %10s | %7s | %10s | %7s |\n' path "prompt t/s" ratio "gen t/s" ratio
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..38})" "------------" "---------" "------------" "---------"
for c in "${CONFIGS[@]}"; do
  name="${c%%|*}"
  pp=$(echo "${PP[$name]}" | median)
  tg=$(echo "${TG[$name]}" | median)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  printf '| %-36s | %10.2f | %6sx | %10.2f | %6sx |\n' "$name" "$pp" "$(ratio "$pp" "$base_pp")" "$tg" "$(ratio "$tg" "$base_tg")"
done
