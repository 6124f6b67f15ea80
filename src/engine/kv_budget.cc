#include "engine/kv_budget.h"

#include <algorithm>
#include <fstream>
#include <string>

#include "kv/block_manager.h"

namespace kvshare {
namespace {

// A /proc/meminfo field in bytes ("MemAvailable:", "MemTotal:"), or -1 when it cannot be read.
int64_t meminfo_bytes(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t value = 0;
  std::string unit;
  while (in >> key >> value >> unit)
    if (key == field) return value * 1024;
  return -1;
}

std::string mib_text(int64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

KvBlockCost kv_block_cost(const KvShape& shape, bool enable_prefix_caching) {
  KvBlockCost cost;
  cost.kv_bytes = shape.bytes_per_block();
  // A block in use sits in at least one sequence's block table (Sequence::block_table); a block shared by
  // several sequences sits in each, but those slots grow with the requests, not with the cache.
  cost.bookkeeping_bytes =
      BlockManager::bookkeeping_bytes_per_block(static_cast<int32_t>(shape.block_size), enable_prefix_caching) +
      static_cast<int64_t>(sizeof(int32_t));
  return cost;
}

Result<int64_t> kv_blocks_for_budget(int64_t budget, const KvBlockCost& cost, int64_t machine_bytes) {
  if (machine_bytes > 0 && budget > machine_bytes)
    return invalid_argument("the KV cache budget of " + mib_text(budget) + " is more than this machine's memory of " +
                            mib_text(machine_bytes) + "; lower --kv-cache-memory, or give it as a fraction of the "
                            "memory available (0.25 by default)");
  const int64_t num_blocks = std::min(budget / cost.total(), kMaxKvBlocks);
  if (num_blocks < 1)
    return invalid_argument("the KV cache budget of " + std::to_string(budget) + " bytes holds no block of " +
                            std::to_string(cost.total()) + " bytes (" + std::to_string(cost.kv_bytes) + " of K/V and " +
                            std::to_string(cost.bookkeeping_bytes) + " of bookkeeping); raise --kv-cache-memory (a whole "
                            "number is bytes: give a size such as 2GiB, or a fraction with a decimal point such as 0.3)");
  return num_blocks;
}

int64_t kv_budget_bytes(int64_t kv_cache_bytes, double kv_cache_fraction) {
  if (kv_cache_bytes > 0) return kv_cache_bytes;
  int64_t available = meminfo_bytes("MemAvailable:");
  if (available < 0) available = int64_t{4} << 30;  // no /proc/meminfo: assume a small machine
  return static_cast<int64_t>(static_cast<double>(available) * kv_cache_fraction);
}

int64_t machine_memory_bytes() { return std::max<int64_t>(meminfo_bytes("MemTotal:"), 0); }

}  // namespace kvshare
