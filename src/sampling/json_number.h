// Bounds on a number in a JSON schema (minimum, maximum, exclusiveMinimum, exclusiveMaximum), and which texts of a
// number can still become one within them, decided exactly on the decimal text a byte at a time.
//
// A reader takes the written number as a double (or, for an integer, exactly, as Python's json does), and compares
// it with the bound's double. So the bounds are held as their doubles' exact decimal values, an exclusive one moved
// to the next double inward: a text whose exact value lies within them is taken by either kind of reader, since
// rounding to a double never crosses a double. Numbers are written without an exponent and with at most
// kMaxFractionDigits digits after the point, so that a bounded number always ends, and never as -0 (which
// equals 0: a model that likes '-' would write it where 0 is the least number allowed).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kvshare {

class NumberRange {
 public:
  static constexpr uint32_t kMaxFractionDigits = 16;

  // lo <= x <= hi (either may be absent), x whole where `integer`. An error when no number of at most
  // kMaxFractionDigits fraction digits (none for an integer) lies within them.
  static Result<NumberRange> make(std::optional<double> lo, std::optional<double> hi, bool integer);

  // `text` is the start of a number as JSON writes it, without an exponent: -?(0|[1-9][0-9]*)?(\.[0-9]*)?, with at
  // most fraction_digits() after the point.
  // Whether some number that begins with `text` lies within the bounds.
  bool reachable(std::string_view text) const;
  // Whether `text`, a whole number, lies within them.
  bool holds(std::string_view text) const;
  // Whether every number that begins with `text` does (its further digits need not be read).
  bool covers(std::string_view text) const;
  uint32_t fraction_digits() const { return fraction_digits_; }

  bool operator==(const NumberRange&) const = default;

 private:
  // An exact decimal: `whole` without leading zeros ("" for 0), `fraction` without trailing zeros; -0 is 0.
  struct Decimal {
    bool negative = false;
    std::string whole, fraction;
    bool operator==(const Decimal&) const = default;
  };
  static Decimal exact(double value);
  static Decimal parse(std::string_view text);  // a number's text, its sign, whole digits and fraction
  static int compare(const Decimal& a, const Decimal& b);
  static int compare_magnitudes(const Decimal& a, const Decimal& b);
  static Decimal negated(Decimal d);
  static bool is_zero(const Decimal& d) { return d.whole.empty() && d.fraction.empty(); }
  // `d` rounded towards +inf (up) or -inf to `digits` fraction digits.
  static Decimal rounded(const Decimal& d, uint32_t digits, bool up);
  // Whether a magnitude in [lo, hi] (nullopt: no bound; each >= 0) begins with `whole` (no leading zeros, "" for
  // none yet) and, after a point, `fraction`.
  bool magnitude_reachable(const std::optional<Decimal>& lo, const std::optional<Decimal>& hi, std::string_view whole,
                           bool point, std::string_view fraction) const;
  // The bounds on the magnitude of a number of this sign; false when no number of it lies within.
  bool magnitude_bounds(bool negative, std::optional<Decimal>& lo, std::optional<Decimal>& hi) const;

  std::optional<Decimal> lo_, hi_;  // rounded inwards to fraction_digits_
  uint32_t fraction_digits_ = kMaxFractionDigits;
};

}  // namespace kvshare
