#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "isa_paths.h"
#include "kernels/kernel_table.h"

namespace kvshare {
namespace {

using testing::IsaScope;
using testing::supported_isas;

float vec_exp_for_test(float x) {
  float y;
  kernels().exp_row(&x, 1, &y);
  return y;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol * (1 + std::fabs(b[i]))) << i;
}

TEST(Ops, RmsNormMatchesReference) {
  const int64_t rows = 5, dim = 100;
  auto x = random_floats(rows * dim, 1), w = random_floats(dim, 2);
  std::vector<float> y(x.size()), r(x.size());
  rms_norm(x.data(), w.data(), 1e-6f, rows, dim, y.data());
  reference::rms_norm(x.data(), w.data(), 1e-6f, rows, dim, r.data());
  expect_close(y, r, 1e-5f);
}

TEST(Ops, LayerNormMatchesReference) {
  const int64_t rows = 5, dim = 100;
  auto x = random_floats(rows * dim, 1), w = random_floats(dim, 2), b = random_floats(dim, 3);
  for (auto& v : x) v += 3.0f;  // a mean far from zero
  std::vector<float> y(x.size()), r(x.size());
  layer_norm(x.data(), w.data(), b.data(), 1e-5f, rows, dim, y.data());
  reference::layer_norm(x.data(), w.data(), b.data(), 1e-5f, rows, dim, r.data());
  expect_close(y, r, 1e-5f);
}

TEST(Ops, GeluMatchesReference) {
  auto x = random_floats(1000, 4);
  for (auto& v : x) v *= 4;
  auto y = x, r = x;
  gelu_tanh(y.data(), 10, 100);
  reference::gelu_tanh(r.data(), r.size());
  expect_close(y, r, 2e-6f);
  float zero = 0.f;
  gelu_tanh(&zero, 1, 1);
  EXPECT_EQ(zero, 0.f);
}

TEST(Ops, VectorExpIsAccurate) {
  for (float x = -80.f; x < 80.f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    EXPECT_NEAR(vec_exp_for_test(x), want, want * 3e-7) << x;
  }
  EXPECT_LT(vec_exp_for_test(-1000.f), 1e-37f);
}

TEST(Ops, SiluMul) {
  std::vector<float> gate = {1.0f, -2.0f}, up = {3.0f, 0.5f};
  std::vector<float> out(2);
  silu_mul(gate.data(), up.data(), 1, 2, out.data());
  EXPECT_NEAR(out[0], 1.0 / (1 + std::exp(-1.0)) * 3.0, 1e-6);
  EXPECT_NEAR(out[1], -2.0 / (1 + std::exp(2.0)) * 0.5, 1e-6);
}

TEST(Ops, RopeStylesAgreeUpToPermutation) {
  // Rotating with interleaved pairs equals rotating with half pairs after permuting the head's elements.
  const int64_t hd = 8, half = 4;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(10000.f, -2.f * i / hd);
  std::vector<int32_t> pos = {5};
  std::vector<float> c(half), s(half);
  rope_tables(pos.data(), 1, inv_freq.data(), half, c.data(), s.data());
  auto x = random_floats(hd, 5);
  std::vector<float> inter(hd);
  for (int i = 0; i < half; ++i) {
    inter[2 * i] = x[i];
    inter[2 * i + 1] = x[i + half];
  }
  apply_rope(x.data(), 1, 1, hd, c.data(), s.data(), RopeStyle::kHalf);
  apply_rope(inter.data(), 1, 1, hd, c.data(), s.data(), RopeStyle::kInterleaved);
  for (int i = 0; i < half; ++i) {
    EXPECT_FLOAT_EQ(inter[2 * i], x[i]);
    EXPECT_FLOAT_EQ(inter[2 * i + 1], x[i + half]);
  }
  // Rotation keeps the norm of each pair.
  EXPECT_NEAR(x[0] * x[0] + x[4] * x[4], inter[0] * inter[0] + inter[1] * inter[1], 1e-5);
}

// Every element-wise and row kernel gives the same bits on every path as on the scalar one, for row lengths
// with and without a tail shorter than 16, and for extreme inputs.
TEST(Ops, EveryPathGivesTheScalarBits) {
  // 4 rows: silu_mul reads its gate from rows 0-2 and its up from rows 1-3.
  auto x = random_floats(4 * 200, 11), w = random_floats(200, 12), b = random_floats(200, 13);
  for (size_t i = 0; i < x.size(); i += 37) x[i] *= 40.0f;  // some large values: exp and tanh saturate
  x[5] = 0.0f;
  x[6] = -0.0f;
  x[7] = 1e-30f;
  using Run = std::function<std::vector<float>(int64_t dim)>;
  const std::vector<std::pair<const char*, Run>> kernels_under_test = {
      {"rms_norm", [&](int64_t dim) {
         std::vector<float> y(3 * dim);
         rms_norm(x.data(), w.data(), 1e-6f, 3, dim, y.data());
         return y;
       }},
      {"layer_norm", [&](int64_t dim) {
         std::vector<float> y(3 * dim);
         layer_norm(x.data(), w.data(), b.data(), 1e-5f, 3, dim, y.data());
         return y;
       }},
      {"gelu_tanh", [&](int64_t dim) {
         std::vector<float> y(x.begin(), x.begin() + 3 * dim);
         gelu_tanh(y.data(), 3, dim);
         return y;
       }},
      {"silu_mul", [&](int64_t dim) {
         std::vector<float> y(3 * dim);
         silu_mul(x.data(), x.data() + 200, 3, dim, y.data());
         return y;
       }},
      {"exp", [&](int64_t dim) {
         std::vector<float> y(3 * dim);
         kernels().exp_row(x.data(), 3 * dim, y.data());
         return y;
       }},
  };
  for (const auto& [name, run] : kernels_under_test) {
    for (int64_t dim : {1, 7, 16, 100, 200}) {
      std::vector<float> want;
      {
        IsaScope scope(Isa::kScalar);
        want = run(dim);
      }
      for (Isa isa : supported_isas()) {
        IsaScope scope(isa);
        const std::vector<float> got = run(dim);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
            << name << " dim=" << dim << " on " << isa_name(isa);
      }
    }
  }
}

TEST(Ops, ExpSaturatesWithoutInfinitiesOrDenormals) {
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    EXPECT_GT(vec_exp_for_test(-1000.f), 0.f) << isa_name(isa);
    EXPECT_LT(vec_exp_for_test(-1000.f), 1e-37f) << isa_name(isa);
    EXPECT_TRUE(std::isfinite(vec_exp_for_test(1000.f))) << isa_name(isa);
    EXPECT_EQ(vec_exp_for_test(0.f), 1.f) << isa_name(isa);
  }
}

