// The kernels of kernels_impl.inc compiled for the avx2 path: AVX2 + FMA + F16C.
// Standard headers come before the target pragma so that only this file's own functions get the wider
// instructions (inline library functions instantiated here stay baseline x86-64 code).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/kernel_table.h"

// GCC takes the target from a pragma; clang ignores that pragma and takes an attribute on every function instead
// (the sanitizer build, scripts/build_asan.sh, uses clang).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace kvshare::isa_avx2 {
namespace {
#include "kernels/simd_avx2.inc"
#include "kernels/kernels_impl.inc"
}  // namespace
}  // namespace kvshare::isa_avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace kvshare {

const KernelTable& avx2_kernels() {
  static const KernelTable table = isa_avx2::make_table(Isa::kAvx2);
  return table;
}

}  // namespace kvshare
