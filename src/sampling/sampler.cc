#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/det_math.h"
#include "core/splitmix.h"

namespace kvshare {

Status SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    return invalid_argument("temperature must be a number >= 0 (0 means greedy), got " + std::to_string(temperature));
  if (top_k < -1) return invalid_argument("top_k must be -1 or 0 (off) or a positive count, got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (max_tokens < 1) return invalid_argument("max_tokens must be at least 1, got " + std::to_string(max_tokens));
  return {};
}

namespace {
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  SplitMix64 seeder(seed);
  for (auto& s : s_) s = seeder.next();
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Rng::uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }

int32_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int32_t>(best);
}

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& cand) {
  if (p.temperature == 0.0f || p.top_k == 1) return argmax(logits, vocab);
  // Candidates sorted by logit, ties by id, so the order never depends on the sort's stability.
  cand.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) cand[i] = {logits[i], static_cast<int32_t>(i)};
  auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    keep = p.top_k;
    std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), better);
  } else {
    std::sort(cand.begin(), cand.end(), better);
  }
  // Softmax over the kept candidates at this temperature (in double, max first for stability).
  const double mx = cand[0].first;
  std::vector<double> probs(static_cast<size_t>(keep));
  double sum = 0;
  // det::exp, not libm's: the same probabilities, so the same tokens for a seed, on every CPU.
  for (int64_t i = 0; i < keep; ++i) sum += probs[i] = det::exp((cand[i].first - mx) / p.temperature);
  if (p.top_p < 1.0f) {
    double cum = 0;
    int64_t n = 0;
    while (n < keep) {
      cum += probs[n] / sum;
      ++n;
      if (cum >= p.top_p) break;
    }
    keep = n;
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += probs[i];
  }
  const double r = static_cast<double>(rng.uniform()) * sum;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (r < acc) return cand[i].second;
  }
  return cand[keep - 1].second;
}

}  // namespace kvshare
