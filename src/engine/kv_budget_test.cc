#include "engine/kv_budget.h"

#include <gtest/gtest.h>

#include "kv/block_manager.h"

namespace kvshare {
namespace {

// The report's model: one layer, one KV head, head_dim 2: 16 bytes of K/V a token.
KvShape tiny_row(int64_t block_size) {
  KvShape s;
  s.num_layers = 1;
  s.num_kv_heads = 1;
  s.head_dim = 2;
  s.block_size = block_size;
  return s;
}

TEST(KvBudget, ABlockCostsItsKvAndItsBookkeeping) {
  for (const int64_t block_size : {1, 16, 1024}) {
    for (const bool caching : {true, false}) {
      const KvBlockCost cost = kv_block_cost(tiny_row(block_size), caching);
      EXPECT_EQ(cost.kv_bytes, 16 * block_size);
      // The manager's bytes and a block-table slot.
      EXPECT_EQ(cost.bookkeeping_bytes,
                BlockManager::bookkeeping_bytes_per_block(static_cast<int32_t>(block_size), caching) + 4);
      EXPECT_EQ(cost.total(), cost.kv_bytes + cost.bookkeeping_bytes);
    }
  }
  // For such a row the bookkeeping is most of a block of one token, and almost half of one of 16.
  const KvBlockCost one = kv_block_cost(tiny_row(1), true), sixteen = kv_block_cost(tiny_row(16), true);
  EXPECT_GT(one.bookkeeping_bytes, 4 * one.kv_bytes);
  EXPECT_GT(2 * sixteen.bookkeeping_bytes, sixteen.kv_bytes);
}

// The report's case: a 16-byte K/V row under the default budget (a quarter of 23 GB). Sized by K/V alone it made
// 22 million blocks, and their bookkeeping took another 3.4 GB; counted, blocks × cost stays within the budget.
TEST(KvBudget, BlocksTimesTheirWholeCostFitTheBudget) {
  const int64_t budget = (int64_t{23} << 30) / 4;
  for (const int64_t block_size : {1, 16}) {
    const KvBlockCost cost = kv_block_cost(tiny_row(block_size), true);
    const auto blocks = kv_blocks_for_budget(budget, cost, /*machine_bytes=*/int64_t{23} << 30);
    ASSERT_TRUE(blocks.ok()) << blocks.status().to_string();
    EXPECT_LE(*blocks * cost.total(), budget);
    EXPECT_GT((*blocks + 1) * cost.total(), budget);  // and nothing is left that would pay for one more
  }
}

TEST(KvBudget, BlockIdsCapTheCount) {
  const KvBlockCost cost{.kv_bytes = 16, .bookkeeping_bytes = 100};
  const auto blocks = kv_blocks_for_budget(int64_t{1} << 40, cost, /*machine_bytes=*/0);  // 0: not known
  ASSERT_TRUE(blocks.ok());
  EXPECT_EQ(*blocks, kMaxKvBlocks);
}

TEST(KvBudget, ABudgetForNoBlockOrMoreThanTheMachineIsRefused) {
  const KvBlockCost cost = kv_block_cost(tiny_row(16), true);
  auto none = kv_blocks_for_budget(cost.total() - 1, cost, int64_t{1} << 30);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("holds no block"), std::string::npos) << none.status().message();
  EXPECT_NE(none.status().message().find("raise --kv-cache-memory"), std::string::npos);
  EXPECT_TRUE(kv_blocks_for_budget(cost.total(), cost, int64_t{1} << 30).ok());

  auto over = kv_blocks_for_budget(int64_t{100} << 30, cost, int64_t{23} << 30);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(over.status().message().find("102400 MiB is more than this machine's memory of 23552 MiB"),
            std::string::npos)
      << over.status().message();
  EXPECT_NE(over.status().message().find("lower --kv-cache-memory"), std::string::npos);
  EXPECT_TRUE(kv_blocks_for_budget(int64_t{2} << 30, cost, int64_t{23} << 30).ok());  // the benchmarks' 2GiB
}

TEST(KvBudget, AFractionTakesAShareOfTheAvailableMemory) {
  EXPECT_EQ(kv_budget_bytes(int64_t{2} << 30, 0.25), int64_t{2} << 30);  // bytes win over the fraction
  const int64_t quarter = kv_budget_bytes(0, 0.25);
  EXPECT_GT(quarter, 0);
  const int64_t machine = machine_memory_bytes();
  if (machine > 0) {
    EXPECT_LE(quarter, machine / 4 + 1);
  }
}

}  // namespace
}  // namespace kvshare