// NaN became e^-87 in exp (the clamp dropped it), so a model whose activations overflowed gave finite garbage
// and the engine's check of the logits never saw it. Every path now keeps NaN, as PyTorch does.
TEST(Ops, NanPropagatesThroughExpAndActivations) {
  const float nan = std::nanf("");
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    EXPECT_TRUE(std::isnan(vec_exp_for_test(nan))) << isa_name(isa);
    for (int64_t n : {1, 5, 16, 21}) {  // with and without a tail
      std::vector<float> x(static_cast<size_t>(n), 0.5f), y(x.size());
      x[n / 2] = nan;
      kernels().exp_row(x.data(), n, y.data());
      std::vector<float> g = x;
      gelu_tanh(g.data(), 1, n);
      std::vector<float> s(x.size());
      silu_mul(x.data(), x.data(), 1, n, s.data());
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(std::isnan(y[i]), i == n / 2) << "exp " << i << " of " << n << " on " << isa_name(isa);
        EXPECT_EQ(std::isnan(g[i]), i == n / 2) << "gelu " << i << " of " << n << " on " << isa_name(isa);
        EXPECT_EQ(std::isnan(s[i]), i == n / 2) << "silu " << i << " of " << n << " on " << isa_name(isa);
      }
    }
  }
}

}  // namespace
}  // namespace kvshare
