#include "core/json_limits.h"

#include <string>

namespace kvshare {

Status check_json_limits(std::string_view text, std::string_view what, size_t max_values) {
  int depth = 0;
  size_t commas = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        return invalid_argument(std::string(what) + " nests arrays and objects more than " +
                                std::to_string(kMaxJsonDepth) + " levels deep (at byte " + std::to_string(i) +
                                "); that is the limit for any JSON kvshare reads");
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && ++commas >= max_values) {
      return invalid_argument(std::string(what) + " holds more than " + std::to_string(max_values) +
                              " values (array items and object members; at byte " + std::to_string(i) +
                              "), the limit for a request");
    }
  }
  return {};
}

}  // namespace kvshare
