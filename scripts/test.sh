#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test. Tests that need ../shared skip with a message
# when it is absent.
#
# Then the sanitizer stages (KVSHARE_SANITIZERS=0 skips them): build-tsan/ (scripts/build_tsan.sh) runs the
# server's tests under ThreadSanitizer, and build-asan/ (scripts/build_asan.sh: g++, ASan+UBSan, stop at the first
# report) runs the whole suite again. Then the fuzz stage (KVSHARE_FUZZ=0 skips it): build-fuzz/
# (scripts/build_fuzz.sh: clang) runs each libFuzzer target for KVSHARE_FUZZ_SECONDS (default 10) over its
# committed corpus (docs/fuzzing.md). Each stage's wall time and CPU time (user + sys, all its processes) is
# printed; docs/fuzzing.md, "What CI runs", has them measured from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {
  local name=$1
  shift
  local TIMEFORMAT="test.sh: $name took %0R s wall, %0U s user + %0S s sys"
  time "$@"
}
stage install bash scripts/install.sh
stage build bash scripts/build.sh
stage tests ctest --test-dir build --output-on-failure -j2 --timeout 600
if [ "${KVSHARE_SANITIZERS:-1}" = 0 ]; then
  echo "test.sh: the TSan and ASan+UBSan suites and the fuzz targets were skipped (KVSHARE_SANITIZERS=0)" >&2
  exit 0
fi
# The server's threads under ThreadSanitizer (scripts/build_tsan.sh, scripts/test_tsan.sh).
stage "tsan build" bash scripts/build_tsan.sh
stage "tsan tests" bash scripts/test_tsan.sh
# The whole suite under ASan+UBSan, leaks on, stopping at the first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
stage "asan build" bash scripts/build_asan.sh
stage "asan tests" ctest --test-dir build-asan --output-on-failure -j2 --timeout 1200
if [ "${KVSHARE_FUZZ:-1}" = 0 ]; then
  echo "test.sh: the libFuzzer targets were skipped (KVSHARE_FUZZ=0)" >&2
  exit 0
fi
stage "fuzz build" bash scripts/build_fuzz.sh
cmake build-fuzz -DKVSHARE_FUZZ_SECONDS="${KVSHARE_FUZZ_SECONDS:-10}" >/dev/null
stage "fuzz targets" ctest --test-dir build-fuzz --output-on-failure -j2 -L fuzz
