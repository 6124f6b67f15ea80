#include "kv/block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace kvshare {
namespace {

using Tokens = std::vector<int32_t>;

#define EXPECT_INVARIANTS(bm)                          \
  do {                                                 \
    const Status kv_st_ = (bm).check_invariants();     \
    EXPECT_TRUE(kv_st_.ok()) << kv_st_.to_string();    \
  } while (0)

// Allocates one block per full block of `tokens` and publishes them as one chain; returns the block ids
// (switching to an existing block on dedup, as the engine does).
std::vector<int32_t> publish_chain(BlockManager& bm, const Tokens& tokens, std::string_view salt) {
  const int32_t bs = bm.block_size();
  std::vector<int32_t> blocks;
  for (size_t i = 0; i + bs <= tokens.size(); i += bs) {
    auto b = bm.allocate();
    EXPECT_TRUE(b.has_value());
    if (!b) return blocks;
    const int32_t parent = blocks.empty() ? -1 : blocks.back();
    const int32_t got = bm.publish(*b, parent, std::span(tokens).subspan(i, bs), salt);
    if (got != *b) {
      const int32_t one[] = {got};
      bm.acquire(one);
      const int32_t own[] = {*b};
      bm.release(own);
    }
    blocks.push_back(got);
  }
  return blocks;
}

// Releases a sequence's blocks the documented way: last to first.
TEST(BlockManager, FreshManagerCounts) {
  BlockManager bm(8, 4, true);
  EXPECT_EQ(bm.num_blocks(), 8);
  EXPECT_EQ(bm.block_size(), 4);
  EXPECT_EQ(bm.num_free_blocks(), 8);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.num_used_blocks(), 0);
  EXPECT_INVARIANTS(bm);
  EXPECT_EQ(bm.allocate(), 0);
  EXPECT_EQ(bm.allocate(), 1);
  EXPECT_EQ(bm.ref_count(0), 1);
  EXPECT_EQ(bm.num_used_blocks(), 2);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, HitAfterPublish) {
  BlockManager bm(8, 4, true);
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto chain = publish_chain(bm, t, "");
  ASSERT_EQ(chain, (std::vector<int32_t>{0, 1}));
  EXPECT_TRUE(bm.is_published(0));
  EXPECT_TRUE(bm.is_published(1));
  EXPECT_EQ(bm.match_prefix(t, "", 2), chain);
  // Matching does not reference.
  EXPECT_EQ(bm.ref_count(0), 1);
  bm.release_chain(chain);
  EXPECT_EQ(bm.num_evictable_blocks(), 2);
  EXPECT_EQ(bm.num_used_blocks(), 0);
  EXPECT_EQ(bm.match_prefix(t, "", 2), chain);  // evictable blocks still match
  bm.acquire(chain);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.ref_count(1), 1);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, MissWithDifferentSalt) {
  BlockManager bm(8, 4, true);
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto chain = publish_chain(bm, t, "tenant-a");
  EXPECT_EQ(bm.match_prefix(t, "tenant-a", 2), chain);
  EXPECT_TRUE(bm.match_prefix(t, "tenant-b", 2).empty());
  EXPECT_TRUE(bm.match_prefix(t, "", 2).empty());
  // The same tokens under another salt are a separate block, not a dedup.
  auto b = bm.allocate();
  ASSERT_TRUE(b);
  EXPECT_EQ(bm.publish(*b, -1, std::span(t).first(4), "tenant-b"), *b);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, PartialMatchStopsAtFirstDifferingBlock) {
  BlockManager bm(8, 2, true);
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto chain = publish_chain(bm, t, "");
  ASSERT_EQ(chain.size(), 4u);
  const Tokens q = {1, 2, 3, 4, 9, 6, 7, 8, 0};  // third block differs, fourth equal again
  EXPECT_EQ(bm.match_prefix(q, "", 4), (std::vector<int32_t>{chain[0], chain[1]}));
  const Tokens q2 = {0, 2, 3, 4, 5, 6};
  EXPECT_TRUE(bm.match_prefix(q2, "", 3).empty());
  // A trailing partial block never matches.
  const Tokens q3 = {1, 2, 3};
  EXPECT_EQ(bm.match_prefix(q3, "", 10), (std::vector<int32_t>{chain[0]}));
}

