// FNV-1a, 64-bit: the project's hash of bytes where a stable, well-known function is wanted (a tensor's
// name seeding make-model's generator, checksums of logits in tests). Not for hash tables under attack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvshare {

inline uint64_t fnv1a64(const void* data, size_t size, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

inline uint64_t fnv1a64(std::string_view text) { return fnv1a64(text.data(), text.size()); }

}  // namespace kvshare
