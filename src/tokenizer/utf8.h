// UTF-8 scanning and the byte-level BPE alphabet (each byte shown as one printable character).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/utf8.h"  // append_utf8

namespace kvshare {

// What starts at a position of a byte string, by the rules of Unicode's Table 3-7 (no overlongs,
// no surrogates, nothing above U+10FFFF).
struct Utf8Char {
  enum Kind { kComplete, kIncomplete, kInvalid };
  Kind kind;
  // kComplete: the character's length; kIncomplete: the bytes present (a valid start cut off by the end);
  // kInvalid: the maximal invalid subpart (at least 1), which becomes one U+FFFD.
  size_t length;
};
Utf8Char scan_utf8_char(std::string_view s, size_t pos);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// `s` with every invalid subpart (and an incomplete tail) replaced by U+FFFD.
std::string sanitize_utf8(std::string_view s);

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for U+0100 upward.
const std::array<std::string, 256>& byte_level_chars();
std::string byte_level_encode(std::string_view bytes);
// Inverse of byte_level_encode; characters outside the alphabet are kept as they are.
std::string byte_level_decode(std::string_view text);

}  // namespace kvshare
