#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "isa_paths.h"
#include "kernels/kernel_table.h"

namespace kvshare {
namespace {

using testing::IsaScope;
using testing::supported_isas;

struct Fixture {
  int64_t block_size = 4, kvh = 2, hd = 16, heads = 6, num_blocks = 32;
  std::vector<float> k, v;
  PagedKvLayer layer() {
    return PagedKvLayer{k.data(), v.data(), block_size, kvh, hd};
  }
  Fixture() : k(num_blocks * kvh * block_size * hd), v(k.size()) {}
};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(n);
  for (auto& e : x) e = d(rng);
  return x;
}

TEST(Attention, MatchesReferenceForTwoSequencesWithScatteredBlocks) {
  Fixture f;
  const int64_t len_a = 11, len_b = 6;
  std::vector<int32_t> table_a = {7, 2, 30}, table_b = {5, 9};
  // Write all K/V of both sequences.
  auto kin = random_floats((len_a + len_b) * f.kvh * f.hd, 1), vin = random_floats(kin.size(), 2);
  std::vector<int32_t> slots;
  for (int64_t i = 0; i < len_a; ++i) slots.push_back(table_a[i / f.block_size] * f.block_size + i % f.block_size);
  for (int64_t i = 0; i < len_b; ++i) slots.push_back(table_b[i / f.block_size] * f.block_size + i % f.block_size);
  write_kv(f.layer(), kin.data(), vin.data(), slots.data(), len_a + len_b);
  // Sequence a: a 3-token chunk at the end; sequence b: one decode row.
  std::vector<AttentionSeq> seqs = {{0, 3, len_a, table_a.data()}, {3, 1, len_b, table_b.data()}};
  auto q = random_floats(4 * f.heads * f.hd, 3);
  std::vector<float> out(q.size()), ref(q.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(f.hd));
  paged_attention(q.data(), f.layer(), seqs, f.heads, scale, out.data());
  paged_attention_reference(q.data(), f.layer(), seqs, f.heads, scale, ref.data());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << i;
}

// A NaN score (from a NaN query) made e^-87 in the softmax and finite garbage out; it now makes its own head's
// output NaN, as in PyTorch, on every path and for prefill and decode rows. The other heads stay finite.
TEST(Attention, NanInAQueryGivesNanForItsHeadOnly) {
  Fixture f;
  const int64_t len = 9;
  std::vector<int32_t> table = {3, 1, 4};
  auto kin = random_floats(len * f.kvh * f.hd, 7), vin = random_floats(kin.size(), 8);
  std::vector<int32_t> slots(len);
  for (int64_t i = 0; i < len; ++i) slots[i] = table[i / f.block_size] * f.block_size + i % f.block_size;
  write_kv(f.layer(), kin.data(), vin.data(), slots.data(), len);
  const int64_t row = f.heads * f.hd;
  for (int64_t rows : {int64_t{1}, len}) {  // decode, prefill
    auto q = random_floats(rows * row, 9);
    q[(rows - 1) * row + 2 * f.hd + 5] = std::nanf("");  // last row, head 2
    std::vector<AttentionSeq> seqs = {{0, rows, len, table.data()}};
    for (Isa isa : supported_isas()) {
      IsaScope scope(isa);
      std::vector<float> out(q.size());
      paged_attention(q.data(), f.layer(), seqs, f.heads, 0.25f, out.data());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t h = 0; h < f.heads; ++h)
          for (int64_t d = 0; d < f.hd; ++d)
            EXPECT_EQ(std::isnan(out[r * row + h * f.hd + d]), r == rows - 1 && h == 2)
                << "row " << r << " head " << h << " of " << rows << " on " << isa_name(isa);
    }
  }
}

// A row's output is bitwise the same whether computed in a full prefill, in a chunk, or alone, and
// whatever other sequences share the call.
TEST(Attention, RowsAreBitwiseIndependentOfChunkingAndBatch) {
  Fixture f;
  const int64_t len = 21;
  std::vector<int32_t> table = {3, 1, 4, 15, 9, 26};
  auto kin = random_floats(len * f.kvh * f.hd, 4), vin = random_floats(kin.size(), 5);
  std::vector<int32_t> slots(len);
  for (int64_t i = 0; i < len; ++i) slots[i] = table[i / f.block_size] * f.block_size + i % f.block_size;
  write_kv(f.layer(), kin.data(), vin.data(), slots.data(), len);
  auto q = random_floats(len * f.heads * f.hd, 6);
  const int64_t row = f.heads * f.hd;
  const float scale = 0.25f;

  std::vector<float> full(q.size());
  std::vector<AttentionSeq> whole = {{0, len, len, table.data()}};
  paged_attention(q.data(), f.layer(), whole, f.heads, scale, full.data());

  // The last row alone (decode), next to an unrelated sequence.
  std::vector<int32_t> other_table = {20, 21};
  std::vector<float> qq(2 * row);
  std::memcpy(qq.data(), q.data() + (len - 1) * row, row * sizeof(float));
  std::memcpy(qq.data() + row, q.data(), row * sizeof(float));
  std::vector<AttentionSeq> batch = {{0, 1, len, table.data()}, {1, 1, 5, other_table.data()}};
  std::vector<float> out(2 * row);
  paged_attention(qq.data(), f.layer(), batch, f.heads, scale, out.data());
  EXPECT_EQ(std::memcmp(out.data(), full.data() + (len - 1) * row, row * sizeof(float)), 0);

  // A chunk of rows 13..17 (as after a cached prefix of 13 tokens).
  std::vector<AttentionSeq> chunk = {{0, 5, 18, table.data()}};
  std::vector<float> out2(5 * row);
  paged_attention(q.data() + 13 * row, f.layer(), chunk, f.heads, scale, out2.data());
  EXPECT_EQ(std::memcmp(out2.data(), full.data() + 13 * row, 5 * row * sizeof(float)), 0);
}

