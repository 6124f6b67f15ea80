// How a request's tokens are chosen and when its generation stops.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "kvshare/status.h"

namespace kvshare {

struct SamplingParams {
  float temperature = 1.0f;       // 0 = greedy
  int32_t top_k = 0;              // 0 or -1 = off
  float top_p = 1.0f;             // 1 = off
  std::optional<uint64_t> seed;   // none: derived from the engine's seed and the request's id
  int32_t max_tokens = 16;        // tokens to generate at most
  bool ignore_eos = false;        // keep going past the model's end-of-sequence tokens
  std::vector<int32_t> stop_token_ids;  // further tokens that end generation (included in the output)

  // Says which parameter is wrong and its valid range.
  Status validate() const;
};

}  // namespace kvshare
