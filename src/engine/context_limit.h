// A prompt must leave room in the context for at least one generated token. These are the refusals of a prompt
// over the context (out_of_range: the server answers 400 context_length_exceeded), written once for the engine
// and for the server, which tokenizes chat prompts itself.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace kvshare {

// Where the tokenizer gives no lower bound on a text's tokens (Tokenizer::min_tokens is 0), text longer than this
// is refused before BPE: 256 bytes per token of the context, at least 1 MiB.
inline constexpr uint64_t kUnboundedPromptBytesPerToken = 256;
inline constexpr uint64_t kMinUnboundedPromptBytes = uint64_t{1} << 20;

// Text of `text_bytes` bytes that is at least `least_tokens` tokens (Tokenizer::min_tokens) is refused from its
// length, before BPE (which takes about a second per megabyte), when the context cannot hold it, or when there is
// no bound and it is longer than the cap above.
Status check_prompt_text_length(size_t text_bytes, int64_t least_tokens, int64_t context);

// A prompt of `tokens` tokens. `context_can_grow`: the context was set below the model's own (--max-model-len).
Status check_prompt_length(int64_t tokens, int64_t context, bool context_can_grow = false);

}  // namespace kvshare
