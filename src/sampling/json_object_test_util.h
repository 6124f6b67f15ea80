// For json_object_test and fuzz_json_object only (not part of kv_sampling): which texts a strict JSON parser takes
// that JSON mode's recognizer must take too.
#pragma once

#include <string>
#include <string_view>

#include "sampling/json_object.h"

namespace kvshare {

// Whether `text` stays inside JsonPrefix's limits, checked loosely: every bracket counts toward the nesting, and
// every run of whitespace, in strings too, must be one space or a newline and at most kMaxIndent spaces or tabs.
// No NUL bytes either: nlohmann takes "{}" followed by NULs as "{}". A text this passes is one the recognizer must
// take whole whenever the parser takes it as an object.
inline bool within_json_mode_limits(std::string_view text) {
  int brackets = 0;
  std::string run;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char c = i < text.size() ? text[i] : 'x';
    if (c == '\0') return false;
    brackets += c == '{' || c == '[';
    if (brackets > JsonPrefix::kMaxDepth) return false;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      run += c;
      continue;
    }
    const bool ok = run.empty() || run == " " ||
                    (run[0] == '\n' && run.size() <= 1 + JsonPrefix::kMaxIndent &&
                     run.find_first_not_of(" \t", 1) == std::string::npos);
    if (!ok) return false;
    run.clear();
  }
  return true;
}

}  // namespace kvshare
