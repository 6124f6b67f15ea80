// The nesting limit for every JSON text kvshare reads (model files, tokenizer files, configs, request lines,
// chat conversations). Deeper documents are refused before they are parsed: nothing kvshare reads nests more
// than a few levels, and code that walks a parsed document recursively (printing a value in an error message,
// converting a conversation for a chat template) must not run out of stack.
#pragma once

#include <string_view>

#include "core/status.h"

namespace kvshare {

constexpr int kMaxJsonDepth = 256;

// invalid_argument naming `what`, the limit and the byte offset where `text` nests arrays and objects deeper
// than kMaxJsonDepth; ok otherwise (also for text that is not valid JSON: the parser reports that). Linear in
// the text, with no allocation.
Status check_json_depth(std::string_view text, std::string_view what);

}  // namespace kvshare