TEST(BlockManager, MaxBlocksCapsTheRun) {
  BlockManager bm(8, 2, true);
  const Tokens t = {1, 2, 3, 4, 5, 6};
  const auto chain = publish_chain(bm, t, "");
  EXPECT_EQ(bm.match_prefix(t, "", 3).size(), 3u);
  // The engine computes at least one token itself: (6 - 1) / 2 = 2 blocks.
  EXPECT_EQ(bm.match_prefix(t, "", (6 - 1) / 2), (std::vector<int32_t>{chain[0], chain[1]}));
  EXPECT_TRUE(bm.match_prefix(t, "", 0).empty());
}

TEST(BlockManager, EvictionIsLruAndOnlyOfUnreferencedBlocks) {
  BlockManager bm(5, 2, true);
  std::vector<Tokens> prompts = {{10, 11}, {20, 21}, {30, 31}, {40, 41}};
  std::vector<int32_t> ids;
  for (const auto& p : prompts) ids.push_back(publish_chain(bm, p, "")[0]);
  ASSERT_EQ(ids, (std::vector<int32_t>{0, 1, 2, 3}));
  auto held = bm.allocate();  // block 4 stays referenced throughout
  ASSERT_EQ(held, 4);
  for (int32_t b : ids) bm.release(std::span(&b, 1));  // LRU: 0 1 2 3
  EXPECT_EQ(bm.num_evictable_blocks(), 4);
  // Touch block 1: LRU becomes 0 2 3 1.
  const auto hit = bm.match_prefix(prompts[1], "", 1);
  ASSERT_EQ(hit, (std::vector<int32_t>{1}));
  bm.acquire(hit);
  EXPECT_EQ(bm.num_evictable_blocks(), 3);
  bm.release(hit);
  EXPECT_INVARIANTS(bm);

  EXPECT_EQ(bm.allocate(), 0);
  EXPECT_FALSE(bm.is_published(0));
  EXPECT_TRUE(bm.match_prefix(prompts[0], "", 1).empty());
  EXPECT_EQ(bm.match_prefix(prompts[2], "", 1), (std::vector<int32_t>{2}));
  EXPECT_EQ(bm.allocate(), 2);
  EXPECT_EQ(bm.allocate(), 3);
  EXPECT_EQ(bm.allocate(), 1);
  EXPECT_EQ(bm.allocate(), std::nullopt);
  EXPECT_EQ(bm.ref_count(4), 1);
  EXPECT_EQ(bm.num_used_blocks(), 5);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, AllocateReturnsNulloptWhenAllReferenced) {
  BlockManager bm(3, 4, true);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bm.allocate().has_value());
  EXPECT_EQ(bm.allocate(), std::nullopt);
  EXPECT_EQ(bm.num_free_blocks(), 0);
  const int32_t one[] = {1};
  bm.release(one);  // unpublished: becomes free
  EXPECT_EQ(bm.num_free_blocks(), 1);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.allocate(), 1);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, PublishDedupReturnsTheExistingBlock) {
  BlockManager bm(6, 2, true);
  const Tokens t = {1, 2, 3, 4};
  const auto a = publish_chain(bm, t, "s");
  // A second sequence computed the same prompt in the same batch.
  auto b0 = bm.allocate();
  ASSERT_TRUE(b0);
  EXPECT_EQ(bm.publish(*b0, -1, std::span(t).first(2), "s"), a[0]);
  EXPECT_FALSE(bm.is_published(*b0));
  // Republishing the existing block itself is idempotent.
  EXPECT_EQ(bm.publish(a[0], -1, std::span(t).first(2), "s"), a[0]);
  // A dedup'd block's child is not published: the chain is only findable through published links.
  auto b1 = bm.allocate();
  ASSERT_TRUE(b1);
  EXPECT_EQ(bm.publish(*b1, *b0, std::span(t).subspan(2, 2), "s"), *b1);
  EXPECT_FALSE(bm.is_published(*b1));
  // Switching: acquire the existing one, release our own (which becomes free, not evictable).
  const int32_t ex[] = {a[0]};
  bm.acquire(ex);
  const int32_t own[] = {*b1, *b0};
  bm.release(own);
  EXPECT_EQ(bm.ref_count(a[0]), 2);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.num_free_blocks(), 6 - 2);
  EXPECT_EQ(bm.match_prefix(t, "s", 2), a);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, PrefixCachingOffNeverMatches) {
  BlockManager bm(4, 2, false);
  const Tokens t = {1, 2, 3, 4};
  const auto chain = publish_chain(bm, t, "");
  EXPECT_FALSE(bm.is_published(chain[0]));
  EXPECT_TRUE(bm.match_prefix(t, "", 2).empty());
  // Identical content is not deduplicated either.
  auto b = bm.allocate();
  ASSERT_TRUE(b);
  EXPECT_EQ(bm.publish(*b, -1, std::span(t).first(2), ""), *b);
  bm.release_chain(chain);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);  // unpublished blocks become free
  EXPECT_EQ(bm.num_free_blocks(), 3);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, StaleChildDoesNotMatchAfterParentEvictedAndReused) {
  BlockManager bm(3, 2, true);
  const Tokens t = {1, 2, 3, 4, 5};
  const auto chain = publish_chain(bm, t, "");
  ASSERT_EQ(chain, (std::vector<int32_t>{0, 1}));
  bm.release(chain);  // head first (the wrong order, on purpose): LRU 0 1, so the parent goes first
  ASSERT_EQ(bm.allocate(), 2);  // the free block
  ASSERT_EQ(bm.allocate(), 0);  // evicts the parent
  EXPECT_TRUE(bm.is_published(1));  // the child is still cached (and evictable) ...
  EXPECT_EQ(bm.num_evictable_blocks(), 1);
  // ... and the parent's id now holds the SAME tokens again, under a new generation.
  EXPECT_EQ(bm.publish(0, -1, std::span(t).first(2), ""), 0);
  EXPECT_EQ(bm.match_prefix(t, "", 2), (std::vector<int32_t>{0}));  // the stale child does not match
  EXPECT_INVARIANTS(bm);
  // A live block with the child's content claims the stale child's index slot.
  EXPECT_EQ(bm.publish(2, 0, std::span(t).subspan(2, 2), ""), 2);
  EXPECT_FALSE(bm.is_published(1));
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.num_free_blocks(), 1);
  EXPECT_EQ(bm.match_prefix(t, "", 2), (std::vector<int32_t>{0, 2}));
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, StaleChildDoesNotMatchUnderADifferentParent) {
  BlockManager bm(2, 2, true);
  const Tokens t = {1, 2, 3, 4};
  const auto chain = publish_chain(bm, t, "");
  bm.release(chain);  // head first: LRU 0 1
  ASSERT_EQ(bm.allocate(), 0);
  const Tokens u = {7, 7, 3, 4};
  EXPECT_EQ(bm.publish(0, -1, std::span(u).first(2), ""), 0);
  EXPECT_EQ(bm.match_prefix(u, "", 2), (std::vector<int32_t>{0}));
  EXPECT_TRUE(bm.match_prefix(t, "", 2).empty());
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, HashCollisionsAreConfirmedExactly) {
  BlockManager bm(8, 2, true, /*hash_bits=*/0);  // every block has the same index key
  const Tokens a = {1, 2, 1, 2, 9};
  const auto chain = publish_chain(bm, Tokens{1, 2}, "");
  ASSERT_EQ(chain.size(), 1u);
  EXPECT_TRUE(bm.is_published(chain[0]));
  // Other tokens, same key: not published (the slot's live owner stays), and never a false hit.
  auto b = bm.allocate();
  ASSERT_TRUE(b);
  const Tokens other = {3, 4, 9};
  EXPECT_EQ(bm.publish(*b, -1, std::span(other).first(2), ""), *b);
  EXPECT_FALSE(bm.is_published(*b));
  EXPECT_TRUE(bm.match_prefix(other, "", 1).empty());
  // Same tokens under another salt: rejected on the salt.
  EXPECT_TRUE(bm.match_prefix(a, "x", 2).empty());
  // Same tokens as the first block, but as its second: rejected on the parent.
  EXPECT_EQ(bm.match_prefix(a, "", 2), chain);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, TailFirstReleaseEvictsTheTailBeforeTheHead) {
  BlockManager bm(3, 2, true);
  const Tokens t = {1, 2, 3, 4, 5, 6};
  const auto chain = publish_chain(bm, t, "");
  bm.release_chain(chain);  // LRU: 2 1 0
  EXPECT_EQ(bm.allocate(), chain[2]);
  EXPECT_EQ(bm.match_prefix(t, "", 3), (std::vector<int32_t>{chain[0], chain[1]}));
  EXPECT_EQ(bm.allocate(), chain[1]);
  EXPECT_EQ(bm.match_prefix(t, "", 3), (std::vector<int32_t>{chain[0]}));
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, PinningIsHoldingAReference) {
  BlockManager bm(2, 2, true);
  const Tokens sys = {9, 9};
  const auto pinned = publish_chain(bm, sys, "");  // kept referenced: pinned
  auto other = bm.allocate();
  ASSERT_TRUE(other);
  bm.release(std::span(&*other, 1));
  for (int i = 0; i < 5; ++i) {
    auto b = bm.allocate();
    ASSERT_EQ(b, *other);  // never the pinned block
    bm.release(std::span(&*b, 1));
  }
  EXPECT_EQ(bm.match_prefix(sys, "", 1), pinned);
  EXPECT_INVARIANTS(bm);
}

