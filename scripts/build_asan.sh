#!/usr/bin/env bash
# Configures and builds the sanitizer folder build-asan/: g++, -O1 -g1, -fsanitize=address,undefined
# -fno-sanitize-recover=all (KVSHARE_SANITIZE), every library and test and the kvshare binary, all three kernel
# paths. scripts/test.sh runs the whole suite there, each test once: the engine and golden tests on the CPU's best
# kernel path (KVSHARE_TEST_EVERY_ISA=OFF; the normal suite runs them on every path), while the kernels' tests and
# the cross-ISA logits checksums run every path the CPU has, instrumented. The Python module is left out (an ASan runtime cannot be
# loaded into a Python interpreter that was started without it). The libFuzzer targets need clang: they are
# built apart, in build-fuzz/ (scripts/build_fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ccache_env.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
  -DKVSHARE_SANITIZE=ON -DKVSHARE_BUILD_PYTHON=OFF -DKVSHARE_TEST_EVERY_ISA=OFF "${launcher[@]}" >/dev/null
cmake --build build-asan -j2
