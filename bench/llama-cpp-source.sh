# Sourced by the bench scripts that build llama.cpp: where its source lives and how to get it.
#
#   LLAMA_CPP_VERSION  llama-cpp-python sdist to build (default 0.3.36)
#   BENCH_DIR          where llama.cpp and generated models go
#                      (default ${XDG_CACHE_HOME:-$HOME/.cache}/tessera/bench)
#
# Sets VERSION, BENCH_DIR and SRC (llama.cpp's source tree), and defines:
#   llama_cpp_source   fetches and unpacks the sdist into BENCH_DIR unless SRC exists
#   llama_cpp_cc_flags sets CC_FLAGS, cmake's compiler flags: clang, which keeps AMX, when
#                      present; otherwise GCC with AMX off (GCC 12 emits illegal AMX
#                      instructions on some CPUs)

VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
BENCH_DIR="${BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/bench}"
mkdir -p "$BENCH_DIR"
SRC="$BENCH_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"

llama_cpp_source() {
  if [ ! -d "$SRC" ]; then
    python3 -m pip install --quiet scikit-build-core numpy gguf
    # --no-binary/--no-build-isolation: fetch the sdist itself, without building cmake from source.
    python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
      -d "$BENCH_DIR" "llama-cpp-python==$VERSION"
    tar -xzf "$BENCH_DIR/llama_cpp_python-$VERSION.tar.gz" -C "$BENCH_DIR"
  fi
}

llama_cpp_cc_flags() {
  if command -v clang >/dev/null; then
    CC_FLAGS=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  else
    local noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    CC_FLAGS=(-DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx")
  fi
}
