// Sampling: turns one row of logits into a token, as a pure function of (logits, params, the request's
// random state). A request's random state is seeded from its own seed and advances only with its own
// tokens, so the same seed gives the same tokens whether the request runs alone or in any batch.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "kvshare/engine.h"
#include "kvshare/sampling_params.h"

namespace kvshare {


// A small, fast, well-mixed generator (SplitMix64 seeding a xoshiro256**), fully specified so that a
// seed gives the same stream on every machine and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  // Uniform in [0, 1) with 24 random bits (exactly representable as float).
  float uniform();

 private:
  uint64_t s_[4];
};

// A bad word as it is tokenized: without its leading ASCII whitespace (as vLLM strips it with Python's lstrip).
std::string_view bad_word_text(std::string_view word);

// The token sequences that SamplingParams::bad_words forbids, as vLLM makes them: each word (bad_word_text) encoded
// without special tokens, then " " + word too when that is as many tokens and starts with another token (the word
// in mid-text, for tokenizers that mark a leading space). `encode` maps text to token ids.
template <class Encode>
std::vector<std::vector<int32_t>> bad_word_tokens(const std::vector<std::string>& words, const Encode& encode) {
  std::vector<std::vector<int32_t>> out;
  for (const std::string& w : words) {
    const std::string text(bad_word_text(w));
    std::vector<int32_t> alone = encode(text);
    std::vector<int32_t> spaced = encode(" " + text);
    const bool mid_text = !alone.empty() && spaced.size() == alone.size() && spaced.front() != alone.front();
    if (!alone.empty()) out.push_back(std::move(alone));
    if (mid_text) out.push_back(std::move(spaced));
  }
  return out;
}

// Greedy: the first index of the largest logit.
int32_t argmax(const float* logits, int64_t vocab);

// What a sequence has so far, for the processors that look back (penalties, min_tokens).
struct TokenHistory {
  std::span<const int32_t> tokens;  // the prompt, then the generated tokens
  size_t num_prompt_tokens = 0;
  std::span<const int32_t> eos_ids;  // the model's end-of-sequence tokens (masked by min_tokens unless ignore_eos)
  std::span<const std::vector<int32_t>> bad_words;  // the request's bad_words as token sequences (bad_word_tokens)
  // SamplingParams::choice, json_object or json_schema: the tokens this draw may take (OutputGuide::allowed); null
  // otherwise.
  const std::vector<int32_t>* guide_tokens = nullptr;
  std::span<const int32_t> generated() const { return tokens.subspan(num_prompt_tokens); }
};

// Turns a row of logits into a token: logprobs from the raw row, then the processors, then greedy or a
// seeded draw (order in kvshare/sampling_params.h). Holds vocabulary-sized scratch between calls, so a token
// costs no allocation; one Sampler serves every sequence (its results depend only on the arguments).
class Sampler {
 public:
  // `logprobs`, when given and params.logprobs is set, receives the chosen token's and the top tokens' raw
  // log-probabilities. Returns kNothingToSample when the masks (allowed_token_ids, choice or JSON, bad_words,
  // min_tokens) together left no token, as when the one allowed token completes a bad word.
  static constexpr int32_t kNothingToSample = -1;
  int32_t sample(const float* logits, int64_t vocab, const SamplingParams& params, const TokenHistory& history,
                 Rng& rng, GeneratedTokenLogprobs* logprobs = nullptr);

 private:
  // The processed row: `logits` itself when no processor applies, else a copy in `processed_`.
  const float* process(const float* logits, int64_t vocab, const SamplingParams& params, const TokenHistory& history);

  std::vector<float> processed_;
  std::vector<float> kept_;
  std::vector<uint8_t> seen_;
  std::vector<int32_t> counts_;
  std::vector<double> weights_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// `token`'s log-probability under the raw row `logits` (log-softmax, before any processor) and the k most
// likely tokens': what SamplingParams::logprobs returns for a generated token and prompt_logprobs for a
// prompt token.
void token_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t k, GeneratedTokenLogprobs& out);

// Temperatures below this are greedy, as in vLLM (dividing by them would only lose precision).
inline constexpr float kGreedyTemperature = 1e-5f;

// Draws from `logits` (not modified) with temperature, min_p, top-k, then top-p; greedy when temperature is
// below kGreedyTemperature (0 included) or top_k == 1. Plain temperature (and min_p) draws by inverse CDF over the weights in token id order; top-p
// sorts lazily, only as many candidates as its nucleus needs; top-k selects k. `weights` and `candidates` are
// scratch kept between calls.
int32_t draw_token(const float* logits, int64_t vocab, const SamplingParams& params, Rng& rng,
                   std::vector<double>& weights, std::vector<std::pair<float, int32_t>>& candidates);

}  // namespace kvshare
