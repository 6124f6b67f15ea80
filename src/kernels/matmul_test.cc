#include "kernels/matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "isa_paths.h"

namespace kvshare {
namespace {

using testing::IsaScope;
using testing::supported_isas;

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// A weight of `dtype` with random values, owning its bytes.
struct Weight {
  std::vector<float> f32;
  std::vector<uint16_t> half;
  TensorView view;
  Weight(DType dtype, WeightLayout layout, int64_t in, int64_t out, uint32_t seed) : f32(random_floats(in * out, seed)) {
    view.dtype = dtype;
    view.shape = layout == WeightLayout::kOutIn ? std::vector<int64_t>{out, in} : std::vector<int64_t>{in, out};
    if (dtype == DType::kF32) {
      view.data = f32.data();
    } else {
      half.resize(f32.size());
      from_f32(dtype, f32.data(), half.data(), half.size());
      view.data = half.data();
    }
  }
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  DType dtype;
  WeightLayout layout;
  bool bias;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dtype_name(c.dtype) << (c.layout == WeightLayout::kOutIn ? " [out,in]" : " [in,out]")
      << (c.bias ? " +bias" : "");
}

class LinearTest : public ::testing::TestWithParam<Case> {};

// Every path gives exactly the definition's bits (linear_reference: one fma chain per element), for row
// counts below, at and above the microkernel's, widths that leave partial panels, and K blocked or not.
TEST_P(LinearTest, EveryPathEqualsTheDefinitionBitwise) {
  const Case c = GetParam();
  for (const auto& [in, out] : std::vector<std::pair<int64_t, int64_t>>{{96, 72}, {100, 5}, {kGemmKSlice + 76, 33}}) {
    Weight w(c.dtype, c.layout, in, out, 1);
    std::vector<float> bias = random_floats(out, 2);
    auto lin = Linear::create(w.view, c.layout, c.bias ? bias.data() : nullptr);
    ASSERT_TRUE(lin.ok()) << lin.status().to_string();
    EXPECT_EQ(lin->in_features(), in);
    EXPECT_EQ(lin->out_features(), out);
    EXPECT_EQ(lin->weight_dtype(), c.dtype);
    for (int64_t m : {1, 2, 3, 5, 6, 7, 8, 9, 13, 17, 100}) {
      std::vector<float> x = random_floats(m * in, 3);
      std::vector<float> ref(m * out);
      linear_reference(w.view, c.layout, c.bias ? bias.data() : nullptr, x.data(), m, ref.data());
      for (Isa isa : supported_isas()) {
        IsaScope scope(isa);
        std::vector<float> y(m * out, NAN);
        lin->forward(x.data(), m, y.data());
        EXPECT_TRUE(bitwise_equal(y, ref)) << isa_name(isa) << " in=" << in << " out=" << out << " m=" << m;
      }
    }
  }
}

// The definition is a matrix multiply: within float rounding of a double-precision sum.
TEST_P(LinearTest, DefinitionIsCloseToADoubleSum) {
  const Case c = GetParam();
  const int64_t in = 96, out = 72, m = 5;
  Weight w(c.dtype, c.layout, in, out, 4);
  std::vector<float> bias = random_floats(out, 5);
  std::vector<float> x = random_floats(m * in, 6), y(m * out), wf(in * out);
  to_f32(c.dtype, w.view.data, wf.data(), wf.size());
  linear_reference(w.view, c.layout, c.bias ? bias.data() : nullptr, x.data(), m, y.data());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < out; ++j) {
      double acc = c.bias ? bias[j] : 0.0;
      for (int64_t k = 0; k < in; ++k)
        acc += static_cast<double>(x[i * in + k]) * (c.layout == WeightLayout::kOutIn ? wf[j * in + k] : wf[k * out + j]);
      EXPECT_NEAR(y[i * out + j], acc, 1e-4 * (1 + std::fabs(acc)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, LinearTest,
                         ::testing::Values(Case{DType::kF32, WeightLayout::kOutIn, false},
                                           Case{DType::kF32, WeightLayout::kInOut, true},
                                           Case{DType::kBF16, WeightLayout::kOutIn, true},
                                           Case{DType::kBF16, WeightLayout::kInOut, false},
                                           Case{DType::kF16, WeightLayout::kOutIn, true}));

// A row's result must not depend on how many rows are multiplied with it, nor on the thread count, on any
// path: reuse on = reuse off bitwise rests on this.
TEST(Linear, RowsAreBitwiseIndependentOfBatchSizeAndThreads) {
  const int64_t in = kGemmKSlice + 76, out = 384;  // K is sliced and the panels split unevenly
  Weight w(DType::kF32, WeightLayout::kOutIn, in, out, 7);
  auto lin = Linear::create(w.view, WeightLayout::kOutIn, nullptr);
  ASSERT_TRUE(lin.ok());
  const int64_t max_m = 700;
  std::vector<float> x = random_floats(max_m * in, 8);
  // The reference: all max_m rows in one call, a few of them checked against the row alone; every other
  // call's rows must then equal these.
  std::vector<float> all(max_m * out), single(out);
  lin->forward(x.data(), max_m, all.data());
  for (int64_t i : {0, 1, 97, 350, 699}) {
    lin->forward(x.data() + i * in, 1, single.data());
    ASSERT_EQ(std::memcmp(all.data() + i * out, single.data(), out * sizeof(float)), 0) << "row " << i;
  }
  const int saved_threads = omp_get_max_threads();
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (int64_t m : {2, 3, 7, 8, 9, 16, 18, 19, 25, 31, 64, 97, 100, 255, 300, 512, 700}) {
        std::vector<float> y(m * out);
        lin->forward(x.data(), m, y.data());
        for (int64_t i = 0; i < m; ++i)
          ASSERT_EQ(std::memcmp(y.data() + i * out, all.data() + i * out, out * sizeof(float)), 0)
              << isa_name(isa) << " threads=" << threads << " m=" << m << " row " << i;
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

// 16-bit weights are widened exactly: a BF16 layer computes what an F32 layer over the widened values does.
// Each thread keeps the rows it packed between calls (matmul.cc): a call must never compute with rows packed
// from another call's x, at the same shape and thread count.
TEST(Linear, ACallNeverUsesRowsPackedForAnotherCall) {
  const int64_t in = 200, out = 300;
  Weight w(DType::kF32, WeightLayout::kOutIn, in, out, 11);
  auto lin = Linear::create(w.view, WeightLayout::kOutIn, nullptr);
  ASSERT_TRUE(lin.ok());
  const int64_t max_m = 400;
  const std::vector<float> xa = random_floats(max_m * in, 12), xb = random_floats(max_m * in, 13);
  std::vector<float> ya(max_m * out), yb(max_m * out), y(max_m * out), row(out);
  const int saved_threads = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    for (int64_t m : {9, 100, 400}) {
      lin->forward(xa.data(), m, ya.data());
      lin->forward(xb.data(), m, yb.data());
      lin->forward(xa.data(), m, y.data());
      EXPECT_EQ(std::memcmp(y.data(), ya.data(), m * out * sizeof(float)), 0) << "threads=" << threads << " m=" << m;
      EXPECT_NE(std::memcmp(yb.data(), ya.data(), m * out * sizeof(float)), 0);
      for (int64_t i : {int64_t{0}, m / 2, m - 1}) {
        lin->forward(xb.data() + i * in, 1, row.data());
        EXPECT_EQ(std::memcmp(yb.data() + i * out, row.data(), out * sizeof(float)), 0)
            << "threads=" << threads << " m=" << m << " row " << i;
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST(Linear, SixteenBitWeightsComputeAsTheirF32Values) {
  const int64_t in = 64, out = 48, m = 9;
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    Weight w(dtype, WeightLayout::kOutIn, in, out, 9);
    std::vector<float> widened(in * out);
    to_f32(dtype, w.view.data, widened.data(), widened.size());
    auto half = Linear::create(w.view, WeightLayout::kOutIn, nullptr);
    auto full = Linear::create(TensorView{DType::kF32, w.view.shape, widened.data()}, WeightLayout::kOutIn, nullptr);
    ASSERT_TRUE(half.ok() && full.ok());
    EXPECT_EQ(half->packed_bytes() * 2, full->packed_bytes());
    std::vector<float> x = random_floats(m * in, 10), a(m * out), b(m * out);
    half->forward(x.data(), m, a.data());
    full->forward(x.data(), m, b.data());
    EXPECT_TRUE(bitwise_equal(a, b)) << dtype_name(dtype);
  }
}

// The K slice depth only moves where each chain pauses: any depth, shallow or past K, gives the same bits, on
// every path (kernel_bench --k-slice relies on this to compare depths for speed alone).
TEST(Linear, KSliceDepthDoesNotChangeBits) {
  const int64_t in = 1000, out = 40, m = 64;  // m above the few-row case, which runs K whole
  Weight w(DType::kF32, WeightLayout::kOutIn, in, out, 11);
  std::vector<float> x = random_floats(m * in, 12), expected(m * out);
  linear_reference(w.view, WeightLayout::kOutIn, nullptr, x.data(), m, expected.data());
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    for (int64_t depth : std::vector<int64_t>{1, 7, 64, 256, 999, 1000, kGemmKSlice, int64_t{1} << 40}) {
      auto lin = Linear::create(w.view, WeightLayout::kOutIn, nullptr, depth);
      ASSERT_TRUE(lin.ok());
      std::vector<float> y(m * out);
      lin->forward(x.data(), m, y.data());
      EXPECT_TRUE(bitwise_equal(y, expected)) << isa_name(isa) << " K slices of " << depth;
    }
  }
}

TEST(Linear, RejectsBadWeights) {
  std::vector<float> w(8);
  EXPECT_FALSE(Linear::create(TensorView{DType::kF32, {8}, w.data()}, WeightLayout::kOutIn, nullptr).ok());
  EXPECT_FALSE(Linear::create(TensorView{DType::kQ8_0, {1, 32}, w.data()}, WeightLayout::kOutIn, nullptr).ok());
  EXPECT_FALSE(Linear::create(TensorView{DType::kF32, {0, 8}, w.data()}, WeightLayout::kOutIn, nullptr).ok());
  const auto zero_slices = Linear::create(TensorView{DType::kF32, {2, 4}, w.data()}, WeightLayout::kOutIn, nullptr, 0);
  ASSERT_FALSE(zero_slices.ok());
  EXPECT_NE(zero_slices.status().message().find("K slice depth must be positive"), std::string::npos)
      << zero_slices.status().message();
}

}  // namespace
}  // namespace kvshare
