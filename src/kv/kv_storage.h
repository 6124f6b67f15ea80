// KvStorage: the bytes of the paged KV cache. For every layer, K as [num_blocks, num_kv_heads, head_dim,
// block_size] and V as [num_blocks, num_kv_heads, block_size, head_dim] floats (see kernels/attention.h). It knows nothing of which block holds what:
// the block manager (kv/block_manager.h) and the scheduler decide that.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "kernels/attention.h"

namespace kvshare {

struct KvShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t block_size = 16;
  int64_t num_blocks = 0;

  // K and V of one token over all layers: 2 * layers * kv_heads * head_dim * sizeof(float).
  int64_t bytes_per_token() const { return 2 * num_layers * num_kv_heads * head_dim * 4; }
  int64_t bytes_per_block() const { return bytes_per_token() * block_size; }
};

// Unmaps KvStorage's arrays.
struct KvUnmap {
  size_t bytes = 0;
  void operator()(float* p) const;
};

class KvStorage {
 public:
  // Allocates num_blocks blocks for every layer. Fails (not crashes) when the memory cannot be had. With
  // `prefault`, every page is made resident now (EngineConfig::kv_cache_prefault), and a shortfall is an error
  // here rather than a page the kernel cannot supply later.
  static Result<KvStorage> create(const KvShape& shape, bool prefault = false);
  KvStorage(KvStorage&&) = default;
  KvStorage& operator=(KvStorage&&) = default;

  const KvShape& shape() const { return shape_; }
  PagedKvLayer layer(int64_t i);
  int64_t total_bytes() const { return shape_.bytes_per_block() * shape_.num_blocks; }

 private:
  KvStorage() = default;
  KvShape shape_;
  // Anonymous mappings: pages become resident only as blocks are first written (unless prefaulted), so a
  // generous budget costs nothing until it is used, and a page never written reads as zeros (attention scores whole 16-key groups;
  // positions past a sequence's end are computed and dropped, never from undefined memory). Not marked for
  // transparent huge pages (kv_storage.cc says why: on these machines a fresh 2 MiB page faults slowly, and
  // served gsp at 8 clients ran 12.4-13.2 s without them against 12.7-14.7 s with them).
  std::unique_ptr<float[], KvUnmap> k_;  // [layers, num_blocks, kv_heads, head_dim, block_size]
  std::unique_ptr<float[], KvUnmap> v_;  // [layers, num_blocks, kv_heads, block_size, head_dim]
};

}  // namespace kvshare
