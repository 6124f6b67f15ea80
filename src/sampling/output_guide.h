// A completion's way through a constraint on its text (SamplingParams::choice, JSON): which tokens its next
// draw may take, and when the text is complete. Each completion has its own guide; the rules behind it (a
// ChoiceSet, JsonRules) are checked once and shared.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvshare {

class OutputGuide {
 public:
  virtual ~OutputGuide() = default;
  // The tokens the next draw may take, sorted; valid until the next call. `end_ids` (EOS) are among them where the
  // text may end there and still go on (a choice that a longer one continues).
  virtual const std::vector<int32_t>& allowed(std::span<const int32_t> end_ids) = 0;
  // `token` was drawn: its bytes join the text.
  virtual void advance(int32_t token) = 0;
  // Whether the text is complete and cannot go on: the request stops there (kStop).
  virtual bool complete() const = 0;
};

}  // namespace kvshare
