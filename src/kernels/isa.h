// Which SIMD path the kernels run: scalar, AVX2 + FMA, or AVX-512. Every path computes every value with the
// same operations in the same order (see simd_*.inc), so they give the same bits; the choice changes speed only.
//
// The active path is the best the CPU has, unless KVSHARE_ISA (scalar | avx2 | avx512) names another, read once
// when the kernels are first used. Tests switch paths with set_isa() to check that they agree.
#pragma once

#include <string>

#include "core/status.h"

namespace kvshare {

enum class Isa { kScalar, kAvx2, kAvx512 };

const char* isa_name(Isa isa);  // "scalar", "avx2", "avx512"
// Whether this CPU (and the OS, which must save the wider registers) can run `isa`.
bool isa_supported(Isa isa);
Isa best_isa();

// The path named by KVSHARE_ISA, or best_isa() when it is unset or empty. An unknown name, or a path this CPU
// lacks, is an error that says which paths it has.
Result<Isa> isa_from_env();

// The path the kernels run now. The first call settles it from KVSHARE_ISA; a bad value there is reported by
// check_isa_env() (called by Engine::create and the CLI), and until then the best path runs.
Isa active_isa();
// Runs the kernels on `isa` from now on (for tests and benchmarks). Fails if the CPU lacks it.
Status set_isa(Isa isa);
// isa_from_env(), applied: the error to report at start-up when KVSHARE_ISA is bad.
Status check_isa_env();

}  // namespace kvshare
