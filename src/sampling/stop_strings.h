// Stop strings over incrementally decoded text: finding one that the newest text completed (it may span
// tokens), and how much of the text's tail must be held back from a streaming client because it could still
// become the start of a stop string.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kvshare {

struct StopMatch {
  size_t pos = 0;     // where the stop string starts in the text
  size_t which = 0;   // its index in the list
};

// The earliest stop string in `text` that ends after `checked` (text[0, checked) was searched before, so only
// matches the new text completes count); at equal positions, the first in the list.
std::optional<StopMatch> find_stop_string(std::string_view text, size_t checked, const std::vector<std::string>& stops);

// The length of the longest tail of `text` that is a proper prefix of some stop string (0 when none).
size_t stop_prefix_tail(std::string_view text, const std::vector<std::string>& stops);

}  // namespace kvshare