TEST(BlockManager, DropEvictableForgetsOnlyUnreferencedBlocks) {
  BlockManager bm(8, 4, true);
  const Tokens a = {1, 2, 3, 4, 5, 6, 7, 8}, b = {9, 9, 9, 9};
  const auto chain_a = publish_chain(bm, a, "");
  const auto chain_b = publish_chain(bm, b, "");  // stays referenced (a running sequence, or a pinned prefix)
  bm.release_chain(chain_a);
  ASSERT_EQ(bm.num_evictable_blocks(), 2);
  EXPECT_EQ(bm.drop_evictable(), 2);
  EXPECT_EQ(bm.num_evictable_blocks(), 0);
  EXPECT_EQ(bm.num_free_blocks(), 7);
  EXPECT_TRUE(bm.match_prefix(a, "", 2).empty());
  EXPECT_EQ(bm.match_prefix(b, "", 1), chain_b);
  EXPECT_INVARIANTS(bm);
  // The dropped blocks are allocated again before never-used ones (their pages are already resident), the
  // most recently used first: the chain was released tail first, so its head is the most recent.
  EXPECT_EQ(bm.allocate(), chain_a[0]);
  EXPECT_EQ(bm.allocate(), chain_a[1]);
  EXPECT_EQ(bm.drop_evictable(), 0);
  EXPECT_INVARIANTS(bm);
}

