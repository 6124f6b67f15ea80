// The kernels of kernels_impl.inc compiled for the scalar path: plain C++ (std::fma for fused multiply-adds): runs on every x86-64 CPU.
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

#pragma GCC push_options

namespace kvshare::isa_scalar {
namespace {
#include "kernels/simd_scalar.inc"
#include "kernels/kernels_impl.inc"
}  // namespace
}  // namespace kvshare::isa_scalar
#pragma GCC pop_options

namespace kvshare {

const KernelTable& scalar_kernels() {
  static const KernelTable table = isa_scalar::make_table(Isa::kScalar);
  return table;
}

}  // namespace kvshare
