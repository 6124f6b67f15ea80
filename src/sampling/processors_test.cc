// Each processor against numbers worked out by hand (or a direct double-precision formula).
#include "sampling/processors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace kvshare {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Processors, MaskTokensSetsMinusInfinity) {
  std::vector<float> row = {1, 2, 3, 4};
  const std::vector<int32_t> ids = {3, 1, 99};  // 99 is outside the row: skipped
  mask_tokens(row, ids);
  EXPECT_EQ(row, (std::vector<float>{1, -kInf, 3, -kInf}));
}

TEST(Processors, KeepOnlyTokensMasksEveryOtherToken) {
  std::vector<float> row = {1, 2, 3, 4, 5};
  std::vector<float> scratch;
  const std::vector<int32_t> ids = {3, 0, 3, 99};  // a repeat and an id outside the row change nothing
  keep_only_tokens(row, ids, scratch);
  EXPECT_EQ(row, (std::vector<float>{1, -kInf, -kInf, 4, -kInf}));
}

TEST(Processors, BadWordsMaskTheTokenThatWouldCompleteOne) {
  const std::vector<std::vector<int32_t>> words = {{4}, {1, 2}, {1, 2, 3}, {0, 0, 0, 0, 0, 1}, {99}};
  auto masked = [&](std::vector<int32_t> generated) {
    std::vector<float> row = {0, 1, 2, 3, 4, 5};
    mask_bad_words(row, words, generated);
    std::vector<int32_t> out;
    for (size_t i = 0; i < row.size(); ++i)
      if (row[i] == -kInf) out.push_back(static_cast<int32_t>(i));
    return out;
  };
  // Nothing generated: only the one-token word (4); 99 is outside the row; the five-token prefix cannot fit yet.
  EXPECT_EQ(masked({}), (std::vector<int32_t>{4}));
  EXPECT_EQ(masked({1}), (std::vector<int32_t>{2, 4}));           // "1 2" would be completed
  EXPECT_EQ(masked({3, 1}), (std::vector<int32_t>{2, 4}));        // only the last tokens count
  EXPECT_EQ(masked({1, 3}), (std::vector<int32_t>{4}));           // 1 is not last
  EXPECT_EQ(masked({1, 2}), (std::vector<int32_t>{3, 4}));        // "1 2 3"
  EXPECT_EQ(masked({0, 0, 0, 0}), (std::vector<int32_t>{4}));     // one 0 short of the long word's prefix
  EXPECT_EQ(masked({5, 0, 0, 0, 0, 0}), (std::vector<int32_t>{1, 4}));
}

TEST(Processors, LogitBiasAddsToTheNamedTokens) {
  std::vector<float> row = {0.5f, -1.0f, 2.0f};
  add_logit_bias(row, {{0, 1.5f}, {2, -100.0f}});
  EXPECT_EQ(row, (std::vector<float>{2.0f, -1.0f, -98.0f}));
}

TEST(Processors, RepetitionPenaltyDividesPositiveAndMultipliesNegativeOncePerToken) {
  std::vector<float> row = {4.0f, -2.0f, 3.0f, 1.0f, 0.0f};
  std::vector<uint8_t> seen;
  // Token 0 appears three times, still penalized once; token 3 never appears; 4 has logit 0 (multiplied).
  const std::vector<int32_t> tokens = {0, 1, 0, 2, 0, 4};
  apply_repetition_penalty(row, tokens, 2.0f, seen);
  EXPECT_EQ(row, (std::vector<float>{2.0f, -4.0f, 1.5f, 1.0f, 0.0f}));
  for (uint8_t f : seen) EXPECT_EQ(f, 0) << "scratch left clean";
  // A penalty below 1 rewards repetition the same way.
  std::vector<float> again = {4.0f, -2.0f};
  const std::vector<int32_t> both = {0, 1};
  apply_repetition_penalty(again, both, 0.5f, seen);
  EXPECT_EQ(again, (std::vector<float>{8.0f, -1.0f}));
}

