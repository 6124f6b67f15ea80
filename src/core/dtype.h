// Element types of stored tensors, and conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvshare {

enum class DType {
  kF32,
  kF16,
  kBF16,
  kQ8_0,  // GGUF blocks of 32 int8 values with one f16 scale: 34 bytes per 32 elements
};

const char* dtype_name(DType dtype);

// Bytes taken by `num_elements` values. For block types `num_elements` must be a multiple of the block size.
size_t dtype_bytes(DType dtype, size_t num_elements);

constexpr int kQ8_0BlockSize = 32;
constexpr int kQ8_0BlockBytes = 34;

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf

// Converts `n` elements (a whole number of blocks for block types) of `src` to float.
void to_f32(DType dtype, const void* src, float* dst, size_t n);
// Converts `n` floats to `dtype` (F32, F16 or BF16; Q8_0 quantizes per block of 32).
void from_f32(DType dtype, const float* src, void* dst, size_t n);

}  // namespace kvshare
