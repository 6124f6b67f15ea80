#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace kvshare {
namespace {

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

}  // namespace
}  // namespace kvshare
