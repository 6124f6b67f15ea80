// For json_object_test and fuzz_json_object only (not part of kv_sampling): which texts a strict JSON parser takes
// that JSON mode's recognizer must take too.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "sampling/json_guide.h"

namespace kvshare {

// Whether `text` stays inside JsonPrefix's limits, checked loosely: every bracket counts toward the nesting, and
// every run of whitespace, in strings too, must be one space or a newline and at most kMaxIndent spaces or tabs.
// No NUL bytes either: nlohmann takes "{}" followed by NULs as "{}". A text this passes is one the recognizer must
// take whole whenever the parser takes it as an object.
inline bool within_json_mode_limits(std::string_view text) {
  int brackets = 0;
  std::string run;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char c = i < text.size() ? text[i] : 'x';
    if (c == '\0') return false;
    brackets += c == '{' || c == '[';
    if (brackets > JsonPrefix::kMaxDepth) return false;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      run += c;
      continue;
    }
    const bool ok = run.empty() || run == " " ||
                    (run[0] == '\n' && run.size() <= 1 + JsonPrefix::kMaxIndent &&
                     run.find_first_not_of(" \t", 1) == std::string::npos);
    if (!ok) return false;
    run.clear();
  }
  return true;
}

// nlohmann's strict parser's verdict on `text` (RFC 8259, UTF-8 and surrogate pairs checked), through its SAX
// interface: whether it is one object, else its error's id (406: a number a double cannot hold) and byte offset.
struct NlohmannVerdict {
  bool object = false;
  int error_id = 0;
  size_t error_byte = 0;
};

inline NlohmannVerdict nlohmann_verdict(const std::string& text) {
  struct Handler : nlohmann::json_sax<nlohmann::json> {
    NlohmannVerdict v;
    bool first = true;
    bool value() { first = false; return true; }
    bool null() override { return value(); }
    bool boolean(bool) override { return value(); }
    bool number_integer(number_integer_t) override { return value(); }
    bool number_unsigned(number_unsigned_t) override { return value(); }
    bool number_float(number_float_t, const string_t&) override { return value(); }
    bool string(string_t&) override { return value(); }
    bool binary(binary_t&) override { return value(); }
    bool start_object(std::size_t) override { v.object = v.object || first; return value(); }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return value(); }
    bool end_array() override { return true; }
    bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
      v.error_id = e.id;
      v.error_byte = position;
      return false;
    }
  } handler;
  nlohmann::json::sax_parse(text, &handler);
  if (handler.v.error_id != 0) handler.v.object = false;
  return handler.v;
}

}  // namespace kvshare
