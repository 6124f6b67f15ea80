#!/usr/bin/env bash
# Configures and builds the sanitizer folder build-asan/: clang, -O1 -g, -fsanitize=address,undefined
# -fno-sanitize-recover=all, with the tests and the libFuzzer targets (fuzz/; docs/fuzzing.md). The Python module
# is left out (an ASan runtime cannot be loaded into a Python interpreter that was started without it).
set -euo pipefail
cd "$(dirname "$0")/.."
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 \
  -DKVSHARE_BUILD_FUZZERS=ON -DKVSHARE_BUILD_PYTHON=OFF "${launcher[@]}" >/dev/null
cmake --build build-asan -j2
