#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/det_math.h"
#include "core/number_text.h"
#include "core/splitmix.h"
#include "sampling/processors.h"

namespace kvshare {

Status SamplingParams::validate() const {
  auto num = [](float v) { return number_text(v); };
  auto whole = [](int64_t v) { return std::to_string(v); };
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    return invalid_argument("temperature must be a number >= 0 (0 means greedy), got " + num(temperature));
  if (top_k < -1) return invalid_argument("top_k must be -1 or 0 (off) or a positive count, got " + whole(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1], got " + num(top_p));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid_argument("min_p must be in [0, 1] (0 = off), got " + num(min_p));
  if (max_tokens < 1) return invalid_argument("max_tokens must be at least 1, got " + whole(max_tokens));
  if (min_tokens < 0 || min_tokens > max_tokens)
    return invalid_argument("min_tokens must be in [0, max_tokens] = [0, " + whole(max_tokens) + "], got " +
                            whole(min_tokens));
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return invalid_argument("presence_penalty must be in [-2, 2] (0 = off), got " + num(presence_penalty));
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return invalid_argument("frequency_penalty must be in [-2, 2] (0 = off), got " + num(frequency_penalty));
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
    return invalid_argument("repetition_penalty must be a number > 0 (1 = off), got " + num(repetition_penalty));
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) return invalid_argument("logit_bias token id must be >= 0, got " + whole(id));
    if (!(bias >= -100.0f && bias <= 100.0f))
      return invalid_argument("logit_bias for token " + whole(id) + " must be in [-100, 100], got " + num(bias));
  }
  for (int32_t id : stop_token_ids)
    if (id < 0) return invalid_argument("stop_token_ids must hold token ids >= 0, got " + whole(id));
  if (truncate_prompt_tokens.has_value() && *truncate_prompt_tokens < 1 && *truncate_prompt_tokens != -1)
    return invalid_argument("truncate_prompt_tokens must be -1 (the context) or at least 1, got " +
                            whole(*truncate_prompt_tokens));
  if (allowed_token_ids.has_value()) {
    if (allowed_token_ids->empty())
      return invalid_argument("allowed_token_ids must not be empty (leave it out to allow every token)");
    for (int32_t id : *allowed_token_ids)
      if (id < 0) return invalid_argument("allowed_token_ids must hold token ids >= 0, got " + whole(id));
  }
  for (const std::string& s : stop)
    if (s.empty()) return invalid_argument("stop strings must not be empty");
  if (bad_words.size() > kMaxBadWords)
    return invalid_argument("bad_words holds " + whole(static_cast<int64_t>(bad_words.size())) + " words; at most " +
                            whole(kMaxBadWords) + " are allowed");
  for (size_t i = 0; i < bad_words.size(); ++i) {
    const std::string& w = bad_words[i];
    if (w.size() > kMaxBadWordBytes)
      return invalid_argument("bad_words[" + whole(static_cast<int64_t>(i)) + "] is " +
                              whole(static_cast<int64_t>(w.size())) + " bytes; at most " + whole(kMaxBadWordBytes) +
                              " are allowed");
    if (bad_word_text(w).empty())
      return invalid_argument("bad_words[" + whole(static_cast<int64_t>(i)) +
                              "] is empty or only whitespace: give a word, or leave it out");
  }
  if (choice.has_value()) {
    if (choice->empty()) return invalid_argument("choice must hold at least one string (leave it out for free text)");
    if (choice->size() > kMaxChoices)
      return invalid_argument("choice holds " + whole(static_cast<int64_t>(choice->size())) + " strings; at most " +
                              whole(kMaxChoices) + " are allowed");
    size_t bytes = 0;
    for (size_t i = 0; i < choice->size(); ++i) {
      if ((*choice)[i].empty())
        return invalid_argument("choice[" + whole(static_cast<int64_t>(i)) + "] is empty: each choice is some text");
      bytes += (*choice)[i].size();
    }
    if (bytes > kMaxChoiceBytes)
      return invalid_argument("choice holds " + whole(static_cast<int64_t>(bytes)) + " bytes in all; at most " +
                              whole(kMaxChoiceBytes) + " are allowed");
    if (min_tokens > 0)
      return invalid_argument("min_tokens (" + whole(min_tokens) + ") cannot be combined with choice (a choice ends "
                              "the output once it is complete): leave min_tokens out, and --min-tokens too in a batch "
                              "job");
  }
  if (json_object || json_schema.has_value()) {
    const std::string json = json_object ? "json_object" : "json_schema";
    if (json_object && json_schema.has_value())
      return invalid_argument("json_object and json_schema cannot both be given: give the schema alone, or "
                              "json_object for any JSON object");
    if (choice.has_value())
      return invalid_argument(json + " and choice cannot both be given: the text is either one of the choices or "
                              "JSON");
    if (min_tokens > 0)
      return invalid_argument("min_tokens (" + whole(min_tokens) + ") cannot be combined with " + json + " (the "
                              "output ends once the JSON closes): leave min_tokens out, and --min-tokens too in a "
                              "batch job");
    if (json_schema.has_value() && json_schema->size() > kMaxJsonSchemaBytes)
      return invalid_argument("json_schema is " + whole(static_cast<int64_t>(json_schema->size())) +
                              " bytes; at most " + whole(kMaxJsonSchemaBytes) + " are allowed");
  }
  if (n < 1 || n > kMaxN)
    return invalid_argument("n (completions per prompt) must be in [1, " + whole(kMaxN) + "], got " + whole(n));
  if (logprobs.has_value() && (*logprobs < 0 || *logprobs > kMaxLogprobs))
    return invalid_argument("logprobs must be in [0, " + whole(kMaxLogprobs) + "], got " + whole(*logprobs));
  if (prompt_logprobs.has_value() && (*prompt_logprobs < 0 || *prompt_logprobs > kMaxLogprobs))
    return invalid_argument("prompt_logprobs must be in [0, " + whole(kMaxLogprobs) + "], got " + whole(*prompt_logprobs));
  return {};
}

