#include "chat/jinja_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kvshare::jinja::text {

uint32_t decode(std::string_view s, size_t& pos) {
  const auto c = static_cast<unsigned char>(s[pos]);
  auto cont = [&](size_t i) { return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80; };
  int n = 0;
  uint32_t cp = 0;
  if (c < 0x80) {
    ++pos;
    return c;
  } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
    n = 1, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 2, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
    n = 3, cp = c & 0x07;
  } else {
    ++pos;
    return c;
  }
  for (int i = 1; i <= n; ++i)
    if (!cont(pos + i)) {
      ++pos;
      return c;
    }
  for (int i = 1; i <= n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + i]) & 0x3F);
  pos += n + 1;
  return cp;
}

std::vector<std::string> code_points(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    decode(s, i);
    out.emplace_back(s.substr(start, i - start));
  }
  return out;
}

size_t utf16_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) n += decode(s, i) >= 0x10000 ? 2 : 1;
  return n;
}

bool is_space(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

size_t space_len(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  size_t p = pos;
  const uint32_t cp = decode(s, p);
  return is_space(cp) ? p - pos : 0;
}

std::string trim_start(std::string_view s) {
  size_t i = 0;
  while (size_t n = space_len(s, i)) i += n;
  return std::string(s.substr(i));
}

std::string trim_end(std::string_view s) {
  size_t end = 0;  // one past the last non-space character
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    if (!is_space(decode(s, i))) end = i;
    (void)start;
  }
  return std::string(s.substr(0, end));
}

std::string trim(std::string_view s) { return trim_end(trim_start(s)); }

std::string js_number(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return "0";
  std::string out;
  if (x < 0) {
    out = "-";
    x = -x;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  const int k = static_cast<int>(digits.size()), n = exp10 + 1;
  if (k <= n && n <= 21) {
    out += digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(-n, '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += n - 1 >= 0 ? "e+" : "e-";
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string js_float(double x) {
  if (x == 0 && std::signbit(x)) return "-0.0";
  if (std::isfinite(x) && std::fmod(x, 1.0) == 0) {
    if (std::fabs(x) >= 1e21) return js_number(x);  // toFixed falls back to String() there
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f", x);
    return buf;
  }
  return js_number(x);
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  static const char* kHex = "0123456789abcdef";
  auto hex4 = [&](uint32_t u) {
    out += "\\u";
    for (int sh = 12; sh >= 0; sh -= 4) out += kHex[(u >> sh) & 0xF];
  };
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t cp = decode(s, i);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (cp < 0x20) {
      hex4(cp);
    } else if (ensure_ascii && cp >= 0x7F) {
      if (cp >= 0x10000) {
        hex4(0xD800 + ((cp - 0x10000) >> 10));
        hex4(0xDC00 + ((cp - 0x10000) & 0x3FF));
      } else {
        hex4(cp);
      }
    } else {
      out.append(s.substr(start, i - start));
    }
  }
  out += '"';
  return out;
}

namespace {
bool is_digit(char c) { return c >= '0' && c <= '9'; }
}  // namespace

bool parse_int(std::string_view s, double& out) {
  std::string t = trim_start(s);
  size_t i = 0;
  bool neg = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) neg = t[i++] == '-';
  size_t start = i;
  double v = 0;
  while (i < t.size() && is_digit(t[i])) v = v * 10 + (t[i++] - '0');
  if (i == start) return false;
  // Digits beyond double precision: let strtod round as JavaScript does for long literals.
  if (i - start > 15) v = std::strtod(std::string(t.substr(start, i - start)).c_str(), nullptr);
  out = neg ? -v : v;
  return true;
}

bool parse_float(std::string_view s, double& out) {
  std::string t = trim_start(s);
  size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  if (t.compare(i, 8, "Infinity") == 0) {
    out = t[0] == '-' ? -INFINITY : INFINITY;
    return true;
  }
  const size_t mant = i;
  while (i < t.size() && is_digit(t[i])) ++i;
  size_t int_digits = i - mant, frac_digits = 0;
  if (i < t.size() && t[i] == '.') {
    size_t j = i + 1;
    while (j < t.size() && is_digit(t[j])) ++j;
    frac_digits = j - i - 1;
    if (int_digits > 0 || frac_digits > 0) i = j;
  }
  if (int_digits == 0 && frac_digits == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    size_t j = i + 1;
    if (j < t.size() && (t[j] == '+' || t[j] == '-')) ++j;
    const size_t ed = j;
    while (j < t.size() && is_digit(t[j])) ++j;
    if (j > ed) i = j;
  }
  out = std::strtod(t.substr(0, i).c_str(), nullptr);
  return true;
}

bool to_number(std::string_view s, double& out) {
  std::string t = trim(s);
  if (t.empty()) {
    out = 0;
    return true;
  }
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X' || t[1] == 'o' || t[1] == 'O' || t[1] == 'b' ||
                                       t[1] == 'B')) {
    const int base = (t[1] == 'x' || t[1] == 'X') ? 16 : (t[1] == 'o' || t[1] == 'O') ? 8 : 2;
    double v = 0;
    for (size_t i = 2; i < t.size(); ++i) {
      const char c = t[i];
      int d = is_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : 99;
      if (d >= base) return false;
      v = v * base + d;
    }
    out = v;
    return true;
  }
  double v;
  if (!parse_float(t, v)) return false;
  // parseFloat accepts a prefix; Number() needs the whole string to be the literal.
  size_t i = 0;
  if (t[i] == '+' || t[i] == '-') ++i;
  if (t.compare(i, std::string::npos, "Infinity") == 0) {
    out = v;
    return true;
  }
  bool digits = false;
  while (i < t.size() && is_digit(t[i])) ++i, digits = true;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && is_digit(t[i])) ++i, digits = true;
  }
  if (!digits) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    size_t ed = i;
    while (i < t.size() && is_digit(t[i])) ++i;
    if (i == ed) return false;
  }
  if (i != t.size()) return false;
  out = v;
  return true;
}

namespace {

// Simple one-to-one case mappings: ASCII, Latin-1, Latin Extended-A pairs, Greek, Cyrillic.
uint32_t upper_cp(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
    const bool odd_pairs = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    if (odd_pairs) return (c % 2 == 0) ? c - 1 : c;
    return (c % 2 == 1) ? c - 1 : c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

uint32_t lower_cp(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
    const bool odd_pairs = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    if (odd_pairs) return (c % 2 == 1) ? c + 1 : c;
    return (c % 2 == 0) ? c + 1 : c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

bool is_word(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }

}  // namespace

std::string to_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = decode(s, i);
    if (c == 0xDF) {
      out += "SS";
      continue;
    }
    append_utf8(out, upper_cp(c));
  }
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) append_utf8(out, lower_cp(decode(s, i)));
  return out;
}

std::string title_case(std::string_view s) {
  std::string out;
  bool prev_word = false;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const uint32_t c = decode(s, i);
    const bool w = is_word(c);
    if (w && !prev_word && c >= 'a' && c <= 'z')
      out += static_cast<char>(c - 32);
    else
      out.append(s.substr(start, i - start));
    prev_word = w;
  }
  return out;
}

std::string capitalize(std::string_view s) {
  if (s.empty()) return "";
  size_t i = 0;
  const uint32_t c = decode(s, i);
  std::string first = to_upper(s.substr(0, i));
  (void)c;
  return first + std::string(s.substr(i));
}

}  // namespace kvshare::jinja::text
