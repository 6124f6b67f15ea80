// One line of a batch job's JSONL input (`kvshare generate --input`) as a Request.
#pragma once

#include <cstdint>
#include <istream>
#include <optional>
#include <string>

#include "kvshare/engine.h"

namespace kvshare::cli {

// The longest request line accepted; a longer one is an error naming this limit.
constexpr size_t kMaxRequestLineBytes = 64u << 20;
// The longest line read to its end: past it, a line with no newline (a device such as /dev/zero, a binary file)
// ends the reading.
constexpr uint64_t kMaxSkippedLineBytes = uint64_t{1} << 30;

// The error for a line of `bytes` bytes: over kMaxRequestLineBytes, invalid_argument naming the limit.
Status check_request_line_size(uint64_t bytes);

// Reads the next line of `in` (its newline dropped) into `line`, keeping at most kMaxRequestLineBytes of it: a
// longer line is read to its end but not kept, so no line fills memory. `bytes` is the line's whole length.
// kEnd at the end of the input; kEndless for a line with no newline within kMaxSkippedLineBytes.
enum class LineRead { kLine, kEnd, kEndless };
LineRead read_request_line(std::istream& in, std::string& line, uint64_t& bytes);

// A chat line's conversation, rendered with the model's chat template once the engine is up (the batch job does it
// with Tokenizer::apply_chat_template, then tokenizes as vLLM tokenizes a chat: no BOS added, the template writes its
// own special tokens).
struct ChatLine {
  std::string conversation;  // {"messages": [...]} with tools, documents and chat_template_kwargs' variables
  ChatTemplateOptions options;
};

// `line` -> a Request, with `defaults` (the command line's sampling flags) for the fields it does not set:
// {"prompt": "..."}, {"prompt_token_ids": [...]} or {"messages": [...]} (a chat line: OpenAI's messages, with
// add_generation_prompt, continue_final_message, chat_template_kwargs, tools and documents as the server takes them;
// `chat` is then set and the Request's prompt left for the batch job to render), optionally with max_tokens,
// temperature, top_p, top_k, seed, ignore_eos, stop_token_ids, cache_salt and vLLM's further sampling fields (min_p,
// penalties, min_tokens, n, logprobs, prompt_logprobs, stop, include_stop_str_in_output, logit_bias,
// allowed_token_ids, bad_words, skip_special_tokens, truncate_prompt_tokens). Anything else wrong (not JSON, a field
// of the wrong type or out of range) is invalid_argument saying which field and what it must be.
Result<Request> parse_request_line(const std::string& line, const SamplingParams& defaults,
                                   std::optional<ChatLine>* chat = nullptr);

}  // namespace kvshare::cli