// Decode rows of sequences sharing prefix blocks are attended together: each row's output must equal the
// reference and, bitwise, the output of that row attended alone.
TEST(Attention, SharedPrefixDecodeRowsMatchAloneBitwise) {
  Fixture f;
  // Blocks 0 and 1 hold a shared 8-token prefix; each sequence then has its own tail.
  std::vector<std::vector<int32_t>> tables = {{0, 1, 10}, {0, 1, 11, 12}, {0, 1, 13}, {5, 6}};
  std::vector<int64_t> lens = {11, 15, 9, 7};
  auto kin = random_floats(20 * 4 * f.kvh * f.hd, 7), vin = random_floats(kin.size(), 8);
  int64_t next = 0;
  for (size_t s = 0; s < tables.size(); ++s) {
    for (int64_t i = (s > 0 && s < 3) ? 8 : 0; i < lens[s]; ++i) {
      const int32_t slot = tables[s][i / f.block_size] * f.block_size + i % f.block_size;
      write_kv(f.layer(), kin.data() + next * f.kvh * f.hd, vin.data() + next * f.kvh * f.hd, &slot, 1);
      ++next;
    }
  }
  const int64_t row = f.heads * f.hd;
  auto q = random_floats(tables.size() * row, 9);
  std::vector<AttentionSeq> batch;
  for (size_t s = 0; s < tables.size(); ++s)
    batch.push_back({static_cast<int64_t>(s), 1, lens[s], tables[s].data()});
  std::vector<float> out(q.size()), ref(q.size());
  paged_attention(q.data(), f.layer(), batch, f.heads, 0.3f, out.data());
  paged_attention_reference(q.data(), f.layer(), batch, f.heads, 0.3f, ref.data());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << i;
  for (size_t s = 0; s < tables.size(); ++s) {
    std::vector<AttentionSeq> alone = {{0, 1, lens[s], tables[s].data()}};
    std::vector<float> o(row);
    paged_attention(q.data() + s * row, f.layer(), alone, f.heads, 0.3f, o.data());
    EXPECT_EQ(std::memcmp(o.data(), out.data() + s * row, row * sizeof(float)), 0) << "sequence " << s;
  }
}

// A cache of any shape, with one sequence of `len` tokens written through a scattered block table.
struct Shape {
  int64_t block_size, kv_heads, head_dim, heads;
};
void PrintTo(const Shape& s, std::ostream* os) {
  *os << "block " << s.block_size << ", " << s.heads << " heads over " << s.kv_heads << " KV heads of " << s.head_dim;
}

struct Cache {
  Shape s;
  int64_t len;
  std::vector<float> k, v;
  std::vector<int32_t> table;
  PagedKvLayer layer() { return PagedKvLayer{k.data(), v.data(), s.block_size, s.kv_heads, s.head_dim}; }
  Cache(Shape shape, int64_t n) : s(shape), len(n) {
    const int64_t blocks = (len + s.block_size - 1) / s.block_size;
    const int64_t num_blocks = 2 * blocks + 3;
    k.assign(num_blocks * s.kv_heads * s.block_size * s.head_dim, 0.0f);
    v.assign(k.size(), 0.0f);
    for (int64_t b = 0; b < blocks; ++b) table.push_back(static_cast<int32_t>(num_blocks - 1 - 2 * b));  // scattered
    auto kin = random_floats(len * s.kv_heads * s.head_dim, 21), vin = random_floats(kin.size(), 22);
    std::vector<int32_t> slots(len);
    for (int64_t i = 0; i < len; ++i) slots[i] = table[i / s.block_size] * s.block_size + i % s.block_size;
    write_kv(layer(), kin.data(), vin.data(), slots.data(), len);
  }
};

class AttentionShapes : public ::testing::TestWithParam<Shape> {};

