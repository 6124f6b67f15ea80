#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace kvshare {
namespace {

constexpr int kLanes = 16;

// Dot product with a fixed order: 16 independent lane sums, then a fixed pairwise tree, then the tail.
// The explicit lanes let the compiler vectorize without reassociating, so the order never changes.
[[gnu::always_inline]] inline float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  float s = acc[0];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

[[gnu::always_inline]] inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// One (query row, KV head) work item: all query heads of the group attend over the row's context.
__attribute__((target_clones("avx512f", "avx2", "default"))) void attend_group(
    const float* q_row, const PagedKvLayer& c, const AttentionSeq& s, int64_t pos, int64_t g, int64_t group,
    int64_t num_heads, float scale, float* scores, float* out_row) {
  const int64_t hd = c.head_dim;
  const int64_t n_ctx = pos + 1;
  // scores[h * n_ctx + j]
  for (int64_t j0 = 0; j0 < n_ctx; j0 += c.block_size) {
    const int64_t block = s.block_table[j0 / c.block_size];
    const float* kb = c.k + ((block * c.num_kv_heads + g) * c.block_size) * hd;
    const int64_t jn = std::min(c.block_size, n_ctx - j0);
    for (int64_t hi = 0; hi < group; ++hi) {
      const float* qh = q_row + (g * group + hi) * hd;
      float* sc = scores + hi * n_ctx + j0;
      for (int64_t j = 0; j < jn; ++j) sc[j] = dot(qh, kb + j * hd, hd) * scale;
    }
  }
  for (int64_t hi = 0; hi < group; ++hi) {
    float* sc = scores + hi * n_ctx;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_ctx; ++j) mx = std::max(mx, sc[j]);
    float sum = 0.f;
    for (int64_t j = 0; j < n_ctx; ++j) {
      sc[j] = std::exp(sc[j] - mx);
      sum += sc[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n_ctx; ++j) sc[j] *= inv;
    float* oh = out_row + (g * group + hi) * hd;
    std::memset(oh, 0, sizeof(float) * hd);
  }
  for (int64_t j0 = 0; j0 < n_ctx; j0 += c.block_size) {
    const int64_t block = s.block_table[j0 / c.block_size];
    const float* vb = c.v + ((block * c.num_kv_heads + g) * c.block_size) * hd;
    const int64_t jn = std::min(c.block_size, n_ctx - j0);
    for (int64_t hi = 0; hi < group; ++hi) {
      const float* sc = scores + hi * n_ctx + j0;
      float* oh = out_row + (g * group + hi) * hd;
      for (int64_t j = 0; j < jn; ++j) axpy(sc[j], vb + j * hd, oh, hd);
    }
  }
  (void)num_heads;
}

}  // namespace

void write_kv(const PagedKvLayer& c, const float* k, const float* v, const int32_t* slots, int64_t tokens) {
  const int64_t hd = c.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t block = slots[t] / c.block_size, off = slots[t] % c.block_size;
    for (int64_t g = 0; g < c.num_kv_heads; ++g) {
      const int64_t dst = ((block * c.num_kv_heads + g) * c.block_size + off) * hd;
      std::memcpy(c.k + dst, k + (t * c.num_kv_heads + g) * hd, sizeof(float) * hd);
      std::memcpy(c.v + dst, v + (t * c.num_kv_heads + g) * hd, sizeof(float) * hd);
    }
  }
}

void paged_attention(const float* q, const PagedKvLayer& c, std::span<const AttentionSeq> seqs, int64_t num_heads,
                     float scale, float* out) {
  const int64_t group = num_heads / c.num_kv_heads;
  // Work items: (sequence, row, kv head), flattened so threads balance across sequences.
  struct Item {
    int32_t seq;
    int32_t row;
  };
  std::vector<Item> items;
  int64_t max_ctx = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t r = 0; r < seqs[s].q_len; ++r) items.push_back({static_cast<int32_t>(s), static_cast<int32_t>(r)});
    max_ctx = std::max(max_ctx, seqs[s].context_len);
  }
  const int64_t n_items = static_cast<int64_t>(items.size()) * c.num_kv_heads;
  const int64_t row_width = num_heads * c.head_dim;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(group * max_ctx));
#pragma omp for schedule(dynamic, 4)
    for (int64_t w = 0; w < n_items; ++w) {
      const Item it = items[w / c.num_kv_heads];
      const int64_t g = w % c.num_kv_heads;
      const AttentionSeq& s = seqs[it.seq];
      const int64_t t = s.q_begin + it.row;
      const int64_t pos = s.context_len - s.q_len + it.row;
      attend_group(q + t * row_width, c, s, pos, g, group, num_heads, scale, scores.data(), out + t * row_width);
    }
  }
}

void paged_attention_reference(const float* q, const PagedKvLayer& c, std::span<const AttentionSeq> seqs,
                               int64_t num_heads, float scale, float* out) {
  const int64_t hd = c.head_dim, group = num_heads / c.num_kv_heads;
  for (const AttentionSeq& s : seqs) {
    for (int64_t r = 0; r < s.q_len; ++r) {
      const int64_t t = s.q_begin + r, pos = s.context_len - s.q_len + r;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t g = h / group;
        auto at = [&](const float* base, int64_t j) {
          return base + ((s.block_table[j / c.block_size] * c.num_kv_heads + g) * c.block_size + j % c.block_size) * hd;
        };
        std::vector<double> p(pos + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(q[(t * num_heads + h) * hd + i]) * at(c.k, j)[i];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double o = 0;
          for (int64_t j = 0; j <= pos; ++j) o += p[j] / sum * at(c.v, j)[i];
          out[(t * num_heads + h) * hd + i] = static_cast<float>(o);
        }
      }
    }
  }
}

}  // namespace kvshare
