// Test helpers for the kernels' SIMD paths (src/kernels/isa.h): run a check under every path this CPU has.
// A path the CPU lacks cannot be tested here; supported_isas() says so once on stderr, so a run on an
// AVX2-only machine shows that the AVX-512 path went unchecked rather than passing silently.
#pragma once

#include <cstdio>
#include <vector>

#include "kernels/isa.h"

namespace kvshare::testing {

inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  static bool told = false;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_supported(isa)) {
      out.push_back(isa);
    } else if (!told) {
      std::fprintf(stderr, "note: this CPU cannot run the %s kernels; they are not tested here\n", isa_name(isa));
    }
  }
  told = true;
  return out;
}

// Sets the kernels' path for the scope, then restores the one before.
class IsaScope {
 public:
  explicit IsaScope(Isa isa) : saved_(active_isa()) { ok_ = set_isa(isa).ok(); }
  ~IsaScope() { (void)set_isa(saved_); }
  bool ok() const { return ok_; }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;

 private:
  Isa saved_;
  bool ok_ = false;
};

}  // namespace kvshare::testing