// For every path: the full prefill is close to the reference; every row's bits are the same whether it is
// computed in the full prefill, in a chunk after a cached prefix, or alone as a decode row beside another
// sequence; and every path gives the scalar path's bits.
TEST_P(AttentionShapes, RowsAreExactAcrossChunkingBatchesAndPaths) {
  const Shape sh = GetParam();
  const int64_t len = 45;
  Cache cache(sh, len);
  Cache other(sh, 20);  // another sequence for the decode batch: same storage layout, separate arrays
  const int64_t row = sh.heads * sh.head_dim;
  auto q = random_floats(len * row, 23);
  const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
  std::vector<AttentionSeq> whole = {{0, len, len, cache.table.data()}};
  std::vector<float> ref(q.size());
  paged_attention_reference(q.data(), cache.layer(), whole, sh.heads, scale, ref.data());
  std::vector<float> scalar_full;
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    std::vector<float> full(q.size());
    paged_attention(q.data(), cache.layer(), whole, sh.heads, scale, full.data());
    for (size_t i = 0; i < full.size(); ++i)
      ASSERT_NEAR(full[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << isa_name(isa) << " element " << i;
    if (isa == Isa::kScalar) scalar_full = full;
    EXPECT_EQ(std::memcmp(full.data(), scalar_full.data(), full.size() * sizeof(float)), 0) << isa_name(isa);
    // Chunks after a cached prefix: rows [from, len).
    for (int64_t from : {1, 13, 16, 17, 31, 44}) {
      std::vector<AttentionSeq> chunk = {{0, len - from, len, cache.table.data()}};
      std::vector<float> out((len - from) * row);
      paged_attention(q.data() + from * row, cache.layer(), chunk, sh.heads, scale, out.data());
      EXPECT_EQ(std::memcmp(out.data(), full.data() + from * row, out.size() * sizeof(float)), 0)
          << isa_name(isa) << " chunk from " << from;
    }
    // Each of the last rows as a decode row (context up to itself), in one call with several of them: each
    // is its own sequence sharing the same blocks, so they form one shared-prefix decode tile.
    std::vector<AttentionSeq> decode;
    std::vector<float> qd;
    for (int64_t r = 30; r < len; ++r) {
      decode.push_back({static_cast<int64_t>(decode.size()), 1, r + 1, cache.table.data()});
      qd.insert(qd.end(), q.begin() + r * row, q.begin() + (r + 1) * row);
    }
    std::vector<float> out(qd.size());
    paged_attention(qd.data(), cache.layer(), decode, sh.heads, scale, out.data());
    EXPECT_EQ(std::memcmp(out.data(), full.data() + 30 * row, out.size() * sizeof(float)), 0)
        << isa_name(isa) << " decode rows";
  }
}

INSTANTIATE_TEST_SUITE_P(All, AttentionShapes,
                         ::testing::Values(Shape{16, 2, 64, 6},    // the vector path, groups of 3
                                           Shape{16, 1, 128, 4},   // head_dim 128, groups of 4
                                           Shape{32, 2, 32, 2},    // block 32, no grouping
                                           Shape{16, 2, 16, 4},    // head_dim 16
                                           Shape{4, 2, 16, 6},     // block 4: per-element path
                                           Shape{16, 2, 8, 4},     // head_dim 8: per-element path
                                           Shape{16, 1, 16, 130}), // 130 query heads per KV head
                         [](const ::testing::TestParamInfo<Shape>& i) {
                           return "b" + std::to_string(i.param.block_size) + "_kv" + std::to_string(i.param.kv_heads) +
                                  "_hd" + std::to_string(i.param.head_dim) + "_h" + std::to_string(i.param.heads);
                         });

// The vector kernel and the per-element one are two ways of writing the same arithmetic: same bits, on a
// tile mixing vectors of different lengths and block tables.
TEST(Attention, VectorAndPerElementKernelsAgreeBitwise) {
  Cache a(Shape{16, 1, 64, 1}, 70), b(Shape{16, 1, 64, 1}, 70);
  // b shares a's first two blocks (a prefix), then its own: copy a's storage so the tables index one array.
  b.k = a.k;
  b.v = a.v;
  std::vector<int32_t> table_b = {a.table[0], a.table[1], 0, 2, 4};
  auto q = random_floats(9 * 64, 24);
  const int64_t lens[] = {70, 33, 32, 17, 16, 1, 64, 40, 50};
  for (Isa isa : supported_isas()) {
    const KernelTable& kt = kernels_for(isa);
    AttentionTile t;
    std::vector<float> out1(9 * 64), out2(9 * 64);
    for (int i = 0; i < 9; ++i) {
      t.q[i] = q.data() + i * 64;
      t.len[i] = lens[i];
      t.table[i] = i % 3 == 2 ? table_b.data() : a.table.data();
      t.out[i] = out1.data() + i * 64;
    }
    t.n = 9;
    const int64_t stride = 80;
    std::vector<float> scratch(t.n * stride);
    kt.attend(t, a.layer(), 0.125f, scratch.data(), stride);
    for (int i = 0; i < 9; ++i) t.out[i] = out2.data() + i * 64;
    kt.attend_any_shape(t, a.layer(), 0.125f, scratch.data(), stride);
    EXPECT_EQ(std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)), 0) << isa_name(isa);
  }
}

}  // namespace
}  // namespace kvshare