std::string_view bad_word_text(std::string_view word) {
  const size_t first = word.find_first_not_of(" \t\n\v\f\r");
  return first == std::string_view::npos ? std::string_view() : word.substr(first);
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

namespace {

// Candidates in order of logit, ties by id, so the order never depends on a sort's stability.
bool better(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Inverse CDF: the first of `n` candidates (in their order) where the running sum of weights passes
// u × `sum`. `weight(i)` is the i-th candidate's weight, `id(i)` its token.
template <typename Weight, typename Id>
int32_t inverse_cdf(size_t n, double sum, Rng& rng, Weight weight, Id id) {
  const double r = static_cast<double>(rng.uniform()) * sum;
  double acc = 0;
  int32_t last = id(0);
  for (size_t i = 0; i < n; ++i) {
    const double w = weight(i);
    if (w == 0) continue;
    acc += w;
    last = id(i);
    if (r < acc) return last;
  }
  return last;  // rounding left r at the very end: the last candidate with any weight
}

// The shortest prefix of `cand` (sorted by better()) whose probabilities reach top_p; the tail stays unsorted.
// Sorts lazily: each round sorts twice as many candidates as the round before.
size_t nucleus(std::vector<std::pair<float, int32_t>>& cand, size_t count, const std::vector<double>& weights,
               double sum, float top_p) {
  size_t sorted = 0, n = 0;
  double cum = 0;
  while (n < count) {
    if (n == sorted) {
      const size_t next = std::min(count, std::max<size_t>(64, 2 * sorted));
      std::partial_sort(cand.begin() + static_cast<ptrdiff_t>(sorted), cand.begin() + static_cast<ptrdiff_t>(next),
                        cand.begin() + static_cast<ptrdiff_t>(count), better);
      sorted = next;
    }
    cum += weights[cand[n].second] / sum;
    ++n;
    if (cum >= top_p) break;
  }
  return n;
}

// top-k (then min_p and top-p within the k): selects the k best and weighs them, best first.
int32_t draw_top_k(const float* logits, int64_t vocab, const SamplingParams& p, Rng& rng, std::vector<double>& probs,
                   std::vector<std::pair<float, int32_t>>& cand) {
  cand.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) cand[i] = {logits[i], static_cast<int32_t>(i)};
  size_t keep = static_cast<size_t>(p.top_k);
  std::partial_sort(cand.begin(), cand.begin() + static_cast<ptrdiff_t>(keep), cand.end(), better);
  probs.resize(keep);
  double sum = 0;
  const double mx = cand[0].first;
  for (size_t i = 0; i < keep; ++i) {
    const bool masked = cand[i].first == -std::numeric_limits<float>::infinity();
    sum += probs[i] = masked ? 0.0 : det::exp((cand[i].first - mx) / p.temperature);
  }
  if (p.min_p > 0.0f) sum = apply_min_p(std::span<double>(probs.data(), keep), p.min_p);
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += probs[n] / sum;
      ++n;
      if (cum >= p.top_p) break;
    }
    keep = n;
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += probs[i];
  }
  return inverse_cdf(keep, sum, rng, [&](size_t i) { return probs[i]; }, [&](size_t i) { return cand[i].second; });
}

}  // namespace

