#include "sampling/json_number.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace kvshare {
namespace {

bool complete(const std::string& t) { return !t.empty() && t.back() != '-' && t.back() != '.'; }

// The exact value of a complete text times 10^7 (its fraction has at most 7 digits here).
int64_t scaled(const std::string& t) {
  const bool negative = t[0] == '-';
  const std::string body = negative ? t.substr(1) : t;
  const size_t dot = body.find('.');
  std::string fraction = dot == std::string::npos ? "" : body.substr(dot + 1);
  fraction.resize(7, '0');
  const int64_t v = std::stoll(body.substr(0, dot) + fraction);
  return negative ? -v : v;
}

// reachable, holds and covers agree with an independent reading of every number text (no exponent) of up to five
// characters: each text's exact value against bounds that are exact doubles. Texts of up to three characters are
// asked about, so that a number within reach of one is among the five-character ones.
class Check {
 public:
  Check(std::optional<double> lo, std::optional<double> hi, bool integer) : lo_(lo), hi_(hi), integer_(integer) {
    bounds_ = "[" + (lo ? std::to_string(*lo) : "-") + ", " + (hi ? std::to_string(*hi) : "-") + "]";
    auto r = NumberRange::make(lo, hi, integer);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return;
    range_ = *r;
    visit("-");
    for (char c = '0'; c <= '9'; ++c) visit(std::string(1, c));
  }

 private:
  static constexpr size_t kLength = 5, kAsked = 3;
  struct Seen {
    bool some = false, every = true;  // some / every complete text beginning with it lies within
  };
  bool within(const std::string& t) const {
    const int64_t v = scaled(t);
    if (t[0] == '-' && v == 0) return false;  // -0 is not written
    return (!lo_ || v >= std::llround(*lo_ * 1e7)) && (!hi_ || v <= std::llround(*hi_ * 1e7));
  }
  Seen visit(const std::string& t) {
    Seen seen;
    if (complete(t)) {
      seen.some = seen.every = within(t);
      EXPECT_EQ(range_.holds(t), seen.some) << t << " in " << bounds_;
    }
    const bool point = t.find('.') != std::string::npos;
    const bool digit = t.find_first_of("0123456789") != std::string::npos;
    std::string next;
    if (!(t == "0" || t == "-0") || point) next += "0123456789";  // no leading zeros
    if (!integer_ && digit && !point) next += ".";
    if (t.size() < kLength) {
      for (char c : next) {
        const Seen s = visit(t + c);
        seen.some = seen.some || s.some;
        seen.every = seen.every && s.every;
      }
    }
    if (t.size() <= kAsked) {
      EXPECT_EQ(range_.reachable(t), seen.some) << t << " in " << bounds_;
      if (range_.covers(t)) EXPECT_TRUE(seen.every) << t << " in " << bounds_;
    }
    return seen;
  }

  std::optional<double> lo_, hi_;
  bool integer_;
  std::string bounds_;
  NumberRange range_ = *NumberRange::make(std::nullopt, std::nullopt, false);
};

TEST(NumberRange, IntegersAgreeWithTheirValues) {
  const std::vector<std::optional<double>> bounds = {std::nullopt, -130, -5, 0, 7, 12, 99, 100, 1000};
  for (auto lo : bounds)
    for (auto hi : bounds)
      if (!lo || !hi || *lo <= *hi) Check(lo, hi, true);
}

TEST(NumberRange, NumbersWithFractionsAgreeWithTheirValues) {
  const std::vector<std::optional<double>> bounds = {std::nullopt, -12.5, -0.25, 0, 0.5, 1, 9.75, 100};
  for (auto lo : bounds)
    for (auto hi : bounds)
      if (!lo || !hi || *lo <= *hi) Check(lo, hi, false);
}

// A bound is the double a reader compares with: 0.1 is 0.1000000000000000055..., so "0.1" is under minimum 0.1 and
// within maximum 0.1; an exclusive bound is the next double, so a text that rounds to the bound is refused.
TEST(NumberRange, BoundsAreTheirDoubles) {
  auto at_least = NumberRange::make(0.1, std::nullopt, false);
  ASSERT_TRUE(at_least.ok());
  EXPECT_FALSE(at_least->holds("0.1"));
  EXPECT_TRUE(at_least->holds("0.1000000000000001"));
  EXPECT_TRUE(at_least->reachable("0.1"));
  EXPECT_FALSE(at_least->reachable("0.0999"));
  auto at_most = NumberRange::make(std::nullopt, 0.1, false);
  ASSERT_TRUE(at_most.ok());
  EXPECT_TRUE(at_most->holds("0.1"));
  EXPECT_FALSE(at_most->holds("0.1000000000000001"));
  auto below = NumberRange::make(std::nullopt, std::nextafter(1.0, 0.0), false);  // exclusiveMaximum 1
  ASSERT_TRUE(below.ok());
  EXPECT_FALSE(below->holds("1"));
  EXPECT_TRUE(below->holds("0.9999999999999998"));
  EXPECT_FALSE(below->holds("0.99999999999999999"));  // 17 digits after the point: more than are written
  EXPECT_FALSE(below->reachable("0.9999999999999999"));  // 1 - 1e-16 is past the double below 1 (1 - 1.1e-16)
  // At most kMaxFractionDigits after the point: a range that holds no such number is refused.
  EXPECT_FALSE(NumberRange::make(1e-20, 2e-20, false).ok());
  EXPECT_FALSE(NumberRange::make(0.5, 0.75, true).ok());
  EXPECT_TRUE(NumberRange::make(0.5, 1.5, true).ok());
  // Large bounds, of many digits.
  auto big = NumberRange::make(-1e300, 1e300, true);
  ASSERT_TRUE(big.ok());
  EXPECT_TRUE(big->reachable(std::string(300, '9')));
  EXPECT_FALSE(big->reachable(std::string(302, '1')));
  EXPECT_TRUE(big->holds("-" + std::string(300, '9')));
}

}  // namespace
}  // namespace kvshare