TEST(Processors, FrequencyAndPresencePenaltiesCountGeneratedTokens) {
  std::vector<float> row = {1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<int32_t> counts;
  const std::vector<int32_t> generated = {2, 2, 2, 0};  // token 2 three times, token 0 once
  apply_frequency_presence_penalties(row, generated, 0.5f, 0.25f, counts);
  // 1 - 0.5 * 3 - 0.25 = -0.75; 1 - 0.5 - 0.25 = 0.25; the others untouched.
  EXPECT_EQ(row, (std::vector<float>{0.25f, 1.0f, -0.75f, 1.0f}));
  for (int32_t c : counts) EXPECT_EQ(c, 0) << "scratch left clean";
  // Negative penalties raise the logits.
  std::vector<float> up = {0.0f, 0.0f};
  const std::vector<int32_t> one = {1};
  apply_frequency_presence_penalties(up, one, -1.0f, -2.0f, counts);
  EXPECT_EQ(up, (std::vector<float>{0.0f, 3.0f}));
}

TEST(Processors, TemperatureWeightsAreRelativeToTheLikeliest) {
  const std::vector<float> row = {1.0f, 3.0f, -kInf, 2.0f};
  std::vector<double> w(4);
  const double sum = temperature_weights(row, 2.0f, w);
  EXPECT_DOUBLE_EQ(w[1], 1.0);
  EXPECT_NEAR(w[0], std::exp(-1.0), 1e-15);    // (1 - 3) / 2
  EXPECT_EQ(w[2], 0.0);
  EXPECT_NEAR(w[3], std::exp(-0.5), 1e-15);
  EXPECT_NEAR(sum, 1.0 + std::exp(-1.0) + std::exp(-0.5), 1e-15);
}

TEST(Processors, MinPDropsTokensBelowTheFractionOfTheLikeliest) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 as weights relative to the first: 1, 0.6, 0.3, 0.1.
  std::vector<double> w = {1.0, 0.6, 0.3, 0.1};
  const double sum = apply_min_p(w, 0.3f);  // keeps p >= 0.3 * 0.5 = 0.15 (0.3f is a hair above 0.3)
  EXPECT_EQ(w, (std::vector<double>{1.0, 0.6, 0.0, 0.0}));
  EXPECT_DOUBLE_EQ(sum, 1.6);
  std::vector<double> all = {1.0, 0.6, 0.3, 0.1};
  EXPECT_DOUBLE_EQ(apply_min_p(all, 0.05f), 2.0);
}

TEST(Processors, LogSoftmaxAndTopLogprobsMatchADoubleReference) {
  std::vector<float> row(1000);
  for (size_t i = 0; i < row.size(); ++i) row[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 6.0);
  row[10] = row[20] = 7.5f;  // a tie at the top: lower id first
  double mx = -1e300, sum = 0;
  for (float x : row) mx = std::max(mx, static_cast<double>(x));
  for (float x : row) sum += std::exp(static_cast<double>(x) - mx);
  auto reference = [&](size_t i) { return static_cast<float>(static_cast<double>(row[i]) - mx - std::log(sum)); };
  const LogSoftmax ls = log_softmax_of(row);
  for (size_t i : {0u, 10u, 20u, 500u, 999u}) EXPECT_FLOAT_EQ(ls.at(row[i]), reference(i)) << i;
  std::vector<TokenLogprob> top;
  top_logprobs(row, ls, 5, top);
  ASSERT_EQ(top.size(), 5u);
  EXPECT_EQ(top[0].token_id, 10);
  EXPECT_EQ(top[1].token_id, 20);
  // The reference order: every token by logit descending, ties by id.
  std::vector<int32_t> order(row.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  for (size_t k = 0; k < 5; ++k) {
    EXPECT_EQ(top[k].token_id, order[k]) << k;
    EXPECT_FLOAT_EQ(top[k].logprob, reference(static_cast<size_t>(order[k]))) << k;
  }
  top_logprobs(row, ls, 0, top);
  EXPECT_TRUE(top.empty());
  // rank_of is vLLM's rank of a sampled token: its place in that order, except that tied tokens all take the
  // last place of their tie (10 and 20 share the top logit: both are 2).
  for (size_t k : {2u, 3u, 317u, 999u}) EXPECT_EQ(rank_of(row, order[k]), static_cast<int32_t>(k + 1)) << k;
  EXPECT_EQ(rank_of(row, 10), 2);
  EXPECT_EQ(rank_of(row, 20), 2);
}

}  // namespace
}  // namespace kvshare