int32_t draw_token(const float* logits, int64_t vocab, const SamplingParams& p, Rng& rng, std::vector<double>& weights,
                   std::vector<std::pair<float, int32_t>>& cand) {
  if (p.temperature < kGreedyTemperature || p.top_k == 1) return argmax(logits, vocab);
  if (p.top_k > 0 && p.top_k < vocab) return draw_top_k(logits, vocab, p, rng, weights, cand);
  weights.resize(static_cast<size_t>(vocab));
  std::span<double> w(weights.data(), static_cast<size_t>(vocab));
  double sum = temperature_weights(std::span<const float>(logits, static_cast<size_t>(vocab)), p.temperature, w);
  if (p.min_p > 0.0f) sum = apply_min_p(w, p.min_p);
  if (!(sum > 0)) return argmax(logits, vocab);  // every token masked (-inf): nothing to draw from
  if (p.top_p >= 1.0f)  // plain temperature: no order needed
    return inverse_cdf(w.size(), sum, rng, [&](size_t i) { return w[i]; }, [](size_t i) { return static_cast<int32_t>(i); });
  cand.clear();
  for (int64_t i = 0; i < vocab; ++i)
    if (w[i] > 0) cand.emplace_back(logits[i], static_cast<int32_t>(i));
  const size_t keep = nucleus(cand, cand.size(), weights, sum, p.top_p);
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += w[cand[i].second];
  return inverse_cdf(keep, kept, rng, [&](size_t i) { return w[cand[i].second]; }, [&](size_t i) { return cand[i].second; });
}

const float* Sampler::process(const float* logits, int64_t vocab, const SamplingParams& p, const TokenHistory& h) {
  const bool below_min_tokens = h.generated().size() < static_cast<size_t>(p.min_tokens);
  const bool any = p.allowed_token_ids.has_value() || h.guide_tokens != nullptr || !h.bad_words.empty() ||
                   below_min_tokens || !p.logit_bias.empty() || p.repetition_penalty != 1.0f ||
                   p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
  if (!any) return logits;
  processed_.assign(logits, logits + vocab);
  std::span<float> row(processed_);
  if (p.allowed_token_ids.has_value()) keep_only_tokens(row, *p.allowed_token_ids, kept_);
  if (h.guide_tokens != nullptr) keep_only_tokens(row, *h.guide_tokens, kept_);
  if (!h.bad_words.empty()) mask_bad_words(row, h.bad_words, h.generated());
  if (below_min_tokens) {
    if (!p.ignore_eos) mask_tokens(row, h.eos_ids);
    mask_tokens(row, p.stop_token_ids);
  }
  add_logit_bias(row, p.logit_bias);
  if (p.repetition_penalty != 1.0f) apply_repetition_penalty(row, h.tokens, p.repetition_penalty, seen_);
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f)
    apply_frequency_presence_penalties(row, h.generated(), p.frequency_penalty, p.presence_penalty, counts_);
  return processed_.data();
}

int32_t Sampler::sample(const float* logits, int64_t vocab, const SamplingParams& p, const TokenHistory& h, Rng& rng,
                        GeneratedTokenLogprobs* logprobs) {
  const float* row = process(logits, vocab, p, h);
  // Only the masks make a logit -inf (the engine refuses rows that are not finite): when they took every token,
  // nothing may be drawn.
  const auto masked = [](float x) { return x == -std::numeric_limits<float>::infinity(); };
  if (row != logits && std::all_of(row, row + vocab, masked)) return kNothingToSample;
  const int32_t token = draw_token(row, vocab, p, rng, weights_, candidates_);
  if (logprobs != nullptr && p.logprobs.has_value()) token_logprobs(logits, vocab, token, *p.logprobs, *logprobs);
  return token;
}

void token_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t k, GeneratedTokenLogprobs& out) {
  const std::span<const float> raw(logits, static_cast<size_t>(vocab));
  const LogSoftmax ls = log_softmax_of(raw);
  out.chosen = {token, ls.at(logits[token])};
  top_logprobs(raw, ls, k, out.top);
  out.chosen_rank = rank_of(raw, token);
}

}  // namespace kvshare
