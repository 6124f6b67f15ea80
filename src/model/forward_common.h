// Steps every architecture's forward pass shares.
#pragma once

#include <vector>

#include "model/model.h"

namespace kvshare {

// Grows `v` to at least n floats (never shrinks, so steady-state steps allocate nothing).
inline float* ensure(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Token ids and positions in range, slots inside the cache, sequences covering the rows in order.
Status validate_batch(const ForwardBatch& batch, const ModelConfig& config, const KvStorage& kv);

// x[t] = embedding[tokens[t]]
void embed(const float* embedding, int64_t hidden, const std::vector<int32_t>& tokens, float* x);

// Writes this step's k/v rows into layer `layer` of the cache, then attends: attn = softmax(q K^T / sqrt(d)) V.
void cached_attention(const ForwardBatch& batch, KvStorage& kv, int64_t layer, const ModelConfig& config,
                      const float* q, const float* k, const float* v, float* attn);

// Copies the rows named by batch.logit_rows out of x [tokens, hidden] into out [rows, hidden].
void gather_rows(const float* x, int64_t hidden, const std::vector<int64_t>& rows, float* out);

}  // namespace kvshare