// A cache of millions of small blocks (a model with a tiny K/V row, or block size 1) is ready at once: a block's
// records are made when it is first allocated, so a fresh manager writes nothing per block. Built up front, the
// 16M blocks here took about 1.5 GB and seconds before the first request.
TEST(BlockManager, ManyBlocksCostNothingUntilAllocated) {
  constexpr int32_t kBlocks = 1 << 24;
  const int64_t before = testing::resident_bytes();
  BlockManager bm(kBlocks, 1, true);
  if (before >= 0) {
    EXPECT_LT(testing::resident_bytes() - before, int64_t{64} << 20);
  }
  EXPECT_EQ(bm.num_free_blocks(), kBlocks);
  EXPECT_EQ(bm.num_used_blocks(), 0);
  EXPECT_EQ(bm.ref_count(kBlocks - 1), 0);
  EXPECT_FALSE(bm.is_published(kBlocks - 1));
  // Never-used blocks are handed out lowest first, after any released one.
  EXPECT_EQ(bm.allocate(), 0);
  EXPECT_EQ(bm.allocate(), 1);
  const int32_t zero[] = {0};
  bm.release(zero);
  EXPECT_EQ(bm.allocate(), 0);
  EXPECT_EQ(bm.allocate(), 2);
  EXPECT_EQ(bm.num_free_blocks(), kBlocks - 3);
  EXPECT_INVARIANTS(bm);
}

