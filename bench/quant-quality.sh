#!/usr/bin/env bash
# The cost in quality of every quantization format: quantizes one model to every format Tessera
# writes, then scores all of them against the source in one `tessera eval` run (perplexity, KL
# divergence, top-1 agreement, bits per weight), with a JSON file and an SVG plot.
#
#   bench/quant-quality.sh MODEL OUT_DIR [TEXT_FILE] [FORMATS...]
#
# CHUNKS=N in the environment scores only the first N chunks of 512 tokens (faster, wider error bars).
# Then `bench/quant_speed.py --tessera TESSERA OUT_DIR` times every format beside Q4_0 and Q8_0.
# MODEL is anything `tessera quantize -m` accepts (smollm2, gemma3-270m, a path). TEXT_FILE
# defaults to the licence texts Debian ships (text the models were not tuned on). The source is
# whatever MODEL holds: for a quantized GGUF (SmolLM2's Q4_1, Gemma's Q4_K_M) every format is
# made from its dequantized weights, and the reference is an f32 GGUF of those weights
# (`--format f32`) run in f32, not the quantized file (whose kernels quantize activations too)
# and not the original bf16 model.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
model=$1
out=$2
text=${3:-}
shift $(( $# < 3 ? $# : 3 ))
formats=("$@")
if [ ${#formats[@]} -eq 0 ]; then
  formats=(q8_0 w8a8-int8 fp8-e4m3 q6_k q5_k q5_0 q4_k q4_0 q4_1 w4a16-rtn w4a16-awq w4a16-gptq nvfp4 mxfp4 mxfp4-ct)
fi
mkdir -p "$out"
if [ -z "$text" ]; then
  text=$out/eval-text.txt
  cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/MPL-2.0 >"$text"
fi

cargo build --release --quiet --bin tessera
tessera=${CARGO_TARGET_DIR:-target}/release/tessera
if [ -e "$model" ]; then source_path=$model; else source_path=$("$tessera" pull "$model" | tail -n 1); fi

reference=$source_path
case $source_path in
  *.gguf)
    reference=$out/source-f32.gguf
    if [ ! -e "$reference" ]; then
      echo "== dequantize the source to f32" >&2
      "$tessera" quantize -m "$source_path" -o "$reference" --format f32 >"$out/f32.quantize.txt"
    fi
    ;;
esac
models=(-m "$reference")
for f in "${formats[@]}"; do
  case $f in
    q*|mxfp4) dest=$out/$f.gguf ;;
    *) dest=$out/$f ;;
  esac
  if [ ! -e "$dest" ]; then
    echo "== quantize $f" >&2
    "$tessera" quantize -m "$source_path" -o "$dest" --format "$f" >"$out/$f.quantize.txt"
  fi
  models+=(-m "$dest")
done

"$tessera" eval "${models[@]}" -f "$text" -c 512 ${CHUNKS:+--chunks "$CHUNKS"} \
  --json "$out/quality.json" --plot "$out/quality-kl.svg" --plot-metric kl | tee "$out/quality.txt"
