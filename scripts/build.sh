#!/usr/bin/env bash
# Configures and builds kvshare (Release, 2 jobs) into build/, through ccache when it is installed
# (scripts/ccache_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ccache_env.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j2
