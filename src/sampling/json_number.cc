#include "sampling/json_number.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace kvshare {

namespace {

// The parts of a number's text as written: its sign, its whole digits ("" before the first), whether a point
// follows, and the digits after it.
struct Written {
  bool negative = false;
  std::string_view whole, fraction;
  bool point = false;
};

Written split(std::string_view text) {
  Written w;
  if (!text.empty() && text[0] == '-') {
    w.negative = true;
    text.remove_prefix(1);
  }
  const size_t dot = text.find('.');
  w.point = dot != std::string_view::npos;
  w.whole = text.substr(0, dot);
  if (w.point) w.fraction = text.substr(dot + 1);
  return w;
}

// `digits` (a decimal integer's digits) plus one.
std::string plus_one(std::string digits) {
  for (size_t i = digits.size(); i > 0; --i) {
    if (digits[i - 1] != '9') {
      ++digits[i - 1];
      return digits;
    }
    digits[i - 1] = '0';
  }
  return "1" + digits;
}

}  // namespace

Result<NumberRange> NumberRange::make(std::optional<double> lo, std::optional<double> hi, bool integer) {
  NumberRange r;
  r.fraction_digits_ = integer ? 0 : kMaxFractionDigits;
  if (lo.has_value()) r.lo_ = rounded(exact(*lo), r.fraction_digits_, /*up=*/true);
  if (hi.has_value()) r.hi_ = rounded(exact(*hi), r.fraction_digits_, /*up=*/false);
  if (r.lo_.has_value() && r.hi_.has_value() && compare(*r.lo_, *r.hi_) > 0)
    return invalid_argument(integer ? std::string("no integer lies within the bounds")
                                    : "no number of at most " + std::to_string(kMaxFractionDigits) +
                                          " digits after the point lies within the bounds");
  return r;
}

NumberRange::Decimal NumberRange::exact(double value) {
  // A double's exact value has at most 1074 digits after the point, and at most 309 before it.
  std::vector<char> text(1500);
  std::snprintf(text.data(), text.size(), "%.1100f", value);
  return parse(text.data());
}

NumberRange::Decimal NumberRange::parse(std::string_view text) {
  const Written w = split(text);
  Decimal d;
  d.whole = std::string(w.whole.substr(std::min(w.whole.find_first_not_of('0'), w.whole.size())));
  const size_t last = w.fraction.find_last_not_of('0');
  d.fraction = last == std::string_view::npos ? "" : std::string(w.fraction.substr(0, last + 1));
  d.negative = w.negative && !is_zero(d);
  return d;
}

