#include "engine/context_limit.h"

#include <algorithm>
#include <string>

namespace kvshare {

Status check_prompt_text_length(size_t text_bytes, int64_t least_tokens, int64_t context, bool truncating) {
  if (truncating) {
    const int64_t limit = context * kTruncatedTextContexts;
    const Status st = check_prompt_text_length(text_bytes, least_tokens, limit, false);
    if (st.ok()) return st;
    return out_of_range(st.message() + " (with truncate_prompt_tokens, text of up to " +
                        std::to_string(kTruncatedTextContexts) + " contexts of " + std::to_string(context) +
                        " tokens is taken and cut)");
  }
  // least_tokens is 0 for short text, or for any text when the vocabulary bounds no token's length: the cap is
  // far above what the context holds in any real text, and tokenizing that much takes about a second.
  const uint64_t cap = std::max<uint64_t>(kMinUnboundedPromptBytes, kUnboundedPromptBytesPerToken * static_cast<uint64_t>(context));
  if (least_tokens == 0 && text_bytes > cap)
    return out_of_range("the prompt is " + std::to_string(text_bytes) + " bytes; this tokenizer bounds no token's length, so " +
                        "a prompt over " + std::to_string(cap) + " bytes (" + std::to_string(kUnboundedPromptBytesPerToken) +
                        " per token of the context of " + std::to_string(context) +
                        ", at least " + std::to_string(kMinUnboundedPromptBytes) + " bytes) is refused before tokenizing; shorten the prompt");
  if (least_tokens < context) return {};
  return out_of_range("the prompt is " + std::to_string(text_bytes) + " bytes, at least " +
                      std::to_string(least_tokens) + " tokens, but the context holds " + std::to_string(context) +
                      " (prompt and at least one generated token); shorten the prompt");
}

Status truncate_prompt(std::vector<int32_t>& tokens, std::optional<int32_t> keep, int64_t context, int32_t bos,
                       bool* cut) {
  if (cut != nullptr) *cut = false;
  if (!keep.has_value()) return {};
  const int64_t n = *keep == -1 ? context - 1 : *keep;
  if (n > context)
    return out_of_range("truncate_prompt_tokens is " + std::to_string(n) + " but the context holds " +
                        std::to_string(context) + ": use at most " + std::to_string(context - 1) +
                        " (room for one generated token), or -1");
  if (static_cast<int64_t>(tokens.size()) <= n) return {};
  const bool keeps_bos = bos >= 0 && tokens.front() == bos;
  const int64_t tail = keeps_bos ? n - 1 : n;
  tokens.erase(tokens.begin() + (keeps_bos ? 1 : 0), tokens.end() - tail);
  if (cut != nullptr) *cut = true;
  return {};
}

Status check_prompt_length(int64_t tokens, int64_t context, bool context_can_grow) {
  if (tokens < context) return {};
  return out_of_range("the prompt has " + std::to_string(tokens) + " tokens but the context holds " +
                      std::to_string(context) + " (prompt and at least one generated token); shorten the prompt" +
                      (context_can_grow ? " or raise --max-model-len" : ""));
}

}  // namespace kvshare
