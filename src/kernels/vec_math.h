// Vectorizable elementary functions for the kernels' hot loops. Written as straight-line float code
// (no table lookups, no branches) so the compiler turns loops over them into SIMD; the results are the
// same for an element whatever its neighbours, so kernels that use them stay batch invariant.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvshare::vec {

// e^x, relative error below 2e-7 over the float range (a Cephes-style polynomial after reducing
// x = n ln2 + r). Inputs below -87 give ~1e-38 rather than denormals; above 88 saturate near FLT_MAX.
[[gnu::always_inline]] inline float exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer without a floor call.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;  // ln2 split in two for an exact product with n
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(x) = 1 - 2 / (e^{2x} + 1), saturating to +-1 beyond |x| = 9 (where tanh rounds to 1 in float).
[[gnu::always_inline]] inline float tanh(float x) {
  x = x < -9.0f ? -9.0f : x;
  x = x > 9.0f ? 9.0f : x;
  return 1.0f - 2.0f / (vec::exp(2.0f * x) + 1.0f);
}

// x * sigmoid(x)
[[gnu::always_inline]] inline float silu(float x) { return x / (1.0f + vec::exp(-x)); }

}  // namespace kvshare::vec