// bookkeeping_bytes_per_block() bounds what the manager takes for its blocks when every one of them is used and
// published (distinct tokens, so every block has its own index entry): the engine counts it in the KV budget.
// Block size 1, where the bookkeeping outweighs the K/V most; once per process, as freed memory is reused.
TEST(BlockManager, BookkeepingBytesBoundWhatEveryBlockInUseTakes) {
  const int64_t before = testing::resident_bytes();
  if (before < 0) GTEST_SKIP() << "resident memory under a sanitizer is not the allocator's";
  constexpr int32_t kBlocks = 1 << 18;
  BlockManager bm(kBlocks, 1, true);
  for (int32_t i = 0; i < kBlocks; ++i) {
    const auto b = bm.allocate();
    ASSERT_TRUE(b);
    ASSERT_EQ(bm.publish(*b, -1, Tokens{i}, ""), *b);
  }
  EXPECT_EQ(bm.num_free_blocks(), 0);
  const int64_t used = testing::resident_bytes() - before;
  const int64_t counted = BlockManager::bookkeeping_bytes_per_block(1, true) * kBlocks;
  EXPECT_LE(used, counted);
  EXPECT_GT(used, counted / 2);  // and is not a wild overestimate
  // A block's token ids are counted by the block size; the index only with prefix caching.
  EXPECT_EQ(BlockManager::bookkeeping_bytes_per_block(16, true) - BlockManager::bookkeeping_bytes_per_block(1, true),
            15 * int64_t{sizeof(int32_t)});
  EXPECT_LT(BlockManager::bookkeeping_bytes_per_block(16, false), BlockManager::bookkeeping_bytes_per_block(16, true));
}

TEST(BlockManagerDeathTest, EngineBugsAreChecked) {
  BlockManager bm(2, 2, true);
  const int32_t zero[] = {0};
  EXPECT_DEATH(bm.release(zero), "not referenced");
  EXPECT_DEATH(bm.acquire(zero), "free");
  const int32_t one[] = {1};
  EXPECT_DEATH(bm.publish(1, -1, Tokens{1, 2}, ""), "not referenced");  // never allocated
  EXPECT_DEATH(bm.release(one), "not referenced");
  auto b = bm.allocate();
  ASSERT_TRUE(b);
  const Tokens three = {1, 2, 3};
  EXPECT_DEATH(bm.publish(*b, -1, three, ""), "tokens for a block of 2");
}

// A randomized simulation of an engine: sequences start from prompts with random shared prefixes and salts,
// reuse cached blocks, prefill in chunks, grow token by token, publish full blocks (switching to an existing
// block on dedup), get preempted when blocks run out, and finish releasing tail-first or shuffled (which
// leaves stale children behind evicted parents); random evictions (churn) and pinned prefixes mix in.
// After every operation: check_invariants() passes, reference counts equal the test's own count, every hit
// is exactly the query's tokens, salt and parent (per a shadow copy of what each block was published with),
// and a running sequence finds its own published blocks again.
struct Sequence {
  Tokens tokens;
  std::string salt;
  std::vector<int32_t> blocks;
  size_t num_published = 0;  // leading full blocks published so far (the prompt is prefilled in chunks)
};

struct Shadow {
  Tokens tokens;
  std::string salt;
  int32_t parent;
};

class Simulation {
 public:
  Simulation(uint32_t seed, int32_t num_blocks, int32_t block_size, bool caching, int32_t hash_bits = 64)
      : rng_(seed), bm_(num_blocks, block_size, caching, hash_bits), caching_(caching), full_hash_(hash_bits == 64) {
    for (int i = 0; i < 3; ++i) {
      Tokens stem(static_cast<size_t>(rand(3 * block_size, 5 * block_size)));
      for (auto& x : stem) x = rand(0, 5);
      stems_.push_back(stem);
    }
  }

  void run(int num_ops) {
    for (int op = 0; op < num_ops && !::testing::Test::HasFailure(); ++op) {
      const int r = rand(0, 99);
      if (r < 25) {
        start();
      } else if (r < 65) {
        step();
      } else if (r < 80) {
        finish();
      } else if (r < 85) {
        pin();
      } else if (r < 93) {
        churn();
      } else {
        unpin();
      }
      verify();
    }
    // Drain: everything released, all blocks allocatable.
    while (!seqs_.empty()) finish();
    while (!pins_.empty()) unpin();
    verify();
    EXPECT_EQ(bm_.num_used_blocks(), 0);
    EXPECT_EQ(bm_.num_free_blocks(), bm_.num_blocks());
  }

  int64_t num_hit_blocks() const { return num_hit_blocks_; }
  int64_t num_dedups() const { return num_dedups_; }
  int64_t num_evictions() const { return num_evictions_; }
  int64_t num_stale_drops() const { return num_stale_drops_; }

 private:
  // Uniform enough in [lo, hi] for a test, and unlike std::uniform_int_distribution the same on every
  // standard library (mt19937's output is fully specified), so a seed names the same run everywhere.
  int rand(int lo, int hi) { return lo + static_cast<int>(rng_() % static_cast<uint32_t>(hi - lo + 1)); }

