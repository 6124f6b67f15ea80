#!/usr/bin/env bash
# Configures and builds the ThreadSanitizer folder build-tsan/: g++, -O1 -g1 -fsanitize=thread
# (KVSHARE_SANITIZE_THREAD), only what the threaded tests need (the server's unit tests and the kvshare binary).
# scripts/test.sh then runs the server's tests there with OMP_NUM_THREADS=1: the engine's OpenMP runtime is not
# instrumented, so its own threads would be reported falsely; the threads under test are the server's (HTTP
# threads, the engine thread).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ccache_env.sh
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DKVSHARE_BUILD_PYTHON=OFF \
  -DKVSHARE_SANITIZE_THREAD=ON "${launcher[@]}" >/dev/null
cmake --build build-tsan -j2 --target server_test kvshare
