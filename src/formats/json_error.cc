#include "formats/json_error.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace kvshare {

std::string json_syntax_error(std::string_view text) {
  try {
    const auto parsed = nlohmann::json::parse(text);  // cannot nest past kMaxJsonDepth: callers checked it
    (void)parsed;
    return "";
  } catch (const nlohmann::json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ...": the library's tag is
    // no help to a user.
    std::string m = e.what();
    if (const size_t tag_end = m.find("] "); m.rfind("[json.exception.", 0) == 0 && tag_end != std::string::npos)
      m.erase(0, tag_end + 2);
    if (m.rfind("parse error ", 0) == 0) m.erase(0, 12);
    // The message quotes the text it read ("last read: '...'"), which may be any bytes: keep it ASCII, so that it
    // can go into a JSON answer or output line as it is.
    std::string out = " ";
    for (const char c : m) {
      const auto b = static_cast<unsigned char>(c);
      if (b >= 0x20 && b < 0x7f) {
        out += c;
      } else {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\x%02X", b);
        out += esc;
      }
    }
    return out;
  } catch (const std::exception& e) {
    return std::string(" (") + e.what() + ")";
  }
}

}  // namespace kvshare