int NumberRange::compare_magnitudes(const Decimal& a, const Decimal& b) {
  if (a.whole.size() != b.whole.size()) return a.whole.size() < b.whole.size() ? -1 : 1;
  if (const int c = a.whole.compare(b.whole); c != 0) return c < 0 ? -1 : 1;
  const int c = a.fraction.compare(b.fraction);  // (no trailing zeros: text order is value order)
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

int NumberRange::compare(const Decimal& a, const Decimal& b) {
  const int sa = is_zero(a) ? 0 : a.negative ? -1 : 1;
  const int sb = is_zero(b) ? 0 : b.negative ? -1 : 1;
  if (sa != sb) return sa < sb ? -1 : 1;
  return sa * compare_magnitudes(a, b);
}

NumberRange::Decimal NumberRange::negated(Decimal d) {
  d.negative = !d.negative && !is_zero(d);
  return d;
}

NumberRange::Decimal NumberRange::rounded(const Decimal& d, uint32_t digits, bool up) {
  if (d.fraction.size() <= digits) return d;
  // Cut to `digits` (towards zero), then one unit further from zero where that rounds the wrong way.
  std::string all = d.whole + d.fraction.substr(0, digits);
  if (up != d.negative) all = plus_one(all);
  const std::string text = (d.negative ? "-" : "") + all.substr(0, all.size() - digits) + "." +
                           all.substr(all.size() - digits);
  return parse(text);
}

bool NumberRange::magnitude_bounds(bool negative, std::optional<Decimal>& lo, std::optional<Decimal>& hi) const {
  lo = negative ? (hi_ ? std::optional<Decimal>(negated(*hi_)) : std::nullopt) : lo_;
  hi = negative ? (lo_ ? std::optional<Decimal>(negated(*lo_)) : std::nullopt) : hi_;
  if (hi.has_value() && hi->negative) return false;  // (a magnitude is at least 0)
  if (lo.has_value() && (lo->negative || is_zero(*lo))) lo.reset();
  if (negative && !lo.has_value()) {  // not -0: a negative number's magnitude is one unit of the last digit or more
    lo = fraction_digits_ == 0 ? Decimal{false, "1", ""}
                               : Decimal{false, "", std::string(fraction_digits_ - 1, '0') + "1"};
    if (hi.has_value() && compare_magnitudes(*lo, *hi) > 0) return false;
  }
  return true;
}

bool NumberRange::magnitude_reachable(const std::optional<Decimal>& lo, const std::optional<Decimal>& hi,
                                      std::string_view whole, bool point, std::string_view fraction) const {
  if (fraction.size() > fraction_digits_ || (point && fraction_digits_ == 0)) return false;
  if (whole.empty()) return true;  // any magnitude yet (the bounds hold one: make checked)
  if (point || whole == "0") {
    // [a, b): a the text's value, b one unit of its last digit more
    const std::string digits = std::string(whole) + std::string(fraction);
    const std::string next = plus_one(digits);
    const size_t whole_digits = whole.size() + (next.size() - digits.size());  // (a carry lengthens the whole part)
    const Decimal a = parse(std::string(whole) + "." + std::string(fraction));
    const Decimal b = parse(next.substr(0, whole_digits) + "." + next.substr(whole_digits));
    return (!hi.has_value() || compare_magnitudes(a, *hi) <= 0) && (!lo.has_value() || compare_magnitudes(*lo, b) < 0);
  }
  // Whole digits `whole` (k of them) then j more: [whole * 10^j, (whole + 1) * 10^j), numbers of d = k + j whole
  // digits. Some lies within when whole * 10^j <= floor(hi) and floor(lo) <= whole followed by j nines.
  const size_t k = whole.size();
  auto hi_ok = [&](size_t d) {
    if (!hi.has_value() || d < hi->whole.size()) return true;
    return d == hi->whole.size() && whole <= std::string_view(hi->whole).substr(0, k);
  };
  auto lo_ok = [&](size_t d) {
    if (!lo.has_value() || d > lo->whole.size()) return true;
    return d == lo->whole.size() && std::string_view(lo->whole).substr(0, k) <= whole;
  };
  // lo_ok holds from some d on, hi_ok up to some d: try the first two d where lo_ok may start to hold.
  const size_t first = std::max(k, lo.has_value() ? lo->whole.size() : k);
  for (size_t d : {first, first + 1})
    if (lo_ok(d) && hi_ok(d)) return true;
  return false;
}

bool NumberRange::reachable(std::string_view text) const {
  const Written w = split(text);
  std::optional<Decimal> lo, hi;
  return magnitude_bounds(w.negative, lo, hi) && magnitude_reachable(lo, hi, w.whole, w.point, w.fraction);
}

bool NumberRange::holds(std::string_view text) const {
  const Decimal v = parse(text);
  if (!text.empty() && text[0] == '-' && is_zero(v)) return false;  // -0 (see magnitude_bounds)
  return (!lo_.has_value() || compare(*lo_, v) <= 0) && (!hi_.has_value() || compare(v, *hi_) <= 0);
}

bool NumberRange::covers(std::string_view text) const {
  const Written w = split(text);
  std::optional<Decimal> lo, hi;
  if (w.point || w.whole.empty() || w.whole == "0" || !magnitude_bounds(w.negative, lo, hi)) return false;
  // every whole * 10^j + anything: no upper bound on the magnitude, and the lower one at most `whole`
  return !hi.has_value() && (!lo.has_value() || compare_magnitudes(*lo, parse(w.whole)) <= 0);
}

}  // namespace kvshare
