// The KV cache's share of memory: what one block costs, all told, and how many blocks a budget pays for. The one
// place of this rule: Engine::create sizes the cache with it and reports the cost (EngineMetrics::kv_bytes_per_block).
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kv/kv_storage.h"

namespace kvshare {

struct KvBlockCost {
  int64_t kv_bytes = 0;           // its K and V in every layer (KvStorage)
  int64_t bookkeeping_bytes = 0;  // BlockManager's per-block bytes and the block's slot in a block table
  int64_t total() const { return kv_bytes + bookkeeping_bytes; }
};

// What one block of `shape` costs. For a K/V row of a few bytes (one layer, one KV head, head_dim 2: 16 bytes a
// token) the bookkeeping is almost as large as the K/V it describes, and at a block size of 1 much larger:
// uncounted, a budget of 5.7 GB made 22 million such blocks whose bookkeeping took another 3.4 GB.
KvBlockCost kv_block_cost(const KvShape& shape, bool enable_prefix_caching);

// The most blocks a cache has: block ids are int32_t. With every block costing at least ~100 bytes this is
// reached only by budgets of 100 GiB and more; a larger budget then goes partly unused, which costs nothing
// (the cache takes memory as blocks are used, kv_storage.h and block_manager.h).
inline constexpr int64_t kMaxKvBlocks = int64_t{1} << 30;

// How many blocks `budget` bytes pay for at `cost` each, at most kMaxKvBlocks. Fails (invalid_argument, naming
// --kv-cache-memory) when the budget pays for no block, or is more than `machine_bytes` (the machine's memory):
// such a cache would be accepted (its pages are only reserved) and the process killed once it filled.
Result<int64_t> kv_blocks_for_budget(int64_t budget, const KvBlockCost& cost, int64_t machine_bytes);

// The KV budget of an engine: `kv_cache_bytes` when > 0, else `kv_cache_fraction` of the memory available now.
int64_t kv_budget_bytes(int64_t kv_cache_bytes, double kv_cache_fraction);

// The machine's memory (MemTotal), or 0 when it cannot be read.
int64_t machine_memory_bytes();

}  // namespace kvshare
