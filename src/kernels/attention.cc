#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/vec_math.h"

namespace kvshare {
namespace {

// Query vectors attended together: up to kTileRows consecutive rows of one sequence, times the query heads
// that share one KV head. Each K/V block loaded from memory then serves all of them. Every vector's
// arithmetic is the same as if it were alone: the tile only shares loads.
constexpr int kTileRows = 4;

// 16 floats as one value: GCC's vector extension compiles it to one AVX-512 register (two AVX2, four SSE
// ones) in each clone, so the hot loops are SIMD by construction rather than by the vectorizer's judgement.
// Each lane does exactly the scalar arithmetic, so results do not depend on the width.
typedef float F16 __attribute__((vector_size(64)));
typedef float F16Unaligned __attribute__((vector_size(64), aligned(4)));

[[gnu::always_inline]] inline F16 load16(const float* p) { return *reinterpret_cast<const F16Unaligned*>(p); }
[[gnu::always_inline]] inline void store16(float* p, F16 v) { *reinterpret_cast<F16Unaligned*>(p) = v; }
constexpr int kMaxTile = 64;

// Decode rows of sequences that share their first KV block (a common prefix) are attended together, up to
// this many per tile, so each shared block is read from memory once per step for all of them.
constexpr int kDecodeTileSeqs = 16;

struct Tile {
  int n = 0;
  const float* q[kMaxTile];
  float* out[kMaxTile];
  int64_t pos[kMaxTile];             // the vector's position: it attends to context 0..pos
  const int32_t* table[kMaxTile];    // its sequence's block table
};

// Sizes known at compile time let the compiler keep a block's 16 scores and a head's output in registers;
// 0 means "given at run time". Every instantiation performs the same operations in the same order, so the
// results do not depend on which one runs.
template <int64_t kBs, int64_t kHd>
[[gnu::always_inline]] inline void attend_tile_impl(const Tile& t, const PagedKvLayer& c, int64_t g, float scale,
                                                    float* scores, int64_t stride) {
  const int64_t hd = kHd > 0 ? kHd : c.head_dim;
  const int64_t bs = kBs > 0 ? kBs : c.block_size;
  int64_t n_ctx = 0;
  for (int i = 0; i < t.n; ++i) n_ctx = std::max(n_ctx, t.pos[i] + 1);
  // scores[i * stride + j] = q_i . k_j * scale. K blocks are [head_dim, block_size]: per dimension a
  // contiguous run of keys, so a block's scores accumulate as a vector, summing over dimensions in order.
  // Whole blocks are scored (stride is a multiple of the block size); scores past a vector's position are
  // never used. Blocks outer, vectors inner: vectors that share a block read it back to back.
  for (int64_t j0 = 0; j0 < n_ctx; j0 += bs) {
    const auto block_of = [&](int i) {
      return c.k + (static_cast<int64_t>(t.table[i][j0 / bs]) * c.num_kv_heads + g) * hd * bs;
    };
    for (int i = 0; i < t.n;) {
      if (j0 > t.pos[i]) {
        ++i;
        continue;
      }
      const float* kb = block_of(i);
      if constexpr (kBs == 16) {
        // Four vectors reading the same block share each load and run four independent FMA chains; each
        // vector's sum still runs over the dimensions in order, exactly as alone.
        if (i + 4 <= t.n && j0 <= t.pos[i + 1] && j0 <= t.pos[i + 2] && j0 <= t.pos[i + 3] &&
            block_of(i + 1) == kb && block_of(i + 2) == kb && block_of(i + 3) == kb) {
          const float *q0 = t.q[i], *q1 = t.q[i + 1], *q2 = t.q[i + 2], *q3 = t.q[i + 3];
          F16 a0 = {}, a1 = {}, a2 = {}, a3 = {};
          for (int64_t d = 0; d < hd; ++d) {
            const F16 k = load16(kb + d * 16);
            a0 += q0[d] * k;
            a1 += q1[d] * k;
            a2 += q2[d] * k;
            a3 += q3[d] * k;
          }
          store16(scores + i * stride + j0, a0 * scale);
          store16(scores + (i + 1) * stride + j0, a1 * scale);
          store16(scores + (i + 2) * stride + j0, a2 * scale);
          store16(scores + (i + 3) * stride + j0, a3 * scale);
          i += 4;
          continue;
        }
        F16 acc = {};
        const float* q = t.q[i];
        for (int64_t d = 0; d < hd; ++d) acc += q[d] * load16(kb + d * 16);
        store16(scores + i * stride + j0, acc * scale);
      } else {
        float* sc = scores + i * stride + j0;
        const float* q = t.q[i];
        for (int64_t j = 0; j < bs; ++j) sc[j] = 0.f;
        for (int64_t d = 0; d < hd; ++d) {
          const float qd = q[d];
          for (int64_t j = 0; j < bs; ++j) sc[j] += qd * kb[d * bs + j];
        }
        for (int64_t j = 0; j < bs; ++j) sc[j] *= scale;
      }
      ++i;
    }
  }
  // Softmax numerators over each vector's own context; the sum uses 16 fixed lanes.
  float inv_sum[kMaxTile];
  for (int i = 0; i < t.n; ++i) {
    float* sc = scores + i * stride;
    const int64_t n = t.pos[i] + 1;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sc[j]);
    for (int64_t j = 0; j < n; ++j) sc[j] = vec::exp(sc[j] - mx);
    float lanes[16] = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
      for (int l = 0; l < 16; ++l) lanes[l] += sc[j + l];
    for (int w = 8; w > 0; w /= 2)
      for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
    float sum = lanes[0];
    for (; j < n; ++j) sum += sc[j];
    inv_sum[i] = 1.0f / sum;
  }
  // out_i = (sum_j p_ij v_j) / sum_i, keys in ascending order. V blocks are [block_size, head_dim].
  for (int i = 0; i < t.n;) {
    if constexpr (kHd > 0 && kHd % 16 == 0) {
      constexpr int kVecs = kHd / 16;
      // Four rows of one sequence (a prefill tile) share each V load and run independent FMA chains over
      // the keys they all see; each row then finishes its own last keys. Per row, keys stay in order.
      if (kVecs <= 4 && i + 4 <= t.n && t.table[i + 1] == t.table[i] && t.table[i + 2] == t.table[i] &&
          t.table[i + 3] == t.table[i]) {
        const int64_t n_common = std::min(std::min(t.pos[i], t.pos[i + 1]), std::min(t.pos[i + 2], t.pos[i + 3])) + 1;
        F16 acc[4][kVecs] = {};
        for (int64_t j0 = 0; j0 < n_common; j0 += bs) {
          const float* vb = c.v + (static_cast<int64_t>(t.table[i][j0 / bs]) * c.num_kv_heads + g) * bs * kHd;
          const int64_t jn = std::min(bs, n_common - j0);
          for (int64_t j = 0; j < jn; ++j) {
            F16 v[kVecs];
            for (int k = 0; k < kVecs; ++k) v[k] = load16(vb + j * kHd + 16 * k);
            for (int r = 0; r < 4; ++r) {
              const float p = scores[(i + r) * stride + j0 + j];
              for (int k = 0; k < kVecs; ++k) acc[r][k] += p * v[k];
            }
          }
        }
        for (int r = 0; r < 4; ++r) {
          const float* sc = scores + (i + r) * stride;
          for (int64_t j = n_common; j <= t.pos[i + r]; ++j) {
            const float* vj = c.v + (static_cast<int64_t>(t.table[i][j / bs]) * c.num_kv_heads + g) * bs * kHd + (j % bs) * kHd;
            for (int k = 0; k < kVecs; ++k) acc[r][k] += sc[j] * load16(vj + 16 * k);
          }
          for (int k = 0; k < kVecs; ++k) store16(t.out[i + r] + 16 * k, acc[r][k] * inv_sum[i + r]);
        }
        i += 4;
        continue;
      }
      const float* sc = scores + i * stride;
      const int64_t n = t.pos[i] + 1;
      F16 acc[kVecs] = {};
      for (int64_t j0 = 0; j0 < n; j0 += bs) {
        const float* vb = c.v + (static_cast<int64_t>(t.table[i][j0 / bs]) * c.num_kv_heads + g) * bs * kHd;
        const int64_t jn = std::min(bs, n - j0);
        for (int64_t j = 0; j < jn; ++j) {
          const float p = sc[j0 + j];
          for (int k = 0; k < kVecs; ++k) acc[k] += p * load16(vb + j * kHd + 16 * k);
        }
      }
      for (int k = 0; k < kVecs; ++k) store16(t.out[i] + 16 * k, acc[k] * inv_sum[i]);
    } else {
      const float* sc = scores + i * stride;
      const int64_t n = t.pos[i] + 1;
      float* o = t.out[i];
      std::memset(o, 0, sizeof(float) * hd);
      for (int64_t j = 0; j < n; ++j) {
        const float* vj = c.v + (static_cast<int64_t>(t.table[i][j / bs]) * c.num_kv_heads + g) * bs * hd + (j % bs) * hd;
        const float p = sc[j];
        for (int64_t d = 0; d < hd; ++d) o[d] += p * vj[d];
      }
      for (int64_t d = 0; d < hd; ++d) o[d] *= inv_sum[i];
    }
    ++i;
  }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void attend_tile(const Tile& t, const PagedKvLayer& c,
                                                                                int64_t g, float scale, float* scores,
                                                                                int64_t stride) {
  if (c.block_size == 16 && c.head_dim == 64) return attend_tile_impl<16, 64>(t, c, g, scale, scores, stride);
  if (c.block_size == 16 && c.head_dim == 128) return attend_tile_impl<16, 128>(t, c, g, scale, scores, stride);
  if (c.block_size == 16) return attend_tile_impl<16, 0>(t, c, g, scale, scores, stride);
  if (c.head_dim == 64) return attend_tile_impl<0, 64>(t, c, g, scale, scores, stride);
  attend_tile_impl<0, 0>(t, c, g, scale, scores, stride);
}

}  // namespace

void write_kv(const PagedKvLayer& c, const float* k, const float* v, const int32_t* slots, int64_t tokens) {
  const int64_t hd = c.head_dim, bs = c.block_size;
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
  const int64_t rows_per_tile = std::max<int64_t>(1, std::min<int64_t>(kTileRows, kMaxTile / group));
  // Work items, KV head outer so neighbouring items share K/V in cache: for a prefill chunk, a run of up to
  // rows_per_tile rows of one sequence; for decode rows, up to kDecodeTileSeqs sequences that share their
  // first block (so, very likely, a prefix): their shared blocks are read once for all of them.
  struct Item {
    int32_t g;
    int32_t first;  // index into `members`
    int32_t count;  // members of this item
  };
  struct Member {
    int32_t seq;
    int32_t row;
  };
  std::vector<Member> members;
  std::vector<Item> items;
  int64_t max_ctx = 0;
  std::vector<int32_t> decode;  // sequences with one row, grouped by their first block
  for (size_t s = 0; s < seqs.size(); ++s) {
    max_ctx = std::max(max_ctx, seqs[s].context_len);
    if (seqs[s].q_len == 1) decode.push_back(static_cast<int32_t>(s));
  }
  std::stable_sort(decode.begin(), decode.end(),
                   [&](int32_t a, int32_t b) { return seqs[a].block_table[0] < seqs[b].block_table[0]; });
  const int64_t decode_per_tile = std::max<int64_t>(1, std::min<int64_t>(kDecodeTileSeqs, kMaxTile / group));
  for (int64_t g = 0; g < c.num_kv_heads; ++g) {
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (seqs[s].q_len == 1) continue;
      for (int64_t r = 0; r < seqs[s].q_len; r += rows_per_tile) {
        const int64_t n = std::min(rows_per_tile, seqs[s].q_len - r);
        items.push_back({static_cast<int32_t>(g), static_cast<int32_t>(members.size()), static_cast<int32_t>(n)});
        for (int64_t k = 0; k < n; ++k) members.push_back({static_cast<int32_t>(s), static_cast<int32_t>(r + k)});
      }
    }
    for (size_t i = 0; i < decode.size();) {
      size_t j = i + 1;
      while (j < decode.size() && static_cast<int64_t>(j - i) < decode_per_tile &&
             seqs[decode[j]].block_table[0] == seqs[decode[i]].block_table[0])
        ++j;
      items.push_back({static_cast<int32_t>(g), static_cast<int32_t>(members.size()), static_cast<int32_t>(j - i)});
      for (size_t k = i; k < j; ++k) members.push_back({decode[k], 0});
      i = j;
    }
  }
  const int64_t hd = c.head_dim, row_width = num_heads * hd;
  const int64_t stride = (max_ctx + c.block_size - 1) / c.block_size * c.block_size;
  const auto n_items = static_cast<int64_t>(items.size());
#pragma omp parallel if (n_items > 1)
  {
    std::vector<float> scores(static_cast<size_t>(kMaxTile * stride));
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < n_items; ++w) {
      const Item it = items[w];
      Tile tile;
      for (int32_t m = it.first; m < it.first + it.count; ++m) {
        const AttentionSeq& s = seqs[members[m].seq];
        const int64_t t = s.q_begin + members[m].row;
        for (int64_t hi = 0; hi < group; ++hi) {
          const int64_t h = it.g * group + hi;
          tile.q[tile.n] = q + t * row_width + h * hd;
          tile.out[tile.n] = out + t * row_width + h * hd;
          tile.pos[tile.n] = s.context_len - s.q_len + members[m].row;
          tile.table[tile.n] = s.block_table;
          ++tile.n;
        }
      }
      attend_tile(tile, c, it.g, scale, scores.data(), stride);
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
