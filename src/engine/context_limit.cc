#include "engine/context_limit.h"

#include <string>

namespace kvshare {

Status check_prompt_text_length(size_t text_bytes, int64_t least_tokens, int64_t context) {
  if (least_tokens < context) return {};
  return out_of_range("the prompt is " + std::to_string(text_bytes) + " bytes, at least " +
                      std::to_string(least_tokens) + " tokens, but the context holds " + std::to_string(context) +
                      " (prompt and at least one generated token); shorten the prompt");
}

Status check_prompt_length(int64_t tokens, int64_t context, bool context_can_grow) {
  if (tokens < context) return {};
  return out_of_range("the prompt has " + std::to_string(tokens) + " tokens but the context holds " +
                      std::to_string(context) + " (prompt and at least one generated token); shorten the prompt" +
                      (context_can_grow ? " or raise --max-model-len" : ""));
}

}  // namespace kvshare
