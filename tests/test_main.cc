// main() of every test binary: GoogleTest, plus the kernels' SIMD path named by KVSHARE_ISA. A binary that
// CTest runs once per path (kv_add_test ... ISA_PATHS) gets KVSHARE_ISA=scalar|avx2|avx512; a path this CPU
// cannot run skips every test with a message, so nothing passes under a path that did not run.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/isa.h"

namespace {

class IsaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* env = std::getenv("KVSHARE_ISA");
    if (env == nullptr || *env == '\0') return;
    auto isa = kvshare::isa_from_env();
    if (!isa.ok()) GTEST_SKIP() << "skipped: " << isa.status().message();
    ASSERT_TRUE(kvshare::set_isa(*isa).ok());
    std::fprintf(stderr, "kernels: the %s path (KVSHARE_ISA)\n", kvshare::isa_name(*isa));
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new IsaEnvironment);
  return RUN_ALL_TESTS();
}
