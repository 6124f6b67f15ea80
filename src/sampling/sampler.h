// Sampling: turns one row of logits into a token, as a pure function of (logits, params, the request's
// random state). A request's random state is seeded from its own seed and advances only with its own
// tokens, so the same seed gives the same tokens whether the request runs alone or in any batch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
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

// Greedy: the first index of the largest logit.
int32_t argmax(const float* logits, int64_t vocab);

// Samples from `logits` (not modified) with temperature, top-k, then top-p; greedy when temperature == 0.
// `scratch` holds the sorted candidates between calls, so the vocabulary-sized sort buffer is not reallocated.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& params, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace kvshare
