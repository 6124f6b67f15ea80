// Text helpers for the Jinja engine that follow JavaScript's rules (the reference implementation is
// JavaScript): what counts as whitespace (\s, trim), number to string, JSON.stringify of a string, parseInt /
// parseFloat, case mapping. Strings are UTF-8; lengths are counted in UTF-16 units as JavaScript counts them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/utf8.h"

namespace kvshare::jinja::text {

// Decodes the code point at `pos` (advancing `pos`); invalid bytes decode as themselves (one byte each).
uint32_t decode(std::string_view s, size_t& pos);
using kvshare::append_utf8;  // core/utf8.h
std::vector<std::string> code_points(std::string_view s);  // Array.from(s)
size_t utf16_length(std::string_view s);

// JavaScript's \s / String.prototype.trim whitespace.
bool is_space(uint32_t cp);
// Byte length of the whitespace character at `pos`, 0 when it is not whitespace (or pos is at the end).
size_t space_len(std::string_view s, size_t pos);
std::string trim_start(std::string_view s);
std::string trim_end(std::string_view s);
std::string trim(std::string_view s);

// String(number) as JavaScript writes it (shortest round trip, 1e+21, NaN, Infinity).
std::string js_number(double x);
// A FloatValue's text: integral values as "2.0", "-0.0", otherwise js_number.
std::string js_float(double x);
// JSON.stringify(string); with ensure_ascii also every UTF-16 unit >= 0x7f as \uXXXX.
std::string json_quote(std::string_view s, bool ensure_ascii);
// parseInt(s, 10) / parseFloat(s); false when JavaScript gives NaN.
bool parse_int(std::string_view s, double& out);
bool parse_float(std::string_view s, double& out);
// Number(s) for loose equality; false for NaN.
bool to_number(std::string_view s, double& out);

std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);
// The reference's title(): every ASCII word character after a non-word character is upper-cased.
std::string title_case(std::string_view s);
std::string capitalize(std::string_view s);  // first character upper-cased, the rest as is

}  // namespace kvshare::jinja::text
