// A prompt must leave room in the context for at least one generated token. These are the refusals of a prompt
// over the context (out_of_range: the server answers 400 context_length_exceeded), written once for the engine
// and for the server, which tokenizes chat prompts itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/status.h"

namespace kvshare {

// Where the tokenizer gives no lower bound on a text's tokens (Tokenizer::min_tokens is 0), text longer than this
// is refused before BPE: 256 bytes per token of the context, at least 1 MiB.
inline constexpr uint64_t kUnboundedPromptBytesPerToken = 256;
inline constexpr uint64_t kMinUnboundedPromptBytes = uint64_t{1} << 20;

// A prompt to be cut to its last tokens (SamplingParams::truncate_prompt_tokens) may be this many contexts long.
inline constexpr int64_t kTruncatedTextContexts = 64;

// Text of `text_bytes` bytes that is at least `least_tokens` tokens (Tokenizer::min_tokens) is refused from its
// length, before BPE (which takes about a second per megabyte), when the context cannot hold it, or when there is
// no bound and it is longer than the cap above. `truncating`: the prompt will be cut to its last tokens, so it
// may be kTruncatedTextContexts contexts long.
Status check_prompt_text_length(size_t text_bytes, int64_t least_tokens, int64_t context, bool truncating = false);

// vLLM's truncate_prompt_tokens: a prompt longer than `keep` tokens keeps its last `keep`; none leaves it whole.
// `bos` (or -1): the BOS id the tokenizer put first when it encoded the prompt's text, which stays first, as a
// Hugging Face tokenizer truncating on the left keeps it (BOS and the last keep - 1). -1 for `keep` is
// context - 1, room for one generated token (vLLM's is the whole context, which leaves none). A `keep` over the
// context is refused (out_of_range); a cut prompt that still fills the context is check_prompt_length's to refuse.
// Returns whether tokens were removed through `cut`.
Status truncate_prompt(std::vector<int32_t>& tokens, std::optional<int32_t> keep, int64_t context, int32_t bos = -1,
                       bool* cut = nullptr);

// A prompt of `tokens` tokens. `context_can_grow`: the context was set below the model's own (--max-model-len).
Status check_prompt_length(int64_t tokens, int64_t context, bool context_can_grow = false);

}  // namespace kvshare