  Tokens make_prompt() {
    const Tokens& stem = stems_[rand(0, static_cast<int>(stems_.size()) - 1)];
    // Mostly a long shared prefix (several full blocks), sometimes a short one.
    const int len = static_cast<int>(stem.size());
    const int cut = rand(0, 3) == 0 ? rand(0, len) : len - rand(0, bm_.block_size());
    Tokens t(stem.begin(), stem.begin() + cut);
    const int extra = rand(1, 2 * bm_.block_size() + 1);
    for (int i = 0; i < extra; ++i) t.push_back(rand(0, 2));
    return t;
  }

  std::string make_salt() {
    static const char* const kSalts[] = {"", "", "", "a", "b"};
    return kSalts[rand(0, 4)];
  }

  // Checks hits against the shadow copy of what each block was published with.
  void check_hits(const Tokens& query, const std::string& salt, const std::vector<int32_t>& hits) {
    const int32_t bs = bm_.block_size();
    if (!caching_) {
      EXPECT_TRUE(hits.empty());
    }
    for (size_t i = 0; i < hits.size(); ++i) {
      const auto it = shadow_.find(hits[i]);
      ASSERT_NE(it, shadow_.end()) << "hit on block " << hits[i] << " that the test never saw published";
      ASSERT_TRUE(bm_.is_published(hits[i]));
      const Tokens expected(query.begin() + static_cast<ptrdiff_t>(i) * bs,
                            query.begin() + static_cast<ptrdiff_t>(i + 1) * bs);
      EXPECT_EQ(it->second.tokens, expected) << "hit " << i << " on block " << hits[i];
      EXPECT_EQ(it->second.salt, salt);
      EXPECT_EQ(it->second.parent, i == 0 ? -1 : hits[i - 1]);
    }
  }

  int32_t num_published() const {
    int32_t n = 0;
    for (int32_t b = 0; b < bm_.num_blocks(); ++b) n += bm_.is_published(b);
    return n;
  }

  std::optional<int32_t> allocate() {
    const bool evicts = bm_.num_free_blocks() == bm_.num_evictable_blocks() && bm_.num_evictable_blocks() > 0;
    auto b = bm_.allocate();
    if (b) {
      if (evicts) {
        ++num_evictions_;
        EXPECT_TRUE(shadow_.count(*b)) << "evicted block " << *b << " was never published";
      }
      shadow_.erase(*b);  // reused: whatever it held is gone
      ++refs_[*b];
    } else {
      EXPECT_EQ(bm_.num_used_blocks(), bm_.num_blocks()) << "nullopt while some block was unreferenced";
    }
    return b;
  }

  void acquire(const std::vector<int32_t>& blocks) {
    bm_.acquire(blocks);
    for (int32_t b : blocks) ++refs_[b];
  }

  void release(const std::vector<int32_t>& blocks) {
    bm_.release(blocks);
    for (int32_t b : blocks) --refs_[b];
  }

  // Publishes the sequence's block `i` (now full), switching to an existing identical block on dedup.
  void publish(Sequence& s, size_t i) {
    const int32_t bs = bm_.block_size();
    const int32_t own = s.blocks[i];
    const int32_t parent = i == 0 ? -1 : s.blocks[i - 1];
    const std::span<const int32_t> chunk = std::span(s.tokens).subspan(i * bs, bs);
    const int32_t published_before = num_published();
    const int32_t got = bm_.publish(own, parent, chunk, s.salt);
    // A publish that adds nothing new to the count replaced a stale entry.
    if (got == own && bm_.is_published(own) && num_published() == published_before) ++num_stale_drops_;
    if (got == own) {
      if (bm_.is_published(own)) shadow_[own] = Shadow{Tokens(chunk.begin(), chunk.end()), s.salt, parent};
      return;
    }
    ASSERT_TRUE(caching_);
    ASSERT_FALSE(bm_.is_published(own));
    ++num_dedups_;
    const auto it = shadow_.find(got);
    ASSERT_NE(it, shadow_.end());
    EXPECT_EQ(it->second.tokens, Tokens(chunk.begin(), chunk.end()));
    EXPECT_EQ(it->second.salt, s.salt);
    EXPECT_EQ(it->second.parent, parent);
    acquire({got});
    release({own});
    s.blocks[i] = got;
  }

