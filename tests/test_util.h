// Helpers for tests: where ../shared is, and skipping with a clear message when it is absent.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace kvshare::testing {

// The shared data folder (../shared beside the source tree, or $KVSHARE_SHARED_DIR); "" when absent.
std::string shared_dir();
// The source tree's root, for committed goldens.
std::string source_dir();
// A fresh empty scratch folder for this test.
std::string temp_dir(const std::string& name);

}  // namespace kvshare::testing

// Skips the current test, saying what is missing, when `path` (relative to ../shared) does not exist.
#define KV_REQUIRE_SHARED(path)                                                                         \
  do {                                                                                                  \
    if (::kvshare::testing::shared_dir().empty() ||                                                     \
        !::kvshare::file_exists(::kvshare::testing::shared_dir() + "/" + (path)))                       \
      GTEST_SKIP() << "skipped: needs ../shared/" << (path) << " (the shared data folder is absent)";   \
  } while (0)
