// Causal attention over a paged KV cache.
//
// K and V of one layer live in fixed-size blocks. K is stored transposed within a block,
// [num_blocks, num_kv_heads, head_dim, block_size], so the scores of a block's keys accumulate as one
// vector per dimension; V is [num_blocks, num_kv_heads, block_size, head_dim]. A sequence names its blocks
// in order through a block table; blocks holding a shared prefix appear in many tables and are stored once.
//
// Batch invariance: each query row's output is computed from its own q row and its context only, summing
// over context positions in ascending order, whatever else is in the batch and however the prompt was
// chunked. Prefix reuse relies on this to give bitwise-identical results.
#pragma once

#include <cstdint>
#include <span>

namespace kvshare {

struct PagedKvLayer {
  float* k = nullptr;  // [num_blocks, num_kv_heads, head_dim, block_size]
  float* v = nullptr;  // [num_blocks, num_kv_heads, block_size, head_dim]
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// One sequence's part of a batched attention call.
struct AttentionSeq {
  int64_t q_begin = 0;      // first row of q/out that belongs to this sequence
  int64_t q_len = 0;        // its rows: the last q_len positions of its context
  int64_t context_len = 0;  // tokens in the cache for it, including the rows written this step
  const int32_t* block_table = nullptr;  // ceil(context_len / block_size) block ids
};

// Writes k/v rows [tokens, num_kv_heads, head_dim] into the cache at slots[t] = block * block_size + offset.
void write_kv(const PagedKvLayer& cache, const float* k, const float* v, const int32_t* slots, int64_t tokens);

// out[t, h, :] = softmax(q[t, h] · K[0..pos_t]^T * scale) · V[0..pos_t], with K/V head = h / (num_heads /
// num_kv_heads) (grouped-query attention). q, out: [total_rows, num_heads, head_dim].
// Preconditions: the rows' own K/V are already written; num_heads is a multiple of num_kv_heads.
void paged_attention(const float* q, const PagedKvLayer& cache, std::span<const AttentionSeq> seqs, int64_t num_heads,
                     float scale, float* out);

// The oracle: straightforward loops in double.
void paged_attention_reference(const float* q, const PagedKvLayer& cache, std::span<const AttentionSeq> seqs,
                               int64_t num_heads, float scale, float* out);

}  // namespace kvshare
