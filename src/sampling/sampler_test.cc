#include "sampling/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
// The replaced delete below frees what the replaced new took from malloc; g++ cannot see that pairing.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// Counts this thread's operator new calls while `counting` is set: a warmed-up draw must allocate nothing
// (Sampler.DrawsAllocateNothingOnceWarm). Replacing the global operator new is the one way to see allocations
// made anywhere below the call, a std::vector's inside the library included.
namespace {
thread_local bool counting = false;
thread_local int64_t news = 0;
}  // namespace
void* operator new(std::size_t n) {
  if (counting) ++news;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace kvshare {
namespace {

TEST(Sampler, GreedyTakesFirstMaximum) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(argmax(logits.data(), 4), 1);
  SamplingParams p;
  p.temperature = 0;
  Rng rng(1);
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  EXPECT_EQ(draw_token(logits.data(), 4, p, rng, weights, scratch), 1);
  p.temperature = 1e-6f;  // below vLLM's greedy threshold
  for (int i = 0; i < 20; ++i) EXPECT_EQ(draw_token(logits.data(), 4, p, rng, weights, scratch), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = static_cast<float>(i % 7) * 0.3f;
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  Rng a(42), b(42), c(43);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 20; ++i) {
    ta.push_back(draw_token(logits.data(), 50, p, a, weights, scratch));
    tb.push_back(draw_token(logits.data(), 50, p, b, weights, scratch));
    tc.push_back(draw_token(logits.data(), 50, p, c, weights, scratch));
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
  std::vector<double> weights;
  std::map<int32_t, int> seen;
  for (int i = 0; i < 500; ++i) seen[draw_token(logits.data(), 5, p, rng, weights, scratch)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], 100);
  EXPECT_GT(seen[1], 100);

  p.top_k = 0;
  p.top_p = 0.3f;  // token 0 alone holds ~50% of the mass
  seen.clear();
  for (int i = 0; i < 200; ++i) seen[draw_token(logits.data(), 5, p, rng, weights, scratch)]++;
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.begin()->first, 0);
}

TEST(Sampler, DistributionFollowsSoftmax) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  SamplingParams p;
  p.temperature = 1.0f;
  Rng rng(3);
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += draw_token(logits.data(), 2, p, rng, weights, scratch);
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

// The old way, kept here as the reference: sort the whole vocabulary, then top-p over the sorted weights.
int32_t full_sort_top_p(const std::vector<float>& logits, float temperature, float top_p, Rng& rng) {
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::vector<double> w(ids.size());
  double sum = 0;
  for (size_t i = 0; i < ids.size(); ++i) sum += w[i] = std::exp((static_cast<double>(logits[ids[i]]) - logits[ids[0]]) / temperature);
  size_t keep = 0;
  double cum = 0, kept = 0;
  while (keep < ids.size()) {
    cum += w[keep] / sum;
    kept += w[keep];
    ++keep;
    if (cum >= top_p) break;
  }
  const double r = static_cast<double>(rng.uniform()) * kept;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += w[i];
    if (r < acc) return ids[i];
  }
  return ids[keep - 1];
}

std::vector<float> wavy_logits(size_t vocab) {
  std::vector<float> logits(vocab);
  for (size_t i = 0; i < vocab; ++i) logits[i] = static_cast<float>(std::sin(0.91 * static_cast<double>(i)) * 4.0);
  return logits;
}

TEST(Sampler, LazyTopPDrawsWhatAFullSortDraws) {
  const std::vector<float> logits = wavy_logits(5000);
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  for (float top_p : {0.05f, 0.5f, 0.95f, 0.999f}) {
    SamplingParams p;
    p.temperature = 0.7f;
    p.top_p = top_p;
    Rng a(99), b(99);
    for (int i = 0; i < 100; ++i)
      ASSERT_EQ(draw_token(logits.data(), 5000, p, a, weights, scratch), full_sort_top_p(logits, 0.7f, top_p, b))
          << "top_p " << top_p << " draw " << i;
  }
}

TEST(Sampler, PlainTemperatureIsInverseCdfInTokenOrder) {
  const std::vector<float> logits = wavy_logits(3000);
  SamplingParams p;
  p.temperature = 1.3f;
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  Rng a(5), b(5);
  double mx = -1e300;
  for (float x : logits) mx = std::max(mx, static_cast<double>(x));
  std::vector<double> cdf(logits.size());
  double acc = 0;
  for (size_t i = 0; i < logits.size(); ++i) cdf[i] = acc += std::exp((logits[i] - mx) / 1.3);
  for (int i = 0; i < 200; ++i) {
    const double r = static_cast<double>(b.uniform()) * acc;
    const auto want = static_cast<int32_t>(std::upper_bound(cdf.begin(), cdf.end(), r) - cdf.begin());
    ASSERT_EQ(draw_token(logits.data(), 3000, p, a, weights, scratch), want) << "draw " << i;
  }
}

