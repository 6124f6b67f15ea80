#include "kv/kv_storage.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace kvshare {
namespace {

// How many of the pages of [p, p + bytes) are resident (mincore).
int64_t resident_pages(const float* p, size_t bytes, int64_t* total) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  const size_t len = reinterpret_cast<uintptr_t>(p) + bytes - begin;
  std::vector<unsigned char> vec((len + page - 1) / page);
  if (mincore(reinterpret_cast<void*>(begin), len, vec.data()) != 0) return -1;
  *total = static_cast<int64_t>(vec.size());
  int64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

KvShape shape_of_mib(int64_t mib) {
  KvShape s{.num_layers = 2, .num_kv_heads = 2, .head_dim = 64, .block_size = 16, .num_blocks = 0};
  s.num_blocks = (mib << 20) / s.bytes_per_block();
  return s;
}

TEST(KvStorage, PagesBecomeResidentWhenWrittenOrWhenPrefaulted) {
  const KvShape shape = shape_of_mib(8);
  const size_t layer_bytes =
      static_cast<size_t>(shape.num_blocks * shape.num_kv_heads * shape.block_size * shape.head_dim) * sizeof(float);
  auto lazy = KvStorage::create(shape);
  ASSERT_TRUE(lazy.ok()) << lazy.status().to_string();
  int64_t total = 0;
  const PagedKvLayer l0 = lazy->layer(0);
  EXPECT_LE(resident_pages(l0.k, layer_bytes, &total), 1);  // nothing written yet
  EXPECT_GT(total, 100);

  auto eager = KvStorage::create(shape, /*prefault=*/true);
  ASSERT_TRUE(eager.ok()) << eager.status().to_string();
  EXPECT_EQ(eager->total_bytes(), lazy->total_bytes());
  for (int64_t i = 0; i < shape.num_layers; ++i) {
    const PagedKvLayer l = eager->layer(i);
    for (const float* p : {l.k, l.v}) {
      EXPECT_EQ(resident_pages(p, layer_bytes, &total), total) << "layer " << i;
      EXPECT_EQ(p[0], 0.0f);  // prefaulted pages still read as zeros
      EXPECT_EQ(p[layer_bytes / 4 - 1], 0.0f);
    }
  }
}

}  // namespace
}  // namespace kvshare
