#include "core/det_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace kvshare::det {
namespace {

constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2, first 32 bits (k · kLn2Hi is exact for |k| < 2^20)
constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi
constexpr double kRound = 6755399441055744.0;          // 1.5 · 2^52: adding and subtracting it rounds to an integer

// x · 2^k for the k that exp and log produce, exactly (two steps keep every intermediate normal).
double scale2(double x, int k) {
  auto pow2 = [](int e) {
    const uint64_t bits = static_cast<uint64_t>(e + 1023) << 52;
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  };
  if (k > 1000) return x * pow2(1000) * pow2(k - 1000);
  if (k < -1000) return x * pow2(-1000) * pow2(k + 1000);
  return x * pow2(k);
}

}  // namespace

// 1/n! for n = 0 … 24, by repeated IEEE division: the same table on every machine.
const double* inverse_factorials() {
  static const auto table = [] {
    struct T {
      double v[25];
    } t{};
    t.v[0] = 1.0;
    for (int n = 1; n < 25; ++n) t.v[n] = t.v[n - 1] / n;
    return t;
  }();
  return table.v;
}

double exp(double x) {
  if (x > 709.8) return INFINITY;
  if (x < -745.2) return 0.0;
  const double k = (x * 1.44269504088896338700e+00 + kRound) - kRound;  // round(x / ln 2)
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;                      // |r| <= 0.35
  // e^r by its Taylor series to r^14 (the next term is below 1e-17 relative), Horner's rule.
  const double* f = inverse_factorials();
  double t = f[14];
  for (int n = 13; n >= 0; --n) t = t * r + f[n];
  return scale2(t, static_cast<int>(k));
}

double log(double x) {
  // x = m · 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172.
  int e = 0;
  double m = std::frexp(x, &e);  // exact: m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    --e;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double sum = 1.0 / 25.0;  // 2 atanh(s) = 2 (s + s^3/3 + … + s^25/25): the next term is below 1e-20
  for (int n = 23; n >= 1; n -= 2) sum = sum * s2 + 1.0 / n;
  return static_cast<double>(e) * kLn2Hi + (2.0 * s * sum + static_cast<double>(e) * kLn2Lo);
}

float powf(float x, float y) { return static_cast<float>(exp(static_cast<double>(y) * log(static_cast<double>(x)))); }

void sincos(double x, double* s, double* c) {
  // x = k · pi/2 + r with pi/2 in three parts (Cody and Waite), |r| <= pi/4.
  constexpr double kPio2_1 = 1.57079632673412561417e+00, kPio2_2 = 6.07710050630396597660e-11,
                   kPio2_3 = 2.02226624871116645580e-21;
  const double k = (x * 6.36619772367581382433e-01 + kRound) - kRound;
  const double r = ((x - k * kPio2_1) - k * kPio2_2) - k * kPio2_3;
  const double z = r * r;
  // sin r = r · sum_j (-1)^j z^j / (2j+1)!  and  cos r = sum_j (-1)^j z^j / (2j)!, j <= 11 (next terms < 1e-19).
  const double* f = inverse_factorials();
  double sn = -f[23], cs = -f[22];
  for (int j = 10; j >= 0; --j) {
    const double sign = j % 2 == 0 ? 1.0 : -1.0;
    sn = sn * z + sign * f[2 * j + 1];
    cs = cs * z + sign * f[2 * j];
  }
  const double sin_r = r * sn, cos_r = cs;
  switch (static_cast<int64_t>(k) & 3) {
    case 0: *s = sin_r, *c = cos_r; break;
    case 1: *s = cos_r, *c = -sin_r; break;
    case 2: *s = -sin_r, *c = -cos_r; break;
    default: *s = -cos_r, *c = sin_r; break;
  }
}

}  // namespace kvshare::det
