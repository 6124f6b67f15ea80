#include "core/det_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kvshare {
namespace {

TEST(DetMath, ExpAndLogAreAccurate) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(-700, 700);
  for (int i = 0; i < 100000; ++i) {
    const double x = u(rng);
    EXPECT_NEAR(det::exp(x), std::exp(x), 4e-16 * std::exp(x)) << x;
    const double y = std::exp(x);
    EXPECT_NEAR(det::log(y), x, 4e-16 * std::max(1.0, std::fabs(x))) << y;
  }
  EXPECT_EQ(det::exp(0.0), 1.0);
  EXPECT_EQ(det::log(1.0), 0.0);
  EXPECT_EQ(det::exp(-800.0), 0.0);
  EXPECT_TRUE(std::isinf(det::exp(800.0)));
  EXPECT_NEAR(det::log(4.9e-324), std::log(4.9e-324), 1e-12);  // subnormal
}

TEST(DetMath, SinCosAreAccurateOverRopeAngles) {
  std::mt19937_64 rng(2);
  std::uniform_real_distribution<double> u(-200000, 200000);
  for (int i = 0; i < 100000; ++i) {
    const double x = i < 1000 ? i * 0.01 : u(rng);
    double s, c;
    det::sincos(x, &s, &c);
    EXPECT_NEAR(s, std::sin(x), 1e-15) << x;
    EXPECT_NEAR(c, std::cos(x), 1e-15) << x;
  }
}

// Rounded to float, det::powf almost always is the correctly rounded power, and never more than 1 ulp off.
TEST(DetMath, PowfIsCorrectlyRoundedAlmostAlways) {
  int off = 0;
  for (float theta : {10000.0f, 500000.0f, 1000000.0f, 2.5f}) {
    for (int i = 0; i < 4096; ++i) {
      const float y = static_cast<float>(i) / 4096.0f * 3.0f - 1.5f;
      const float want = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(y)));
      const float got = det::powf(theta, y);
      EXPECT_LE(std::fabs(got - want), std::fabs(std::nextafter(want, INFINITY) - want)) << theta << "^" << y;
      off += got != want;
    }
  }
  EXPECT_LE(off, 4);
}

}  // namespace
}  // namespace kvshare
