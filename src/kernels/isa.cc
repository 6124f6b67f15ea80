#include "kernels/isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>

namespace kvshare {
namespace {

std::atomic<int> g_active{-1};  // an Isa, or -1 before the first use

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

namespace {
// F16C from CPUID leaf 1 (clang's __builtin_cpu_supports does not know "f16c"); its registers are AVX's, whose
// OS support __builtin_cpu_supports("avx2") checks.
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
}  // namespace

bool isa_supported(Isa isa) {
  // __builtin_cpu_supports reads CPUID and, for AVX and AVX-512, whether the OS enabled their registers (XCR0).
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case Isa::kAvx512:
#if defined(KVSHARE_NO_AVX512_PATH)
      return false;  // left out of this build (src/kernels/CMakeLists.txt)
#endif
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

Result<Isa> isa_from_env() {
  const char* env = std::getenv("KVSHARE_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  const std::string name = env;
  std::string have;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (isa_supported(isa)) have += std::string(have.empty() ? "" : ", ") + isa_name(isa);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (name != isa_name(isa)) continue;
    if (!isa_supported(isa))
      return invalid_argument("KVSHARE_ISA=" + name + " but this CPU cannot run " + name + "; it can run: " + have);
    return isa;
  }
  return invalid_argument("KVSHARE_ISA=" + name + " is not a kernel path; use scalar, avx2 or avx512 (this CPU can run: " +
                          have + "), or leave it unset for the best one");
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    auto env = isa_from_env();
    const int chosen = static_cast<int>(env.ok() ? *env : best_isa());
    g_active.compare_exchange_strong(v, chosen, std::memory_order_acq_rel);
    v = g_active.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(v);
}

Status set_isa(Isa isa) {
  if (!isa_supported(isa)) return invalid_argument(std::string("this CPU cannot run the ") + isa_name(isa) + " kernels");
  g_active.store(static_cast<int>(isa), std::memory_order_release);
  return {};
}

Status check_isa_env() {
  KV_ASSIGN_OR_RETURN(Isa isa, isa_from_env());
  return set_isa(isa);
}

}  // namespace kvshare
