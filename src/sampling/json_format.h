// String formats of a JSON schema ("format") that JSON mode holds to, a character at a time: dates, times and
// UUIDs as Pydantic, Python's datetime and JSON Schema's RFC 3339 readers all take them.
//   date       YYYY-MM-DD, a real day (0001-01-01 to 9999-12-31; February 29th in leap years only)
//   time       HH:MM:SS, optionally .F (1 to 6 digits), then Z or +HH:MM / -HH:MM (RFC 3339's full-time: the
//              offset is required; 23:59:60 is not written, as Python refuses it)
//   date-time  a date, T, a time
//   uuid       8-4-4-4-12 hexadecimal digits
// Only these characters are written (no escapes), so a formatted string's text is its value.
//   email      held to as a pattern (email_pattern), not a StringFormat
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "sampling/json_pattern.h"

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

// "email": an address as Pydantic's EmailStr (email-validator) takes it, in the common form: a local part of
// letters, digits and _%+- in dot-separated runs, '@', then a domain of dot-separated labels (letters, digits and
// inner hyphens, at most 63 characters each) ending in a top-level domain of 2 to 24 letters. One compiled pattern,
// shared (its DFA grows once for every schema). Not written: quoted local parts, IP-address domains, other
// characters email-validator takes (!#$&'*/=?^`{|}~ and non-ASCII). Not held to: the local part's 64 characters,
// and the special-use domains email-validator refuses (.test, .local, ...).
std::shared_ptr<const Pattern> email_pattern();

}  // namespace kvshare
