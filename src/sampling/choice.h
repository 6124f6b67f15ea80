// Guided choice (vLLM's structured_outputs.choice, OpenAI-server field guided_choice): the generated text must be
// one of a list of strings, for a batch job that labels or classifies. The constraint works on the bytes each
// token adds to the text, so the model may spell a choice with any tokens (" positive", "pos" + "itive", byte
// tokens), as vLLM's grammar backends allow, and a token is offered only when the rest of some choice can still
// be spelled after it: a draw never runs into a dead end.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "sampling/output_guide.h"

namespace kvshare {

// Whether `key` of vLLM's structured_outputs is one of its options for its grammar backends
// (disable_any_whitespace, ...): the server and batch lines take them. disable_any_whitespace makes JSON mode
// compact; the others change nothing.
bool is_structured_output_option(std::string_view key);

// The vocabulary as text: which tokens add which bytes to the output. Built once per tokenizer.
class TokenTexts {
 public:
  // texts[id]: the bytes token `id` adds to the text; "" for a token a choice never uses (control tokens, which
  // the text leaves out, and tokens that add nothing). strip_first_space: the text drops one leading space of the
  // first token when a completion does not continue prompt text (SentencePiece's prepended "▁").
  TokenTexts(std::vector<std::string> texts, bool strip_first_space);
  TokenTexts(const TokenTexts&) = delete;  // its index views its own strings
  TokenTexts& operator=(const TokenTexts&) = delete;

  // The ids whose text is exactly `bytes` (none for "").
  std::span<const int32_t> ids_of(std::string_view bytes) const;
  const std::string& text(int32_t id) const { return texts_[static_cast<size_t>(id)]; }
  // The bytes token `id` adds: its text, less the leading space a completion's first token drops when
  // `first_drops_space` and the vocabulary strips it (strip_first_space).
  std::string_view added_text(int32_t id, bool first_drops_space) const {
    std::string_view t = text(id);
    if (first_drops_space && strip_first_space_ && !t.empty() && t[0] == ' ') t.remove_prefix(1);
    return t;
  }
  int32_t size() const { return static_cast<int32_t>(texts_.size()); }
  size_t max_length() const { return max_length_; }
  bool strip_first_space() const { return strip_first_space_; }

 private:
  std::vector<std::string> texts_;
  std::unordered_map<std::string_view, std::vector<int32_t>> ids_;  // keys view texts_
  size_t max_length_ = 0;
  bool strip_first_space_ = false;
};

// A request's choices, checked against the vocabulary once (its n completions share it).
class ChoiceSet {
 public:
  // Sorted, duplicates dropped; an error names a choice that no tokens of `vocab` can spell. `strip_first_space`:
  // the completion's first token drops a leading space (TokenTexts::strip_first_space, when it does not continue
  // prompt text).
  static Result<ChoiceSet> make(const std::vector<std::string>& choices, const TokenTexts& vocab,
                                bool strip_first_space);

  // The tokens that may come after `so_far` (the bytes generated until now; `at_start`: no token yet): each token
  // whose text extends it to the start of a choice whose rest can still be spelled, and `end_ids` (EOS) when
  // `so_far` is a whole choice that another one continues. Where the first token drops its leading space, a token
  // that is one space alone adds nothing and ends the start (the next token's space stays): it is offered when a
  // choice can be spelled from there. Sorted, without duplicates. The n completions of a request share one set
  // and often stand at the same place: the last kMemo results are kept (the engine's thread alone calls this).
  const std::vector<int32_t>& allowed(const TokenTexts& vocab, std::string_view so_far, bool at_start,
                                      std::span<const int32_t> end_ids) const;
  // The bytes `token` adds after `so_far` (its text, without the leading space that the first token drops).
  std::string_view added_text(const TokenTexts& vocab, int32_t token, bool at_start) const;
  // Whether `so_far` is a whole choice that no other choice continues (one that could still be spelled from
  // there): the output is complete.
  bool complete(std::string_view so_far) const;

 private:
  void compute_allowed(const TokenTexts& vocab, std::string_view so_far, bool at_start,
                       std::span<const int32_t> end_ids, std::vector<int32_t>& out) const;
  // Whether some choice other than `so_far` itself starts with it and can be spelled on from there.
  bool continues(std::string_view so_far) const;

  struct Memo {
    std::string so_far;
    bool at_start = false;
    std::vector<int32_t> end_ids;
    std::vector<int32_t> tokens;
  };
  static constexpr size_t kMemo = 4;
  mutable std::vector<Memo> memo_;  // most recent first
  std::vector<std::string> choices_;
  // spellable_[c][i]: the bytes of choice c from i on can be spelled by tokens (i = size: nothing left).
  std::vector<std::vector<uint8_t>> spellable_;
  bool strip_first_space_ = false;
};

// One completion of a request with choices. `vocab` outlives it.
std::unique_ptr<OutputGuide> follow_choices(std::shared_ptr<const ChoiceSet> set, const TokenTexts& vocab);

}  // namespace kvshare
