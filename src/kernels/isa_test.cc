#include "kernels/isa.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "isa_paths.h"

namespace kvshare {
namespace {

// Sets KVSHARE_ISA for the scope.
class EnvScope {
 public:
  explicit EnvScope(const char* value) {
    if (const char* old = std::getenv("KVSHARE_ISA")) saved_ = old, had_ = true;
    setenv("KVSHARE_ISA", value, 1);
  }
  ~EnvScope() { had_ ? setenv("KVSHARE_ISA", saved_.c_str(), 1) : unsetenv("KVSHARE_ISA"); }

 private:
  std::string saved_;
  bool had_ = false;
};

TEST(Isa, ScalarRunsEverywhereAndTheBestIsSupported) {
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(best_isa()));
  if (isa_supported(Isa::kAvx512)) {
    EXPECT_TRUE(isa_supported(Isa::kAvx2));
  }
}

TEST(Isa, EnvironmentNamesThePath) {
  for (Isa isa : testing::supported_isas()) {
    EnvScope env(isa_name(isa));
    auto got = isa_from_env();
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_EQ(*got, isa);
  }
  {
    EnvScope env("");
    EXPECT_EQ(isa_from_env().value(), best_isa());
  }
}

TEST(Isa, UnknownOrUnsupportedPathIsAClearError) {
  {
    EnvScope env("sse9");
    auto got = isa_from_env();
    ASSERT_FALSE(got.ok());
    EXPECT_NE(got.status().message().find("KVSHARE_ISA=sse9 is not a kernel path"), std::string::npos)
        << got.status().to_string();
    EXPECT_FALSE(check_isa_env().ok());
  }
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (isa_supported(isa)) continue;
    EnvScope env(isa_name(isa));
    auto got = isa_from_env();
    ASSERT_FALSE(got.ok());
    EXPECT_NE(got.status().message().find("this CPU cannot run"), std::string::npos) << got.status().to_string();
    EXPECT_FALSE(set_isa(isa).ok());
  }
}

TEST(Isa, SetIsaSwitchesThePath) {
  const Isa before = active_isa();
  for (Isa isa : testing::supported_isas()) {
    testing::IsaScope scope(isa);
    EXPECT_TRUE(scope.ok());
    EXPECT_EQ(active_isa(), isa);
  }
  EXPECT_EQ(active_isa(), before);
}

}  // namespace
}  // namespace kvshare
