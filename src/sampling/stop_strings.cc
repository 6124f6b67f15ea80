#include "sampling/stop_strings.h"

#include <algorithm>

namespace kvshare {

std::optional<StopMatch> find_stop_string(std::string_view text, size_t checked, const std::vector<std::string>& stops) {
  std::optional<StopMatch> best;
  for (size_t k = 0; k < stops.size(); ++k) {
    const std::string& s = stops[k];
    if (s.empty()) continue;
    // A match ending after `checked` starts at checked - (|s| - 1) or later.
    const size_t from = checked >= s.size() - 1 ? checked - (s.size() - 1) : 0;
    const size_t pos = text.find(s, from);
    if (pos == std::string_view::npos) continue;
    if (!best || pos < best->pos) best = StopMatch{pos, k};
  }
  return best;
}

size_t stop_prefix_tail(std::string_view text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& s : stops) {
    for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), text.size()); len > longest; --len) {
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        longest = len;
        break;
      }
    }
  }
  return longest;
}

}  // namespace kvshare
