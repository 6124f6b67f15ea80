#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test. Tests that need ../shared skip with a message
# when it is absent.
#
# Then, with KVSHARE_SANITIZERS=1, the sanitizer stages: build-tsan/ (scripts/build_tsan.sh) runs the server's
# tests under ThreadSanitizer; build-asan/ (scripts/build_asan.sh: clang, ASan+UBSan,
# stop at the first report) runs the whole suite again, and each libFuzzer target runs for KVSHARE_FUZZ_SECONDS
# (default 10) over its committed corpus (docs/fuzzing.md). Each stage's time is printed. They are opt-in until
# a whole run of them on main has been seen green (docs/fuzzing.md, "Status").
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  echo "test.sh: $name took $((SECONDS - t0)) s" >&2
}
stage install bash scripts/install.sh
stage build bash scripts/build.sh
stage tests ctest --test-dir build --output-on-failure -j2 --timeout 600
if [ "${KVSHARE_SANITIZERS:-0}" != 1 ]; then
  echo "test.sh: the TSan and ASan+UBSan suites and the fuzz targets were skipped (KVSHARE_SANITIZERS=1 runs them)" >&2
  exit 0
fi
# The server's threads under ThreadSanitizer (scripts/build_tsan.sh, scripts/test_tsan.sh): a few minutes.
stage "tsan build" bash scripts/build_tsan.sh
stage "tsan tests" bash scripts/test_tsan.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
stage "sanitizer build" bash scripts/build_asan.sh
cmake build-asan -DKVSHARE_FUZZ_SECONDS="${KVSHARE_FUZZ_SECONDS:-10}" >/dev/null
stage "sanitizer tests" ctest --test-dir build-asan --output-on-failure -j2 --timeout 1200 -LE fuzz
stage "fuzz targets" ctest --test-dir build-asan --output-on-failure -j2 -L fuzz
