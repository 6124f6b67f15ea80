#!/usr/bin/env bash
# The server's threads under ThreadSanitizer (build-tsan/, scripts/build_tsan.sh): its unit tests (the engine
# thread and the hand-over) and the curl end-to-end test against a TSan-built kvshare serve. The first report
# stops the process (halt_on_error), which fails the test. The curl test's whole log is printed when it fails.
# scripts/tsan.supp says why the accesses that Debian's uninstrumented cpp-httplib makes itself are not checked.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp}
build-tsan/src/server/server_test --gtest_brief=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if KVSHARE_BIN="$PWD/build-tsan/kvshare" python3 tests/server/curl_test.py >"$log" 2>&1; then
  tail -3 "$log"
else
  cat "$log"
  exit 1
fi
