// main() of every test binary: GoogleTest, plus the kernels' SIMD path named by KVSHARE_ISA. A binary that
// CTest runs once per path (kv_add_test ... ISA_PATHS) gets KVSHARE_ISA=scalar|avx2|avx512. Under a path this
// CPU cannot run, nothing runs: the binary prints "[  SKIPPED ]" with the reason and CTest reports the test
// as skipped, so nothing passes under a path that did not run.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/isa.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* env = std::getenv("KVSHARE_ISA");
  if (env != nullptr && *env != '\0' && !GTEST_FLAG_GET(list_tests)) {
    auto isa = kvshare::isa_from_env();
    if (!isa.ok()) {
      // A path this CPU lacks is skipped; a name that is no path at all is a mistake in the test set-up.
      bool known = false;
      for (auto path : {kvshare::Isa::kScalar, kvshare::Isa::kAvx2, kvshare::Isa::kAvx512})
        known = known || std::string(env) == kvshare::isa_name(path);
      std::printf("%s %s\n", known ? "[  SKIPPED ]" : "error:", isa.status().message().c_str());
      return known ? 0 : 2;
    }
    if (!kvshare::set_isa(*isa).ok()) return 1;
    std::printf("kernels: the %s path (KVSHARE_ISA)\n", kvshare::isa_name(*isa));
  }
  return RUN_ALL_TESTS();
}
