#!/usr/bin/env bash
# Configures and builds the sanitizer folder build-asan/: g++, -O1 -g1, -fsanitize=address,undefined
# -fno-sanitize-recover=all (KVSHARE_SANITIZE), every library and test and the kvshare binary, all three kernel
# paths. scripts/test.sh runs the whole suite there. The Python module is left out (an ASan runtime cannot be
# loaded into a Python interpreter that was started without it). The libFuzzer targets need clang: they are
# built apart, in build-fuzz/ (scripts/build_fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ccache_env.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
  -DKVSHARE_SANITIZE=ON -DKVSHARE_BUILD_PYTHON=OFF "${launcher[@]}" >/dev/null
cmake --build build-asan -j2
