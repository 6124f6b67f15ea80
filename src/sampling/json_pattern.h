// A JSON schema's "pattern" (an ECMA-262 regular expression that a string must match somewhere, unless anchored),
// compiled to a Thompson NFA, which JSON mode follows a character at a time as a DFA built as it is walked. A string under a pattern is written in
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

#include <array>
#include <atomic>
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
  // The DFA states safe_characters' search may visit from one place (more: none are safe).
  static constexpr size_t kMaxSafeRegion = 64;

  // An error says what is not supported, or that no text written as above matches.
  static Result<std::shared_ptr<const Pattern>> compile(std::string_view regex);

  // A place in the pattern, before any character: a state of its DFA (built as it is walked, a state per set of
  // the NFA's live states met), held in a short string so that a JSON path copies and compares it cheaply.
  const std::string& start() const { return start_; }
  // The place after character `c`; false when no state that can still reach a match remains (the text can no
  // longer match however it goes on) or `c` is not written under a pattern.
  bool step(std::string& place, char c) const;
  // Whether the text read to `place` matches.
  bool matches(const std::string& place) const;
  // The characters that can follow `place` in any number and order without the text losing every way to a match
  // (at "the big ca" under cat|dog: all written ones; under ^[a-z]+@[a-z]+$ after "ab": a to z): a token of these
  // characters alone may follow, unread. None where finding them would take more than kMaxSafeRegion states, or
  // the DFA is half full.
  const std::bitset<128>& safe_characters(const std::string& place) const;
  // The characters some text needs at a place where nothing else will do ("A" in ^A[0-9]$): the vocabulary must
  // write each alone.
  const std::bitset<256>& forced() const { return forced_; }
  size_t size() const { return states_.size(); }  // states
  size_t dfa_states() const;                        // the DFA's states made so far

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
  std::bitset<256> forced_;
  // The DFA, built as it is walked. A state's steps are filled in as they are first taken (under the mutex) and read
  // without it; its set and match bit never change once made. Past kMaxDfaStates states (sets such as .*a.{20}'s
  // grow with 2^20), a place is its NFA set itself (kRawPlace and the set's bytes), its steps kept in a bounded
  // cache.
  static constexpr int32_t kMaxDfaStates = 4096, kDfaChunk = 64;
  static constexpr size_t kMaxRawSteps = 16384;  // raw places' steps kept (cleared when full)
  static constexpr int32_t kUnknown = -2, kDead = -1, kNoRoom = -3;
  static constexpr char kRawPlace = '\xff';
  static constexpr int kWritable = 0x7F - 0x20;  // the characters a step may take: 0x20 to 0x7E
  struct DfaState {
    DfaState();
    std::string set;
    bool matches = false;
    std::array<std::atomic<int32_t>, kWritable> next;  // per character - 0x20: a state, kDead or kUnknown
    std::atomic<bool> has_safe{false};
    std::bitset<128> safe;  // safe_characters, once has_safe
  };
  std::string next_set(std::string_view set, char c) const;  // the NFA's step (empty: no live state)
  DfaState& dfa(int32_t id) const {
    return chunks_[static_cast<size_t>(id / kDfaChunk)].load(std::memory_order_acquire)[id % kDfaChunk];
  }
  int32_t add_step(int32_t from, char c) const;   // (under the mutex) the step's target, kDead or kNoRoom
  int32_t state_of(const std::string& set) const; // (under the mutex) its state, made if there is room; kNoRoom
  static std::string place_of(int32_t id);
  static int32_t id_of(const std::string& place);  // -1 for a raw place

  std::string start_;  // the start set's place
  std::string start_set_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, int32_t> ids_;
  mutable std::vector<std::unique_ptr<DfaState[]>> owned_;
  mutable std::array<std::atomic<DfaState*>, kMaxDfaStates / kDfaChunk> chunks_{};
  mutable int32_t dfa_size_ = 0;
  mutable std::unordered_map<std::string, std::string> raw_steps_;  // (raw set, character) -> place ("": none)
};

}  // namespace kvshare
