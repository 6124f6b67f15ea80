// String formats of a JSON schema ("format") that JSON mode holds to, a character at a time: dates, times and
// UUIDs as Pydantic, Python's datetime and JSON Schema's RFC 3339 readers all take them.
//   date       YYYY-MM-DD, a real day (0001-01-01 to 9999-12-31; February 29th in leap years only)
//   time       HH:MM:SS, optionally .F (1 to 6 digits), then Z or +HH:MM / -HH:MM (RFC 3339's full-time: the
//              offset is required; 23:59:60 is not written, as Python refuses it)
//   date-time  a date, T, a time
//   uuid       8-4-4-4-12 hexadecimal digits
// Only these characters are written (no escapes), so a formatted string's text is its value.
#pragma once

#include <optional>
#include <string_view>

namespace kvshare {

enum class StringFormat : unsigned char { kNone, kDate, kTime, kDateTime, kUuid };

// The format a schema's "format" names, nullopt for one that is not held to (refused by the compiler).
std::optional<StringFormat> string_format(std::string_view name);

// Whether some text of `format` begins with `prefix`.
bool format_reachable(StringFormat format, std::string_view prefix);
// Whether `text` is a whole text of `format`.
bool format_complete(StringFormat format, std::string_view text);
// The characters a text of `format` may hold (for the vocabulary check: each must be some token alone).
std::string_view format_characters(StringFormat format);

}  // namespace kvshare
