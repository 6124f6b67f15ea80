#include "core/dtype.h"

#include <cmath>

#include "core/status.h"

namespace kvshare {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kQ8_0: return "Q8_0";
  }
  return "?";
}

size_t dtype_bytes(DType dtype, size_t n) {
  switch (dtype) {
    case DType::kF32: return n * 4;
    case DType::kF16:
    case DType::kBF16: return n * 2;
    case DType::kQ8_0: return n / kQ8_0BlockSize * kQ8_0BlockBytes;
  }
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;        // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;       // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                              // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;                 // < 2^-25 rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    // value / 2^-24 = mant * 2^(exp - 126): drop (126 - exp) low bits, rounding to nearest even.
    const uint32_t dropped = 126 - exp;
    uint32_t value = mant >> dropped;
    const uint32_t rem = mant & ((1u << dropped) - 1);
    const uint32_t half = 1u << (dropped - 1);
    if (rem > half || (rem == half && (value & 1u))) ++value;
    return sign | static_cast<uint16_t>(value);
  }
  uint32_t value = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (value & 1u))) ++value;
  return sign | static_cast<uint16_t>(value);
}

void to_f32(DType dtype, const void* src, float* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kQ8_0: {
      KV_CHECK(n % kQ8_0BlockSize == 0);
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t b = 0; b < n / kQ8_0BlockSize; ++b) {
        const uint8_t* block = s + b * kQ8_0BlockBytes;
        uint16_t d16;
        std::memcpy(&d16, block, 2);
        const float d = f16_to_f32(d16);
        const auto* q = reinterpret_cast<const int8_t*>(block + 2);
        for (int i = 0; i < kQ8_0BlockSize; ++i) dst[b * kQ8_0BlockSize + i] = d * static_cast<float>(q[i]);
      }
      return;
    }
  }
}

void from_f32(DType dtype, const float* src, void* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kQ8_0: {
      KV_CHECK(n % kQ8_0BlockSize == 0);
      auto* d = static_cast<uint8_t*>(dst);
      for (size_t b = 0; b < n / kQ8_0BlockSize; ++b) {
        const float* x = src + b * kQ8_0BlockSize;
        float amax = 0.f;
        for (int i = 0; i < kQ8_0BlockSize; ++i) amax = std::fmax(amax, std::fabs(x[i]));
        const float scale = amax / 127.f;
        const float inv = scale != 0.f ? 1.f / scale : 0.f;
        uint8_t* block = d + b * kQ8_0BlockBytes;
        const uint16_t s16 = f32_to_f16(scale);
        std::memcpy(block, &s16, 2);
        auto* q = reinterpret_cast<int8_t*>(block + 2);
        for (int i = 0; i < kQ8_0BlockSize; ++i) q[i] = static_cast<int8_t>(std::lround(x[i] * inv));
      }
      return;
    }
  }
}

}  // namespace kvshare
