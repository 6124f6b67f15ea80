// Sequence's small rules about which of its tokens a step computes.
#include "engine/sequence.h"

#include <gtest/gtest.h>

namespace kvshare {
namespace {

Sequence make(int32_t prompt_tokens) {
  return Sequence(0, std::vector<int32_t>(static_cast<size_t>(prompt_tokens), 5), SamplingParams{}, "", 0);
}

TEST(Sequence, OnlyTheNewestGeneratedTokenAloneIsADecode) {
  Sequence one = make(1);
  EXPECT_FALSE(one.decodes(1)) << "a one-token prompt's only token is prefill";
  Sequence s = make(4);
  EXPECT_FALSE(s.decodes(4));
  s.num_computed = 3;
  EXPECT_FALSE(s.decodes(1)) << "the prompt's last token";
  s.num_computed = 4;
  s.tokens.insert(s.tokens.end(), {7, 8, 9});  // three generated
  s.num_computed = 6;
  EXPECT_TRUE(s.decodes(1));
  // After a preemption the generated tokens are computed again: several at once, or one that is not the newest.
  // The engine's metrics counted those steps as decode (they ran no prompt token) and so overstated the decode
  // rate; they are prefill work.
  s.num_computed = 4;
  EXPECT_FALSE(s.decodes(2));
  EXPECT_FALSE(s.decodes(1));
  s.num_computed = 5;
  EXPECT_FALSE(s.decodes(2));
}

}  // namespace
}  // namespace kvshare
