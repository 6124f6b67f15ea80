// Splits text around the matches of a regular expression, as the Hugging Face `Split` pre-tokenizer does.
// Patterns are PCRE2 with UTF and UCP, so \p{L}, \s and friends follow Unicode; invalid UTF-8 in the
// text never matches and never fails.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace kvshare {

// What becomes of a match (Hugging Face's SplitDelimiterBehavior).
enum class SplitBehavior {
  kIsolated,            // each match is a piece of its own
  kRemoved,             // matches are dropped
  kMergedWithPrevious,  // a match joins the piece before it
  kMergedWithNext,      // a match joins the piece after it
  kContiguous,          // adjacent matches form one piece
};

class RegexSplitter {
 public:
  // `literal`: the pattern is plain text, not a regular expression. `invert`: the pattern describes the
  // text between the delimiters.
  static Result<RegexSplitter> create(const std::string& pattern, bool literal, SplitBehavior behavior,
                                      bool invert);

  // Appends the non-empty pieces of `text` to `out`, in order; they are views into `text`.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  // What create() was given (make_model names a pre-tokenizer for GGUF by them).
  const std::string& pattern() const { return pattern_; }
  bool literal() const { return literal_; }
  SplitBehavior behavior() const { return behavior_; }
  bool inverted() const { return invert_; }

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> regex_;  // shared: compiled code is read-only, matching is thread-safe
  std::string pattern_;
  bool literal_ = false;
  SplitBehavior behavior_ = SplitBehavior::kIsolated;
  bool invert_ = false;
};

}  // namespace kvshare
