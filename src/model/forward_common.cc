#include "model/forward_common.h"

#include <cmath>
#include <cstring>

namespace kvshare {

Status validate_batch(const ForwardBatch& b, const ModelConfig& c, const KvStorage& kv) {
  const int64_t n = b.num_tokens();
  if (static_cast<int64_t>(b.positions.size()) != n || static_cast<int64_t>(b.slots.size()) != n)
    return invalid_argument("forward batch: tokens, positions and slots differ in length");
  const int64_t num_slots = kv.shape().num_blocks * kv.shape().block_size;
  for (int64_t i = 0; i < n; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.vocab_size)
      return invalid_argument("token id " + std::to_string(b.tokens[i]) + " is outside the vocabulary [0, " +
                              std::to_string(c.vocab_size) + ")");
    if (b.positions[i] < 0 || b.positions[i] >= c.max_context)
      return out_of_range("position " + std::to_string(b.positions[i]) + " is beyond the model's context of " +
                          std::to_string(c.max_context) + " tokens");
    if (b.slots[i] < 0 || b.slots[i] >= num_slots) return internal_error("forward batch: a KV slot is outside the cache");
  }
  int64_t row = 0;
  for (const AttentionSeq& s : b.seqs) {
    if (s.q_begin != row || s.q_len <= 0 || s.context_len < s.q_len)
      return internal_error("forward batch: sequences do not tile the rows");
    row += s.q_len;
  }
  if (row != n) return internal_error("forward batch: sequences do not cover every row");
  for (int64_t r : b.logit_rows)
    if (r < 0 || r >= n) return internal_error("forward batch: a logit row is outside the batch");
  return {};
}

void embed(const float* embedding, int64_t hidden, const std::vector<int32_t>& tokens, float* x) {
  for (size_t t = 0; t < tokens.size(); ++t)
    std::memcpy(x + t * hidden, embedding + static_cast<int64_t>(tokens[t]) * hidden, sizeof(float) * hidden);
}

void cached_attention(const ForwardBatch& b, KvStorage& kv, int64_t layer, const ModelConfig& c, const float* q,
                      const float* k, const float* v, float* attn) {
  const PagedKvLayer cache = kv.layer(layer);
  write_kv(cache, k, v, b.slots.data(), b.num_tokens());
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  paged_attention(q, cache, b.seqs, c.num_heads, scale, attn);
}

void gather_rows(const float* x, int64_t hidden, const std::vector<int64_t>& rows, float* out) {
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(out + i * hidden, x + rows[i] * hidden, sizeof(float) * hidden);
}

}  // namespace kvshare
