#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace kvshare {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

struct Case {
  DType dtype;
  WeightLayout layout;
  bool bias;
};

class LinearTest : public ::testing::TestWithParam<Case> {};

TEST_P(LinearTest, MatchesReference) {
  const Case c = GetParam();
  const int64_t in = 96, out = 72, m = 17;
  std::vector<float> w32 = random_floats(in * out, 1);
  std::vector<uint16_t> w16(w32.size());
  TensorView w;
  w.dtype = c.dtype;
  w.shape = c.layout == WeightLayout::kOutIn ? std::vector<int64_t>{out, in} : std::vector<int64_t>{in, out};
  if (c.dtype == DType::kBF16) {
    from_f32(DType::kBF16, w32.data(), w16.data(), w16.size());
    w.data = w16.data();
  } else {
    w.data = w32.data();
  }
  std::vector<float> bias = random_floats(out, 2);
  auto lin = Linear::create(w, c.layout, c.bias ? bias.data() : nullptr);
  ASSERT_TRUE(lin.ok()) << lin.status().to_string();
  EXPECT_EQ(lin->in_features(), in);
  EXPECT_EQ(lin->out_features(), out);
  std::vector<float> x = random_floats(m * in, 3);
  std::vector<float> y(m * out), ref(m * out);
  lin->forward(x.data(), m, y.data());
  linear_reference(w, c.layout, c.bias ? bias.data() : nullptr, x.data(), m, ref.data());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << i;
  // In place, without repacking: the stored bytes are what the multiply reads.
  if (c.dtype == DType::kF32) {
    auto in_place = Linear::create(w, c.layout, c.bias ? bias.data() : nullptr, /*repack=*/false);
    ASSERT_TRUE(in_place.ok());
    EXPECT_FALSE(in_place->packed());
    in_place->forward(x.data(), m, y.data());
    for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(All, LinearTest,
                         ::testing::Values(Case{DType::kF32, WeightLayout::kOutIn, false},
                                           Case{DType::kF32, WeightLayout::kInOut, true},
                                           Case{DType::kBF16, WeightLayout::kOutIn, true},
                                           Case{DType::kBF16, WeightLayout::kInOut, false}));

// A row's result must not depend on how many rows are multiplied with it. Checked for F32, the dtype the
// models compute in; oneDNN's bf16 matmul is invariant only where it runs its brgemm kernels (CPUs with
// AVX512-BF16 or AMX), not with the gemm fallback it takes elsewhere.
TEST(Linear, RowsAreBitwiseIndependentOfBatchSize) {
  for (DType dtype : {DType::kF32}) {
    const int64_t in = 256, out = 384;
    std::vector<float> w32 = random_floats(in * out, 4, 0.1f);
    std::vector<uint16_t> w16(w32.size());
    from_f32(DType::kBF16, w32.data(), w16.data(), w16.size());
    TensorView w{dtype, {out, in}, dtype == DType::kBF16 ? static_cast<const void*>(w16.data()) : w32.data()};
    auto lin = Linear::create(w, WeightLayout::kOutIn, nullptr);
    ASSERT_TRUE(lin.ok());
    const int64_t max_m = 700;
    std::vector<float> x = random_floats(max_m * in, 5);
    std::vector<float> single(out);
    lin->forward(x.data() + in, 1, single.data());  // row 1 alone
    for (int64_t m : {2, 3, 8, 9, 16, 31, 64, 100, 255, 300, 512, 700}) {
      std::vector<float> y(m * out);
      lin->forward(x.data(), m, y.data());
      EXPECT_EQ(std::memcmp(y.data() + out, single.data(), out * sizeof(float)), 0)
          << dtype_name(dtype) << " m=" << m;
    }
  }
}

TEST(Linear, RejectsBadWeights) {
  std::vector<float> w(8);
  EXPECT_FALSE(Linear::create(TensorView{DType::kF32, {8}, w.data()}, WeightLayout::kOutIn, nullptr).ok());
  EXPECT_FALSE(Linear::create(TensorView{DType::kQ8_0, {1, 32}, w.data()}, WeightLayout::kOutIn, nullptr).ok());
}

}  // namespace
}  // namespace kvshare
