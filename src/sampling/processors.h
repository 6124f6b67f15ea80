// Logits processors: each edits one row of logits (or of sampling weights) in place, as vLLM's sampler does,
// and is applied by Sampler in vLLM's order (see kvshare/sampling_params.h). Each is a small pure function
// with its own unit test against a by-hand reference (processors_test.cc).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "kvshare/engine.h"

namespace kvshare {

// bad_words: the last token of each sequence in `words` gets -inf when `generated` ends with the sequence's other
// tokens (a one-token sequence is always masked), as vLLM's bad-words processor does. Ids outside the row are
// skipped.
void mask_bad_words(std::span<float> logits, std::span<const std::vector<int32_t>> words,
                    std::span<const int32_t> generated);

// min_tokens: these tokens (EOS and stop_token_ids) get -inf, so they cannot be sampled. Ids outside the row
// are skipped.
void mask_tokens(std::span<float> logits, std::span<const int32_t> ids);

// allowed_token_ids: every logit but those of `ids` becomes -inf (theirs are kept as they are). Ids outside the
// row are skipped. `kept` is scratch.
void keep_only_tokens(std::span<float> logits, std::span<const int32_t> ids, std::vector<float>& kept);

// logit_bias: logits[id] += bias. Ids outside the row are skipped (the engine rejects them beforehand).
void add_logit_bias(std::span<float> logits, const std::map<int32_t, float>& bias);

// repetition_penalty (Hugging Face / vLLM): every distinct token of `tokens` (prompt and generated) has its
// logit divided by `penalty` when positive, multiplied by it otherwise. `seen` is vocab-sized scratch,
// all zero before and after the call.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> tokens, float penalty,
                              std::vector<uint8_t>& seen);

// frequency and presence penalties (OpenAI): a token generated c > 0 times has its logit lowered by
// frequency × c, then by presence. `counts` is vocab-sized scratch, all zero before and after the call.
void apply_frequency_presence_penalties(std::span<float> logits, std::span<const int32_t> generated,
                                        float frequency, float presence, std::vector<int32_t>& counts);

// Sampling weights at temperature t: w[i] = exp((logits[i] - max) / t), so the likeliest token has weight 1
// and a -inf logit weight 0. Returns the sum of the weights (in token id order).
double temperature_weights(std::span<const float> logits, float temperature, std::span<double> weights);

// min_p: tokens whose probability is below min_p × the likeliest one's get weight 0. `weights` are relative
// to the likeliest token (its weight is 1, as temperature_weights makes them). Returns the sum left.
double apply_min_p(std::span<double> weights, float min_p);

// The raw log-softmax at `token` and the k most likely tokens (largest logit first, ties by lower id), in
// double precision and rounded to float once. `top` is resized to min(k, vocab).
struct LogSoftmax {
  double max = 0;
  double log_sum = 0;  // log of the sum of exp(logit - max)
  float at(float logit) const { return static_cast<float>(static_cast<double>(logit) - max - log_sum); }
};
LogSoftmax log_softmax_of(std::span<const float> logits);
void top_logprobs(std::span<const float> logits, const LogSoftmax& ls, int32_t k, std::vector<TokenLogprob>& top);
// A sampled token's rank as vLLM gives it (Logprob.rank): the number of tokens whose logit is at least its own,
// itself included, so the likeliest is 1 and tied tokens all take the last place of their tie. (The k top tokens
// are ranked 1..k by their place in top_logprobs' order instead, as vLLM ranks them.)
int32_t rank_of(std::span<const float> logits, int32_t token);

}  // namespace kvshare
