#include "kernels/kernel_table.h"

namespace kvshare {

const KernelTable& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return avx512_kernels();
    case Isa::kAvx2: return avx2_kernels();
    case Isa::kScalar: break;
  }
  return scalar_kernels();
}

const KernelTable& kernels() { return kernels_for(active_isa()); }

}  // namespace kvshare