  void start() {
    Sequence s;
    s.tokens = make_prompt();
    s.salt = make_salt();
    const int32_t bs = bm_.block_size();
    const int32_t max_blocks = (static_cast<int32_t>(s.tokens.size()) - 1) / bs;
    const auto hits = bm_.match_prefix(s.tokens, s.salt, max_blocks);
    EXPECT_LE(static_cast<int32_t>(hits.size()), max_blocks);
    check_hits(s.tokens, s.salt, hits);
    num_hit_blocks_ += static_cast<int64_t>(hits.size());
    acquire(hits);
    s.blocks = hits;
    s.num_published = hits.size();
    const size_t needed = (s.tokens.size() + bs - 1) / bs;
    while (s.blocks.size() < needed) {
      auto b = allocate();
      if (!b) {  // out of blocks: give up, like a scheduler that cannot admit the request
        release_sequence(s, true);
        return;
      }
      s.blocks.push_back(*b);
    }
    // Chunked prefill: the first chunk's full blocks are published now, the rest by later steps.
    const size_t first_chunk = s.num_published + static_cast<size_t>(rand(0, 2));
    while (s.num_published < std::min(first_chunk, s.tokens.size() / bs)) publish(s, s.num_published++);
    seqs_.push_back(std::move(s));
  }

  void step() {
    if (seqs_.empty()) return;
    const size_t k = static_cast<size_t>(rand(0, static_cast<int>(seqs_.size()) - 1));
    Sequence& s = seqs_[k];
    const int32_t bs = bm_.block_size();
    if (s.num_published < s.tokens.size() / bs) {  // still prefilling: the next chunk's block is computed
      publish(s, s.num_published++);
      return;
    }
    if (s.tokens.size() == s.blocks.size() * bs) {
      auto b = allocate();
      if (!b) {  // preempted: release everything
        release_sequence(s, rand(0, 1) == 0);
        seqs_.erase(seqs_.begin() + static_cast<ptrdiff_t>(k));
        return;
      }
      s.blocks.push_back(*b);
    }
    s.tokens.push_back(rand(0, 5));
    if (s.tokens.size() % bs == 0) publish(s, s.num_published++);
  }

  // Tail-first is the documented order; a shuffled order scatters a chain over the LRU so that parents are
  // evicted while their children stay cached (stale children, which must never match again).
  void release_sequence(const Sequence& s, bool tail_first) {
    std::vector<int32_t> order = s.blocks;
    if (tail_first) {
      std::reverse(order.begin(), order.end());
    } else {
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rand(0, static_cast<int>(i) - 1)]);
    }
    release(order);
  }

  void finish() {
    if (seqs_.empty()) return;
    const size_t k = static_cast<size_t>(rand(0, static_cast<int>(seqs_.size()) - 1));
    // Half in the documented tail-first order, half shuffled.
    release_sequence(seqs_[k], rand(0, 1) != 0);
    seqs_.erase(seqs_.begin() + static_cast<ptrdiff_t>(k));
  }

  // Random evictions: a few blocks taken and given straight back. They return to the free list unpublished,
  // so later allocations reuse them (same ids, new generations) while the evicted blocks' children survive.
  void churn() {
    std::vector<int32_t> taken;
    for (int i = rand(1, 4); i > 0; --i) {
      auto b = allocate();
      if (!b) break;
      taken.push_back(*b);
    }
    release(taken);
  }

  void pin() {
    const Tokens t = make_prompt();
    const std::string salt = make_salt();
    const auto hits = bm_.match_prefix(t, salt, static_cast<int32_t>(t.size()) / bm_.block_size());
    check_hits(t, salt, hits);
    if (hits.empty()) return;
    acquire(hits);
    pins_.push_back(hits);
  }

  void unpin() {
    if (pins_.empty()) return;
    const size_t k = static_cast<size_t>(rand(0, static_cast<int>(pins_.size()) - 1));
    auto blocks = pins_[k];
    std::reverse(blocks.begin(), blocks.end());
    release(blocks);
    pins_.erase(pins_.begin() + static_cast<ptrdiff_t>(k));
  }

  void verify() {
    const Status st = bm_.check_invariants();
    ASSERT_TRUE(st.ok()) << st.to_string();
    int32_t used = 0;
    for (int32_t b = 0; b < bm_.num_blocks(); ++b) {
      const auto it = refs_.find(b);
      const int32_t expected = it == refs_.end() ? 0 : it->second;
      ASSERT_EQ(bm_.ref_count(b), expected) << "block " << b;
      used += expected > 0;
      if (bm_.is_published(b)) {
        ASSERT_TRUE(shadow_.count(b)) << "published block " << b << " unknown to the test";
      }
    }
    EXPECT_EQ(bm_.num_used_blocks(), used);
    EXPECT_EQ(bm_.num_free_blocks() + bm_.num_used_blocks(), bm_.num_blocks());
    // A running sequence finds its own published blocks again (they are referenced, so live). With forced
    // hash collisions only the leading run that won its index slots is certain; identical blocks published
    // later by others may extend it (check_hits has confirmed those are exact).
    if (!seqs_.empty()) {
      const Sequence& s = seqs_[static_cast<size_t>(rand(0, static_cast<int>(seqs_.size()) - 1))];
      const auto hits = bm_.match_prefix(s.tokens, s.salt, static_cast<int32_t>(s.num_published));
      check_hits(s.tokens, s.salt, hits);
      size_t run = 0;
      while (caching_ && run < s.num_published && bm_.is_published(s.blocks[run])) ++run;
      if (full_hash_) {
        EXPECT_EQ(run, caching_ ? s.num_published : 0);
        EXPECT_EQ(hits, std::vector<int32_t>(s.blocks.begin(), s.blocks.begin() + run));
      } else {
        ASSERT_GE(hits.size(), run);
        EXPECT_TRUE(std::equal(s.blocks.begin(), s.blocks.begin() + run, hits.begin()));
      }
    }
  }

  std::mt19937 rng_;
  BlockManager bm_;
  bool caching_;
  bool full_hash_;  // false: collisions are forced, so some publishes lose their index slot
  std::vector<Tokens> stems_;
  std::vector<Sequence> seqs_;
  std::vector<std::vector<int32_t>> pins_;
  std::map<int32_t, int32_t> refs_;     // the test's own reference count per block
  std::map<int32_t, Shadow> shadow_;    // what each block was last published with
  int64_t num_hit_blocks_ = 0;
  int64_t num_dedups_ = 0;
  int64_t num_evictions_ = 0;
  int64_t num_stale_drops_ = 0;
};

