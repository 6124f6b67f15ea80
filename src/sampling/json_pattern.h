// A JSON schema's "pattern" (an ECMA-262 regular expression that a string must match somewhere, unless anchored),
// compiled to a Thompson NFA that JSON mode follows a character at a time. A string under a pattern is written in
// printable ASCII without '"' or '\' (no escapes), so its text is its value; a pattern that only other characters
// could match is refused.
//
// The subset: literals; '.'; classes [a-z0-9_] and [^...]; \d \w \s and their negations; escapes of punctuation,
// \xHH and \uHHHH; groups (...) and (?:...); alternation |; quantifiers * + ? {n} {n,} {n,m} and their
// lazy forms (the same language); ^ at the start and $ at the end of the pattern or of one of its top-level
// alternatives. Refused, with what and where: backreferences, lookaround, \b, named groups (Python and ECMA spell
// them differently), a '{' that is not a count, quantifiers right after quantifiers, characters past ASCII, and
// patterns over kMaxStates states (counted repetitions are expanded) or kMaxClosure closure entries.
#pragma once

#include <bitset>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace kvshare {

class Pattern {
 public:
  static constexpr size_t kMaxStates = 512;
  // The states a character may lead to, summed over the states (the work of one step at most): optional pieces in a
  // row ((?:.?){250}) make this grow with the square of the states, and each token inside the string pays it.
  static constexpr size_t kMaxClosure = 4096;

  // An error says what is not supported, or that no text written as above matches.
  static Result<std::shared_ptr<const Pattern>> compile(std::string_view regex);

  // The NFA's live states as a set (bytes of a bitset), before any character.
  const std::string& start() const { return start_; }
  // The set after character `c`; false when no state that can still reach a match remains (the text can no
  // longer match however it goes on) or `c` is not written under a pattern.
  bool step(std::string& set, char c) const;
  // Whether the text read to `set` matches.
  bool matches(const std::string& set) const;
  // The characters some text needs at a place where nothing else will do ("A" in ^A[0-9]$): the vocabulary must
  // write each alone.
  const std::bitset<256>& forced() const { return forced_; }
  size_t size() const { return states_.size(); }  // states

  // Whether `c` may stand in a string under a pattern: printable ASCII but '"' and '\'.
  static bool writable(char c) { return c >= 0x20 && c < 0x7F && c != '"' && c != '\\'; }

  // (the NFA's states, built by compile)
  struct State {
    std::bitset<128> chars;  // a character state: the characters it takes, to `next`
    int32_t next = -1, alt = -1;  // a split: next and alt (chars none); the match state: both -1, chars none
    bool split = false;
  };

 private:
  class Parser;
  void finish();  // closures, live states, the start set, forced characters
  void add_closure(int32_t s, std::vector<bool>& seen, std::vector<int32_t>& out) const;

  std::vector<State> states_;
  int32_t entry_ = -1, match_ = -1;
  std::vector<std::vector<int32_t>> closure_;  // per state: the character and match states its splits lead to
  std::vector<bool> live_;                     // a character state from which the match state is reachable
  std::string start_;
  std::bitset<256> forced_;
  // Steps already taken, (set, character) -> set: a token walk meets the same few sets again and again, and a step
  // costs up to kMaxClosure. Bounded (cleared when full); guarded, as a schema may be shared.
  static constexpr size_t kMaxCached = 16384;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::string> cache_;
};

}  // namespace kvshare