// A draw keeps its scratch between calls: once warm, no token allocates, whatever the sampling fields.
TEST(Sampler, DrawsAllocateNothingOnceWarm) {
  const std::vector<float> logits = wavy_logits(8000);
  const std::vector<int32_t> tokens = {5, 7, 7, 9, 11, 5, 13};
  const std::vector<int32_t> eos = {2};
  const TokenHistory h{tokens, 3, eos, {}};
  auto with = [](auto set) {
    SamplingParams p;
    p.temperature = 0.8f;
    set(p);
    return p;
  };
  const std::vector<std::pair<const char*, SamplingParams>> cases = {
      {"temperature", with([](SamplingParams&) {})},
      {"greedy", with([](SamplingParams& p) { p.temperature = 0; })},
      {"min_p", with([](SamplingParams& p) { p.min_p = 0.05f; })},
      {"top_p", with([](SamplingParams& p) { p.top_p = 0.9f; })},
      {"top_k", with([](SamplingParams& p) { p.top_k = 40; })},
      {"penalties", with([](SamplingParams& p) {
         p.repetition_penalty = 1.3f;
         p.frequency_penalty = 0.5f;
         p.presence_penalty = 0.5f;
       })},
      {"logit_bias and min_tokens", with([](SamplingParams& p) {
         p.logit_bias = {{11, 2.0f}, {300, -1.0f}};
         p.min_tokens = 8;
       })},
  };
  for (const auto& [name, p] : cases) {
    Sampler sampler;
    Rng rng(3);
    std::vector<double> weights;
    std::vector<std::pair<float, int32_t>> candidates;
    sampler.sample(logits.data(), 8000, p, h, rng);  // warm: the scratch takes its size
    draw_token(logits.data(), 8000, p, rng, weights, candidates);
    news = 0;
    counting = true;
    for (int i = 0; i < 20; ++i) {
      sampler.sample(logits.data(), 8000, p, h, rng);
      draw_token(logits.data(), 8000, p, rng, weights, candidates);
    }
    counting = false;
    EXPECT_EQ(news, 0) << name << ": allocations in 40 warm draws";
  }
  // The counter sees an allocation (a direct call: a new-expression's pair may be elided).
  news = 0;
  counting = true;
  void* q = ::operator new(16);
  counting = false;
  ::operator delete(q);
  EXPECT_EQ(news, 1);
}

TEST(Sampler, MinPLeavesOnlyTokensNearTheLikeliest) {
  // Probabilities proportional to 8, 4, 2, 1, 1: min_p 0.2 keeps p >= 0.2 * 8/16, i.e. weights >= 1.6: tokens 0-2.
  const std::vector<float> logits = {std::log(8.0f), std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  for (int32_t top_k : {0, 4}) {
    SamplingParams p;
    p.min_p = 0.2f;
    p.top_k = top_k;
    Rng rng(11);
    std::map<int32_t, int> seen;
    for (int i = 0; i < 3000; ++i) seen[draw_token(logits.data(), 5, p, rng, weights, scratch)]++;
    EXPECT_EQ(seen.size(), 3u) << "top_k " << top_k;
    EXPECT_NEAR(seen[0] / 3000.0, 8.0 / 14.0, 0.03) << "renormalized over the kept tokens";
  }
}

TEST(Sampler, ProcessorsRunBeforeTheChoiceAndLogprobsSeeTheRawRow) {
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
  const std::vector<int32_t> prompt_and_generated = {0, 0, 1};  // prompt {0}, generated {0, 1}
  const std::vector<int32_t> eos = {0};
  TokenHistory h{prompt_and_generated, 1, eos, {}};
  Sampler sampler;
  Rng rng(1);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 0);
  p.min_tokens = 3;  // two generated so far: EOS (token 0) is masked
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 1);
  p.min_tokens = 0;
  p.logit_bias = {{3, 3.5f}};
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 3);
  p.logit_bias.clear();
  p.repetition_penalty = 2.0f;  // 3 -> 1.5, 2 -> 1: token 2 (unseen, logit 1) loses to 0 still
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 0);
  p.frequency_penalty = 2.0f;   // 0 generated once: 1.5 - 2 < 0; 1: 1 - 2 < 0; token 2 wins with 1
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 2);
  p.logprobs = 2;
  GeneratedTokenLogprobs lp;
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng, &lp), 2);
  const double lse = std::log(std::exp(3.0) + std::exp(2.0) + std::exp(1.0) + 1.0);
  EXPECT_EQ(lp.chosen.token_id, 2);
  EXPECT_FLOAT_EQ(lp.chosen.logprob, static_cast<float>(1.0 - lse)) << "from the raw logits, not the penalized ones";
  EXPECT_EQ(lp.chosen_rank, 3) << "third of the raw logits";
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].token_id, 0);
  EXPECT_FLOAT_EQ(lp.top[0].logprob, static_cast<float>(3.0 - lse));
  EXPECT_EQ(lp.top[1].token_id, 1);
  // allowed_token_ids: greedy and random draws stay inside the set; logprobs still see the raw row.
  p = SamplingParams{};
  p.temperature = 0;
  p.allowed_token_ids = std::vector<int32_t>{2, 3};
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng, &lp), 2) << "the likelier of the allowed";
  p.temperature = 1;
  p.logprobs = 1;
  std::map<int32_t, int> drawn;
  for (int i = 0; i < 400; ++i) drawn[sampler.sample(logits.data(), 4, p, h, rng, &lp)]++;
  EXPECT_EQ(drawn.size(), 2u);
  EXPECT_GT(drawn[2], drawn[3]);
  EXPECT_EQ(lp.top[0].token_id, 0) << "logprobs come from the raw logits";
}

