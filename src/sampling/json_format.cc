#include "sampling/json_format.h"

namespace kvshare {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int two_digits(std::string_view s, size_t at) { return (s[at] - '0') * 10 + (s[at + 1] - '0'); }

// How far a text goes as the start of a format: refused, a start that goes on, or a whole text (that may still
// go on: a time's seconds may take a fraction).
struct Verdict {
  bool ok = false;
  bool complete = false;
};

// `p` against a fixed shape: 'd' a digit, 'h' a hexadecimal digit, anything else itself.
bool fits_shape(std::string_view p, std::string_view shape) {
  if (p.size() > shape.size()) return false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char s = shape[i];
    if (s == 'd' ? !is_digit(p[i]) : s == 'h' ? !is_hex(p[i]) : p[i] != s) return false;
  }
  return true;
}

int days_in_month(int year, int month) {
  static const int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// YYYY-MM-DD: year 0001-9999, month 01-12, a day of that month.
Verdict date(std::string_view p) {
  if (!fits_shape(p, "dddd-dd-dd")) return {};
  if (p.size() >= 4 && p.substr(0, 4) == "0000") return {};
  if (p.size() >= 6 && p[5] > '1') return {};
  int month = 0;
  if (p.size() >= 7) {
    month = two_digits(p, 5);
    if (month < 1 || month > 12) return {};
  }
  if (p.size() >= 9) {
    const int most = days_in_month((p[0] - '0') * 1000 + (p[1] - '0') * 100 + two_digits(p, 2), month);
    if ((p[8] - '0') * 10 > most) return {};
    if (p.size() == 10 && (two_digits(p, 8) < 1 || two_digits(p, 8) > most)) return {};
  }
  return {true, p.size() == 10};
}

// HH:MM (hours 00-23, minutes 00-59), the shape of a time's start and of an offset.
bool hours_minutes(std::string_view p) {
  if (!fits_shape(p, "dd:dd")) return false;
  if (p.size() >= 1 && p[0] > '2') return false;
  if (p.size() >= 2 && two_digits(p, 0) > 23) return false;
  return p.size() < 4 || p[3] <= '5';
}

// HH:MM:SS[.F{1,6}](Z|[+-]HH:MM)
Verdict time(std::string_view p) {
  if (!hours_minutes(p.substr(0, 5)) || !fits_shape(p.substr(0, 8), "dd:dd:dd")) return {};
  if (p.size() >= 7 && p[6] > '5') return {};
  if (p.size() <= 8) return {true, false};
  size_t at = 8;
  if (p[at] == '.') {
    size_t digits = 0;
    while (at + 1 + digits < p.size() && is_digit(p[at + 1 + digits])) ++digits;
    if (digits > 6) return {};
    at += 1 + digits;
    if (at == p.size()) return {true, false};
    if (digits == 0) return {};
  }
  if (p[at] == 'Z') return {at + 1 == p.size(), at + 1 == p.size()};
  if (p[at] != '+' && p[at] != '-') return {};
  const std::string_view offset = p.substr(at + 1);
  if (!hours_minutes(offset)) return {};
  return {true, offset.size() == 5};
}

Verdict verdict(StringFormat format, std::string_view p) {
  switch (format) {
    case StringFormat::kDate:
      return date(p);
    case StringFormat::kTime:
      return time(p);
    case StringFormat::kDateTime: {
      const Verdict d = date(p.substr(0, 10));
      if (!d.ok || p.size() <= 10) return {d.ok, false};
      if (p[10] != 'T') return {};
      return p.size() == 11 ? Verdict{true, false} : time(p.substr(11));
    }
    case StringFormat::kUuid:
      return {fits_shape(p, "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh"), p.size() == 36};
    case StringFormat::kNone:
      break;
  }
  return {true, true};
}

}  // namespace

std::optional<StringFormat> string_format(std::string_view name) {
  if (name == "date") return StringFormat::kDate;
  if (name == "time") return StringFormat::kTime;
  if (name == "date-time") return StringFormat::kDateTime;
  if (name == "uuid") return StringFormat::kUuid;
  return std::nullopt;
}

bool format_reachable(StringFormat format, std::string_view prefix) { return verdict(format, prefix).ok; }

bool format_complete(StringFormat format, std::string_view text) { return verdict(format, text).complete; }

std::shared_ptr<const Pattern> email_pattern() {
  static const std::shared_ptr<const Pattern> email = *Pattern::compile(
      "^[A-Za-z0-9_%+-]+(?:\\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,24}$");
  return email;
}

std::string_view format_characters(StringFormat format) {
  switch (format) {
    case StringFormat::kDate: return "0123456789-";
    case StringFormat::kTime: return "0123456789:.Z+-";
    case StringFormat::kDateTime: return "0123456789-:.TZ+";
    case StringFormat::kUuid: return "0123456789abcdef-";
    case StringFormat::kNone: break;
  }
  return "";
}

}  // namespace kvshare
