// The kernels of kernels_impl.inc compiled for the avx512 path: AVX-512 (F, BW, VL, DQ).
// Standard headers come before the target pragma so that only this file's own functions get the wider
// instructions (inline library functions instantiated here stay baseline x86-64 code).
// GCC 12's avx512fintrin.h reads deliberately undefined registers (_mm512_undefined_*) and warns about it.
// KVSHARE_NO_AVX512_PATH (the sanitizer build, src/kernels/CMakeLists.txt): the path is left out and
// isa_supported(Isa::kAvx512) is false, so this table is never asked for.
#if defined(KVSHARE_NO_AVX512_PATH)
#include "kernels/kernel_table.h"
namespace kvshare {
const KernelTable& avx512_kernels() { return scalar_kernels(); }
}  // namespace kvshare
#else
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif
namespace kvshare::isa_avx512 {
namespace {
#include "kernels/simd_avx512.inc"
#include "kernels/kernels_impl.inc"
}  // namespace
}  // namespace kvshare::isa_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace kvshare {

const KernelTable& avx512_kernels() {
  static const KernelTable table = isa_avx512::make_table(Isa::kAvx512);
  return table;
}

}  // namespace kvshare
#endif  // KVSHARE_NO_AVX512_PATH
