#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test. Tests that need ../shared skip with a message
# when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j2 --timeout 600
