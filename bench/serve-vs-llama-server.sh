#!/usr/bin/env bash
# Serving benchmark: `tessera serve` against llama.cpp's `llama-server -np 4 -cb`, same model file,
# same threads, same machine, in the same run.
#
# Builds llama-server from the llama-cpp-python sdist (as bench/compare-llama-cpp.sh builds
# llama-bench, in the same BENCH_DIR), builds Tessera, then for each round starts one server at a
# time (alternating which goes first) and drives it with bench/serve_load.py at each concurrency:
# streaming chat completions of varied prompts, temperature 0, 64 tokens at most. Then the
# prefix-cache test: the same ~1000-token system prompt before short questions, one request at a
# time, `tessera serve` with and without its prefix cache. Prints markdown tables of the medians.
#
#   bench/serve-vs-llama-server.sh [--model smollm2|FILE] [--threads 2] [--rounds 2]
#       [--requests 32] [--concurrency 1,4,16] [--prefix-requests 12] [--out FILE.jsonl]
#
#   --requests         requests per run (at least twice the concurrency)
#   LLAMA_CPP_VERSION  llama-cpp-python sdist to build (default 0.3.36)
#   BENCH_DIR          where llama.cpp goes (default ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/bench)
#   TESSERA            a tessera binary to use instead of building one
#   TESSERA_SERVE_ARGS, LLAMA_SERVER_ARGS   extra flags for either server (e.g. "--poll 0" for
#                      llama-server on a machine whose cores are shared with other work)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=smollm2
THREADS=2
ROUNDS=2
REQUESTS=32
CONCURRENCY=1,4,16
PREFIX_REQUESTS=12
CTX=4096
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --requests) REQUESTS="$2"; shift ;;
    --concurrency) CONCURRENCY="$2"; shift ;;
    --prefix-requests) PREFIX_REQUESTS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
  shift
done

source bench/llama-cpp-source.sh
LLAMA_SERVER="$SRC/build/bin/llama-server"

if [ ! -x "$LLAMA_SERVER" ]; then
  llama_cpp_source
  llama_cpp_cc_flags
  # Same configuration as compare-llama-cpp.sh plus the server, without its web UI (which
  # would be downloaded).
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF "${CC_FLAGS[@]}" >/dev/null
  cmake --build "$SRC/build" -j"$(nproc)" --target llama-server >/dev/null
fi

if [ -z "${TESSERA:-}" ]; then
  cargo build --release --quiet --bin tessera
  TESSERA="${CARGO_TARGET_DIR:-$PWD/target}/release/tessera"
fi

if [ -f "$MODEL" ]; then
  MODEL_FILE="$MODEL"
else
  "$TESSERA" pull "$MODEL"
  MODEL_FILE="$("$TESSERA" pull --list | sed -n "s/^$MODEL .*\[cached: \(.*\)\]\$/\1/p")"
  [ -f "$MODEL_FILE" ] || { echo "error: no cached file for model $MODEL" >&2; exit 1; }
fi

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tessera-serve-bench.XXXXXX")"
OUT="${OUT:-$LOG_DIR/results.jsonl}"
: >"$OUT"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# The servers are local: a proxy set in the environment must not carry the health checks.
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME ARGS...: starts one server on a free port, waits for /health, sets URL and MODEL_ID.
start_server() {
  local name="$1"
  shift
  local port log
  port="$(free_port)"
  log="$LOG_DIR/$name.log"
  "$@" --port "$port" >"$log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$port"
  MODEL_ID="$(python3 - "$URL" "$SERVER_PID" "$log" <<'EOF'
import json, os, sys, time, urllib.request
url, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 300
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"error: the server exited while starting; its log ({log}):\n" + open(log).read()[-3000:])
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit(f"error: {url}/health not ready after 300 s; see {log}")
    time.sleep(0.2)
with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
    print(json.load(r)["data"][0]["id"])
EOF
)"
}

read -r -a tessera_extra <<<"${TESSERA_SERVE_ARGS:-}"
read -r -a llama_extra <<<"${LLAMA_SERVER_ARGS:-}"
tessera_cmd=("$TESSERA" serve -m "$MODEL_FILE" -t "$THREADS" -c "$CTX" "${tessera_extra[@]}")
# -c is the total over the 4 slots: each slot gets the context a Tessera sequence gets.
llama_cmd=("$LLAMA_SERVER" -m "$MODEL_FILE" -t "$THREADS" -tb "$THREADS" -np 4 -cb -c $((4 * CTX))
  --host 127.0.0.1 "${llama_extra[@]}")

load() { # load LABEL ROUND ARGS...
  local label="$1" round="$2"
  shift 2
  python3 bench/serve_load.py --url "$URL" --model "$MODEL_ID" --label "$label" --round "$round" "$@" >>"$OUT"
}

echo "model $MODEL_FILE, $THREADS threads, $ROUNDS round(s), concurrency $CONCURRENCY; logs in $LOG_DIR" >&2
IFS=, read -r -a LEVELS <<<"$CONCURRENCY"
for ((round = 0; round < ROUNDS; round++)); do
  order=(tessera llama-server)
  [ $((round % 2)) = 1 ] && order=(llama-server tessera)
  for name in "${order[@]}"; do
    if [ "$name" = tessera ]; then
      start_server "$name" "${tessera_cmd[@]}"
    else
      start_server "$name" "${llama_cmd[@]}"
    fi
    for c in "${LEVELS[@]}"; do
      n=$((REQUESTS > 2 * c ? REQUESTS : 2 * c))
      load "$name" "$round" --concurrency "$c" --requests "$n"
    done
    stop_server
  done
done

for ((round = 0; round < ROUNDS; round++)); do
  for cache in on off; do
    extra=()
    [ "$cache" = off ] && extra=(--no-prefix-cache)
    start_server "tessera-prefix-$cache" "${tessera_cmd[@]}" "${extra[@]}"
    load "tessera prefix cache $cache" "$round" --concurrency 1 --requests "$PREFIX_REQUESTS" \
      --shared-system-tokens 1000 --max-tokens 8
    stop_server
  done
done

echo
LLAMA_VERSION="$("$LLAMA_SERVER" --version 2>&1 | grep -m1 version || true)"
CPU="$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "$("$TESSERA" --version 2>/dev/null | head -1) vs llama-server ($LLAMA_VERSION),"
echo "$(basename "$MODEL_FILE"), $THREADS threads, $(nproc) cores ($CPU)"
echo
python3 bench/serve_load.py --report "$OUT"
echo
echo "raw results: $OUT" >&2
