// The limits checked on JSON text before it is parsed. The nesting limit holds for every JSON text kvshare
// reads (model files, tokenizer files, configs, request lines, chat conversations): nothing kvshare reads nests
// more than a few levels, and code that walks a parsed document recursively (printing a value in an error message,
// converting a conversation for a chat template) must not run out of stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace kvshare {

constexpr int kMaxJsonDepth = 256;

// Request lines and HTTP request bodies hold at most this many values (array items and object members, counted
// by their commas): parsing costs about half a microsecond a value, and a 60 MB line of 30 million token ids took
// 12 s to parse and then refuse as longer than the context. Real requests hold far fewer: a prompt's token ids
// are bounded by the context, logit_bias by the vocabulary.
constexpr size_t kMaxRequestJsonValues = size_t{1} << 22;

// invalid_argument naming `what`, the limit and the byte offset where `text` nests arrays and objects deeper
// than kMaxJsonDepth, or holds more than `max_values` values; ok otherwise (also for text that is not valid
// JSON: the parser reports that). Linear in the text, with no allocation.
Status check_json_limits(std::string_view text, std::string_view what, size_t max_values = SIZE_MAX);

}  // namespace kvshare
