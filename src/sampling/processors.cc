#include "sampling/processors.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/det_math.h"

namespace kvshare {
namespace {
bool in_row(int64_t id, size_t size) { return id >= 0 && static_cast<size_t>(id) < size; }
}  // namespace

void mask_tokens(std::span<float> logits, std::span<const int32_t> ids) {
  for (int32_t id : ids)
    if (in_row(id, logits.size())) logits[id] = -std::numeric_limits<float>::infinity();
}

void keep_only_tokens(std::span<float> logits, std::span<const int32_t> ids, std::vector<float>& kept) {
  kept.clear();
  for (int32_t id : ids) kept.push_back(in_row(id, logits.size()) ? logits[id] : 0.0f);
  std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < ids.size(); ++i)
    if (in_row(ids[i], logits.size())) logits[ids[i]] = kept[i];
}

void mask_bad_words(std::span<float> logits, std::span<const std::vector<int32_t>> words,
                    std::span<const int32_t> generated) {
  for (const std::vector<int32_t>& w : words) {
    if (w.empty() || w.size() - 1 > generated.size()) continue;
    const size_t before = w.size() - 1;  // the tokens that must come just before the masked one
    if (std::equal(w.begin(), w.end() - 1, generated.end() - static_cast<std::ptrdiff_t>(before)) &&
        in_row(w.back(), logits.size()))
      logits[w.back()] = -std::numeric_limits<float>::infinity();
  }
}

void add_logit_bias(std::span<float> logits, const std::map<int32_t, float>& bias) {
  for (const auto& [id, b] : bias)
    if (in_row(id, logits.size())) logits[id] += b;
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> tokens, float penalty,
                              std::vector<uint8_t>& seen) {
  seen.resize(logits.size(), 0);
  for (int32_t t : tokens) {
    if (!in_row(t, logits.size()) || seen[t]) continue;
    seen[t] = 1;
    logits[t] = logits[t] > 0 ? logits[t] / penalty : logits[t] * penalty;
  }
  for (int32_t t : tokens)
    if (in_row(t, logits.size())) seen[t] = 0;
}

void apply_frequency_presence_penalties(std::span<float> logits, std::span<const int32_t> generated,
                                        float frequency, float presence, std::vector<int32_t>& counts) {
  counts.resize(logits.size(), 0);
  for (int32_t t : generated)
    if (in_row(t, logits.size())) ++counts[t];
  for (int32_t t : generated) {
    if (!in_row(t, logits.size()) || counts[t] == 0) continue;  // each distinct token once
    logits[t] -= frequency * static_cast<float>(counts[t]);
    logits[t] -= presence;
    counts[t] = 0;
  }
}

double temperature_weights(std::span<const float> logits, float temperature, std::span<double> weights) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    // det::exp, not libm's: the same weights, so the same tokens for a seed, on every CPU.
    const double w = logits[i] == -std::numeric_limits<float>::infinity()
                         ? 0.0
                         : det::exp((static_cast<double>(logits[i]) - mx) / temperature);
    sum += weights[i] = w;
  }
  return sum;
}

double apply_min_p(std::span<double> weights, float min_p) {
  double sum = 0;
  for (double& w : weights) {
    if (w < static_cast<double>(min_p)) w = 0;
    sum += w;
  }
  return sum;
}

LogSoftmax log_softmax_of(std::span<const float> logits) {
  LogSoftmax ls;
  ls.max = -std::numeric_limits<double>::infinity();
  for (float x : logits) ls.max = std::max(ls.max, static_cast<double>(x));
  double sum = 0;
  for (float x : logits)
    if (x != -std::numeric_limits<float>::infinity()) sum += det::exp(static_cast<double>(x) - ls.max);
  ls.log_sum = det::log(sum);
  return ls;
}

void top_logprobs(std::span<const float> logits, const LogSoftmax& ls, int32_t k, std::vector<TokenLogprob>& top) {
  const size_t keep = std::min(static_cast<size_t>(std::max(k, 0)), logits.size());
  top.clear();
  if (keep == 0) return;
  top.reserve(keep + 1);
  // One pass keeping the best `keep` tokens in order (their raw logits in .logprob for now): a token enters
  // only if it beats the current last, which after the first few tokens is rare, so this is about one
  // comparison per token and no sort.
  for (size_t i = 0; i < logits.size(); ++i) {
    const float x = logits[i];
    if (top.size() == keep && !(x > top.back().logprob)) continue;  // ties keep the lower id already in
    auto pos = std::upper_bound(top.begin(), top.end(), x, [](float v, const TokenLogprob& e) { return v > e.logprob; });
    top.insert(pos, TokenLogprob{static_cast<int32_t>(i), x});
    if (top.size() > keep) top.pop_back();
  }
  for (TokenLogprob& t : top) t.logprob = ls.at(t.logprob);
}

int32_t rank_of(std::span<const float> logits, int32_t token) {
  const float x = logits[static_cast<size_t>(token)];
  int32_t rank = 0;
  for (float y : logits) rank += y >= x;
  return rank;
}

}  // namespace kvshare
