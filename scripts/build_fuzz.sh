#!/usr/bin/env bash
# Configures and builds the fuzz folder build-fuzz/: clang 14, -O1 -g, -fsanitize=fuzzer-no-link,address,undefined
# on every library, and only the libFuzzer targets (fuzz/; docs/fuzzing.md), not the tests (build-asan/ runs those
# under the same sanitizers, built with g++). `ctest --test-dir build-fuzz -L fuzz` then runs each target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ccache_env.sh
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 \
  -DKVSHARE_BUILD_FUZZERS=ON -DKVSHARE_BUILD_TESTS=OFF -DKVSHARE_BUILD_PYTHON=OFF "${launcher[@]}" >/dev/null
cmake --build build-fuzz -j2 --target fuzzers