TEST(BlockManagerRandomized, InvariantsAndExactHits) {
  int64_t num_dedups = 0, num_evictions = 0, num_stale_drops = 0;
  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, /*num_blocks=*/16 + static_cast<int32_t>(seed) * 4, /*block_size=*/1 + seed % 4,
                   /*caching=*/true);
    sim.run(5000);
    EXPECT_GT(sim.num_hit_blocks(), 0);  // the workload does share
    num_dedups += sim.num_dedups();
    num_evictions += sim.num_evictions();
    num_stale_drops += sim.num_stale_drops();
    if (HasFailure()) return;
  }
  // The workload reaches the interesting paths, not just the easy ones. A stale entry yielding its index slot
  // is rare in an LRU workload (a parent drifts to the LRU front only if its prefix is unpopular), so this is
  // a guard that the mix still reaches it; the draws are platform-independent, so the count is deterministic.
  EXPECT_GT(num_dedups, 0);
  EXPECT_GT(num_evictions, 0);
  EXPECT_GT(num_stale_drops, 0);
}

TEST(BlockManagerRandomized, SmallPoolHeavyEviction) {
  for (uint32_t seed : {11u, 12u, 13u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, /*num_blocks=*/10, /*block_size=*/2, /*caching=*/true);
    sim.run(4000);
    EXPECT_GT(sim.num_evictions(), 0);
    if (HasFailure()) return;
  }
}

TEST(BlockManagerRandomized, ForcedHashCollisionsStillGiveExactHits) {
  // 2 and 4 bit hashes: almost every lookup meets a block of other content, salt or parent.
  for (uint32_t seed : {31u, 32u, 33u, 34u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, /*num_blocks=*/24, /*block_size=*/1 + seed % 2, /*caching=*/true,
                   /*hash_bits=*/seed % 2 == 0 ? 2 : 4);
    sim.run(3000);
    EXPECT_GT(sim.num_hit_blocks(), 0);
    if (HasFailure()) return;
  }
}

TEST(BlockManagerRandomized, PrefixCachingOff) {
  Simulation sim(21, /*num_blocks=*/20, /*block_size=*/2, /*caching=*/false);
  sim.run(3000);
}

}  // namespace
}  // namespace kvshare