TEST(Sampler, BadWordsSeeOnlyGeneratedTokensAndNothingLeftIsSaid) {
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
  const std::vector<int32_t> tokens = {2, 1, 3};  // prompt {2, 1}, generated {3}
  const std::vector<std::vector<int32_t>> words = {{3, 0}, {1, 1}};
  TokenHistory h{tokens, 2, {}, words};
  Sampler sampler;
  Rng rng(1);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 1) << "3 was generated: 0 would complete {3, 0}";
  h.num_prompt_tokens = 3;  // the same tokens, all prompt: the prompt's 3 does not start {3, 0}
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), 0);
  h.num_prompt_tokens = 2;
  p.allowed_token_ids = std::vector<int32_t>{0};
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), Sampler::kNothingToSample);
  p.temperature = 1;
  EXPECT_EQ(sampler.sample(logits.data(), 4, p, h, rng), Sampler::kNothingToSample);
}

TEST(Sampler, BadWordTokensFollowVllm) {
  // A tokenizer where a leading space is part of a word's token: "cat" -> {1}, " cat" -> {2}; "a cat" -> {3, 2},
  // " a cat" -> {4, 2}; " dog" is two tokens ({5, 6}) but "dog" one ({7}): not kept.
  const std::map<std::string, std::vector<int32_t>> vocab = {
      {"cat", {1}}, {" cat", {2}}, {"a cat", {3, 2}}, {" a cat", {4, 2}}, {"dog", {7}}, {" dog", {5, 6}}};
  auto encode = [&](const std::string& text) { return vocab.at(text); };
  EXPECT_EQ(bad_word_tokens({" cat", "\ta cat", "dog"}, encode),
            (std::vector<std::vector<int32_t>>{{1}, {2}, {3, 2}, {4, 2}, {7}}));
  EXPECT_EQ(bad_word_text(" \t\nx y "), "x y ");
  EXPECT_EQ(bad_word_text(" \r\f\v"), "");
}

TEST(Sampler, ValidateNamesEveryNewParameter) {
  auto message = [](auto edit) {
    SamplingParams p;
    edit(p);
    return p.validate().message();
  };
  EXPECT_NE(message([](SamplingParams& p) { p.min_p = 1.5f; }).find("min_p"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.allowed_token_ids = std::vector<int32_t>{}; }).find("allowed_token_ids must not be empty"),
            std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.allowed_token_ids = std::vector<int32_t>{-1}; }).find("allowed_token_ids"),
            std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.presence_penalty = 3; }).find("presence_penalty"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.frequency_penalty = -3; }).find("frequency_penalty"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.repetition_penalty = 0; }).find("repetition_penalty"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.logit_bias = {{1, 200.0f}}; }).find("logit_bias"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }).find("logit_bias"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.min_tokens = 17; }).find("min_tokens"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.stop = {""}; }).find("stop"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.bad_words = {"a", "\n "}; }).find("bad_words[1] is empty or only whitespace"),
            std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.bad_words = {std::string(1025, 'a')}; }).find("bad_words[0] is 1025 bytes"),
            std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.bad_words.assign(129, "a"); }).find("bad_words holds 129 words; at most 128"),
            std::string::npos);
  EXPECT_TRUE(message([](SamplingParams& p) { p.bad_words.assign(128, std::string(1024, 'a')); }).empty());
  EXPECT_NE(message([](SamplingParams& p) { p.n = 0; }).find("n (completions"), std::string::npos);
  EXPECT_NE(message([](SamplingParams& p) { p.logprobs = 21; }).find("logprobs"), std::string::npos);
  EXPECT_TRUE(message([](SamplingParams& p) { p.logprobs = 20; p.n = 4; p.min_tokens = 16; }).empty());
}

TEST(Sampler, EveryTokenMaskedStillGivesAToken) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {-inf, -inf, -inf};
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<double> weights;
  for (float top_p : {1.0f, 0.5f}) {
    for (int32_t top_k : {0, 2}) {
      SamplingParams p;
      p.top_p = top_p;
      p.top_k = top_k;
      Rng rng(1);
      const int32_t t = draw_token(logits.data(), 3, p, rng, weights, scratch);
      EXPECT_GE(t, 0);
      EXPECT_LT(t, 3);
    }
  }
}

}  // namespace
}  // namespace kvshare
