#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/kernel_table.h"

namespace kvshare {
namespace {

// Prefill rows of one sequence attended together, times the query heads that share one KV head: each K/V
// block loaded serves all of them (kernel_table.h: AttentionTile).
constexpr int64_t kTileRows = 12;
// Decode rows of sequences that share their first KV block (a common prefix) are attended together, up to
// this many per tile, so each shared block is read from memory once per step for all of them.
constexpr int64_t kDecodeTileSeqs = 16;

}  // namespace

void write_kv(const PagedKvLayer& c, const float* k, const float* v, const int32_t* slots, int64_t tokens) {
  const int64_t hd = c.head_dim, bs = c.block_size;
#pragma omp parallel for if (tokens * c.num_kv_heads * hd > 65536)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t block = slots[t] / bs, off = slots[t] % bs;
    for (int64_t g = 0; g < c.num_kv_heads; ++g) {
      const int64_t base = (block * c.num_kv_heads + g) * hd * bs;
      const float* kt = k + (t * c.num_kv_heads + g) * hd;
      for (int64_t d = 0; d < hd; ++d) c.k[base + d * bs + off] = kt[d];  // K: [head_dim, block_size]
      std::memcpy(c.v + base + off * hd, v + (t * c.num_kv_heads + g) * hd, sizeof(float) * hd);
    }
  }
}

void paged_attention(const float* q, const PagedKvLayer& c, std::span<const AttentionSeq> seqs, int64_t num_heads,
                     float scale, float* out) {
  const int64_t group = num_heads / c.num_kv_heads;
  // A tile holds at most kMaxTileVectors query vectors: the heads of a group are split into ranges of at most
  // that many, and a tile takes as many rows as its head range allows.
  const int64_t heads_per_tile = std::min<int64_t>(group, kMaxTileVectors);
  const int64_t rows_per_tile = std::clamp<int64_t>(kMaxTileVectors / heads_per_tile, 1, kTileRows);
  const int64_t decode_per_tile = std::clamp<int64_t>(kMaxTileVectors / heads_per_tile, 1, kDecodeTileSeqs);
  // Work items, KV head outer so neighbouring items share K/V in cache: for a prefill chunk, a run of up to
  // rows_per_tile rows of one sequence; for decode rows, up to decode_per_tile sequences that share their
  // first block (so, very likely, a prefix): their shared blocks are read once for all of them.
  struct Item {
    int32_t g;           // KV head
    int32_t head_begin;  // the query heads [head_begin, head_begin + heads) of its group
    int32_t heads;
    int32_t first;  // index into `members`
    int32_t count;  // members of this item
  };
  struct Member {
    int32_t seq;
    int32_t row;
  };
  std::vector<Member> members;
  std::vector<std::pair<int32_t, int32_t>> runs;  // [first, first + count) of members: the rows of one tile
  int64_t max_ctx = 0;
  std::vector<int32_t> decode;  // sequences with one row, grouped by their first block
  for (size_t s = 0; s < seqs.size(); ++s) {
    max_ctx = std::max(max_ctx, seqs[s].context_len);
    if (seqs[s].q_len == 1) decode.push_back(static_cast<int32_t>(s));
  }
  std::stable_sort(decode.begin(), decode.end(),
                   [&](int32_t a, int32_t b) { return seqs[a].block_table[0] < seqs[b].block_table[0]; });
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].q_len == 1) continue;
    for (int64_t r = 0; r < seqs[s].q_len; r += rows_per_tile) {
      const int64_t n = std::min(rows_per_tile, seqs[s].q_len - r);
      runs.emplace_back(static_cast<int32_t>(members.size()), static_cast<int32_t>(n));
      for (int64_t k = 0; k < n; ++k) members.push_back({static_cast<int32_t>(s), static_cast<int32_t>(r + k)});
    }
  }
  for (size_t i = 0; i < decode.size();) {
    size_t j = i + 1;
    while (j < decode.size() && static_cast<int64_t>(j - i) < decode_per_tile &&
           seqs[decode[j]].block_table[0] == seqs[decode[i]].block_table[0])
      ++j;
    runs.emplace_back(static_cast<int32_t>(members.size()), static_cast<int32_t>(j - i));
    for (size_t k = i; k < j; ++k) members.push_back({decode[k], 0});
    i = j;
  }
  std::vector<Item> items;
  for (int64_t g = 0; g < c.num_kv_heads; ++g)
    for (int64_t h = 0; h < group; h += heads_per_tile)
      for (const auto& [first, count] : runs)
        items.push_back({static_cast<int32_t>(g), static_cast<int32_t>(h),
                         static_cast<int32_t>(std::min(heads_per_tile, group - h)), first, count});

  const int64_t hd = c.head_dim, row_width = num_heads * hd;
  const int64_t stride = (max_ctx + c.block_size - 1) / c.block_size * c.block_size;
  const auto n_items = static_cast<int64_t>(items.size());
  const KernelTable& kt = kernels();
#pragma omp parallel if (n_items > 1)
  {
    // Each thread's scores, kept between calls (a fresh vector per call would be mapped and unmapped).
    thread_local std::vector<float> scores;
    if (scores.size() < static_cast<size_t>(kMaxTileVectors * stride)) scores.resize(static_cast<size_t>(kMaxTileVectors * stride));
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < n_items; ++w) {
      const Item it = items[w];
      AttentionTile tile;
      tile.kv_head = it.g;
      for (int32_t m = it.first; m < it.first + it.count; ++m) {
        const AttentionSeq& s = seqs[members[m].seq];
        const int64_t t = s.q_begin + members[m].row;
        for (int64_t hi = it.head_begin; hi < it.head_begin + it.heads; ++hi) {
          const int64_t h = it.g * group + hi;
          tile.q[tile.n] = q + t * row_width + h * hd;
          tile.out[tile.n] = out + t * row_width + h * hd;
          tile.len[tile.n] = s.context_len - s.q_len + members[m].row + 1;
          tile.table[tile.n] = s.block_table;
          ++tile.n;
        }
      }
      kt.attend(tile, c, scale, scores.data(), stride);
    }
  }
}

void paged_attention_reference(const float* q, const PagedKvLayer& c, std::span<const AttentionSeq> seqs,
                               int64_t num_heads, float scale, float* out) {
  const int64_t hd = c.head_dim, bs = c.block_size, group = num_heads / c.num_kv_heads;
  for (const AttentionSeq& s : seqs) {
    for (int64_t r = 0; r < s.q_len; ++r) {
      const int64_t t = s.q_begin + r, pos = s.context_len - s.q_len + r;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t g = h / group;
        auto base = [&](int64_t j) { return (s.block_table[j / bs] * c.num_kv_heads + g) * hd * bs; };
        auto key = [&](int64_t j, int64_t d) { return c.k[base(j) + d * bs + j % bs]; };
        auto value = [&](int64_t j, int64_t d) { return c.v[base(j) + (j % bs) * hd + d]; };
        std::vector<double> p(pos + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(q[(t * num_heads + h) * hd + d]) * key(j, d);
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < hd; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= pos; ++j) o += p[j] / sum * value(j, d);
          out[(t * num_heads + h) * hd + d] = static_cast<float>(o);
        }
      }
    }
  }
}

}  // namespace kvshare
