#include "tokenizer/utf8.h"


namespace kvshare {
namespace {

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

}  // namespace

Utf8Char scan_utf8_char(std::string_view s, size_t pos) {
  const uint8_t lead = static_cast<uint8_t>(s[pos]);
  if (lead < 0x80) return {Utf8Char::kComplete, 1};
  size_t need = 0;
  uint8_t second_lo = 0x80, second_hi = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) second_lo = 0xA0;  // no overlongs
    if (lead == 0xED) second_hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) second_lo = 0x90;  // no overlongs
    if (lead == 0xF4) second_hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Char::kInvalid, 1};
  }
  for (size_t k = 1; k < need; ++k) {
    if (pos + k >= s.size()) return {Utf8Char::kIncomplete, k};
    const uint8_t b = static_cast<uint8_t>(s[pos + k]);
    const bool ok = k == 1 ? (b >= second_lo && b <= second_hi) : is_continuation(b);
    if (!ok) return {Utf8Char::kInvalid, k};
  }
  return {Utf8Char::kComplete, need};
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const Utf8Char c = scan_utf8_char(s, pos);
    if (c.kind == Utf8Char::kComplete) {
      out.append(s.substr(pos, c.length));
    } else {
      out.append(kReplacementChar);
    }
    pos += c.length;
  }
  return out;
}

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[b], printable ? b : next_extra++);
    }
    return t;
  }();
  return table;
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& table = byte_level_chars();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += table[static_cast<uint8_t>(c)];
  return out;
}

std::string byte_level_decode(std::string_view text) {
  // The alphabet's characters are all below U+0144: index a table by code point.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> t;
    t.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[printable ? b : next_extra++] = static_cast<int16_t>(b);
    }
    return t;
  }();
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Char c = scan_utf8_char(text, pos);
    uint32_t cp = 0x144;  // outside the table
    if (c.kind == Utf8Char::kComplete && c.length <= 2) {
      const auto b0 = static_cast<uint8_t>(text[pos]);
      cp = c.length == 1 ? b0 : ((b0 & 0x1Fu) << 6) | (static_cast<uint8_t>(text[pos + 1]) & 0x3Fu);
    }
    if (cp < inverse.size() && inverse[cp] >= 0) {
      out += static_cast<char>(inverse[cp]);
    } else {
      out.append(text.substr(pos, c.length));
    }
    pos += c.length;
  }
  return out;
}

}  // namespace kvshare
