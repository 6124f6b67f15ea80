#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

namespace kvshare {
namespace {

TEST(Sampler, GreedyTakesFirstMaximum) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(argmax(logits.data(), 4), 1);
  SamplingParams p;
  p.temperature = 0;
  Rng rng(1);
  std::vector<std::pair<float, int32_t>> scratch;
  EXPECT_EQ(sample_token(logits.data(), 4, p, rng, scratch), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = static_cast<float>(i % 7) * 0.3f;
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<std::pair<float, int32_t>> scratch;
  Rng a(42), b(42), c(43);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 20; ++i) {
    ta.push_back(sample_token(logits.data(), 50, p, a, scratch));
    tb.push_back(sample_token(logits.data(), 50, p, b, scratch));
    tc.push_back(sample_token(logits.data(), 50, p, c, scratch));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  std::vector<float> logits = {5.0f, 4.9f, 1.0f, 0.5f, 0.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  Rng rng(7);
  std::vector<std::pair<float, int32_t>> scratch;
  std::map<int32_t, int> seen;
  for (int i = 0; i < 500; ++i) seen[sample_token(logits.data(), 5, p, rng, scratch)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], 100);
  EXPECT_GT(seen[1], 100);

  p.top_k = 0;
  p.top_p = 0.3f;  // token 0 alone holds ~50% of the mass
  seen.clear();
  for (int i = 0; i < 200; ++i) seen[sample_token(logits.data(), 5, p, rng, scratch)]++;
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.begin()->first, 0);
}

TEST(Sampler, DistributionFollowsSoftmax) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  SamplingParams p;
  p.temperature = 1.0f;
  Rng rng(3);
  std::vector<std::pair<float, int32_t>> scratch;
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += sample_token(logits.data(), 2, p, rng, scratch);
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.02);
}

TEST(Sampler, ValidateNamesTheBadParameter) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(p.validate().message().find("temperature"), std::string::npos);
  p = {};
  p.top_p = 0;
  EXPECT_NE(p.validate().message().find("top_p"), std::string::npos);
  p = {};
  p.max_tokens = 0;
  EXPECT_NE(p.validate().message().find("max_tokens"), std::string::npos);
  EXPECT_TRUE(SamplingParams{}.validate().ok());
}

}  // namespace
}  // namespace kvshare
