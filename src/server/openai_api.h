// The OpenAI API's shapes: request bodies of /v1/completions and /v1/chat/completions parsed and checked
// into what the engine needs, and the engine's outputs written back as OpenAI's JSON (whole responses and
// server-sent-event chunks). Pure functions of their inputs: no sockets, no engine, so they are tested and
// fuzzed alone. Field names and meanings follow OpenAI's API reference and vLLM's extensions (top_k, min_p,
// repetition_penalty, min_tokens, stop_token_ids, ignore_eos, allowed_token_ids, skip_special_tokens, cache_salt, ...).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvshare/engine.h"
#include "server/tool_calls.h"

namespace kvshare::server {

using json = nlohmann::ordered_json;

// An error as the API reports it: the HTTP status and OpenAI's error object.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";  // or authentication_error, not_found_error, server_error, ...
  std::string param;                           // the field at fault, when there is one
  std::string code;                            // model_not_found, context_length_exceeded, ...
  json to_json() const;                        // {"error": {"message", "type", "param", "code"}}
};
ApiError api_error(int status, std::string type, std::string message, std::string code = "");
ApiError bad_request(std::string message, std::string param = "");  // 400, invalid_request_error
// The engine's refusal or failure of a request as an API error: the client's fault (400; a prompt over the
// context is context_length_exceeded), a full cache (503), or the server's (500: a model that computed NaN).
ApiError from_status(const Status& st);

// A prompt as the request gave it: text (to tokenize) or token ids.
struct PromptInput {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> token_ids;
  bool truncated = false;  // truncate_prompt_tokens removed some: `text` is no longer the prompt that ran
};

// A parsed /v1/completions or /v1/chat/completions request.
struct GenerationCall {
  bool chat = false;
  std::string model;                // "" when the request named none
  std::vector<PromptInput> prompts;  // completions: one or more; chat: filled after the template renders
  json messages;                    // chat: the conversation
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  json chat_template_kwargs = json::object();  // further variables for the template (enable_thinking, ...)
  json tools;      // chat: the function definitions the template lists (null: none), as HF's apply_chat_template
  json documents;  // chat: documents for retrieval-augmented templates (null: none), likewise
  // chat: tool_choice (server/tool_calls.h). kNamed: one call of `tool_name`, the output its arguments; kRequired:
  // one or more calls of the tools; the reply then carries tool_calls, not content. kAuto ("auto", or no
  // tool_choice with tools): the model chooses, and a server with a tool-call parser reads its calls out of its
  // text (ResponseContext::tool_parser); without one, the reply is text. "none", or no tools: kText.
  enum class ToolChoice : uint8_t { kText, kAuto, kNamed, kRequired };
  ToolChoice tool_choice = ToolChoice::kText;
  std::string tool_name;
  bool forces_tool_calls() const { return tool_choice == ToolChoice::kNamed || tool_choice == ToolChoice::kRequired; }
  bool max_tokens_given = false;    // chat: without it, generation may fill the context
  SamplingParams params;            // params.n: completions the engine runs per prompt (best_of of them)
  int32_t n = 1;                    // choices returned per prompt: the n of the best_of with the highest
                                    // cumulative logprob when best_of > n, else all
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // stream_options.continuous_usage_stats (vLLM's): with include_usage, every chunk carries its choice's usage so far
  bool continuous_usage = false;
  bool echo = false;           // completions: the prompt's text before each completion's
  int32_t top_logprobs = -1;   // completions: `logprobs`; chat: `top_logprobs` when `logprobs` is true; -1 off
  int32_t prompt_logprobs = -1;  // vLLM's prompt_logprobs: alternatives per prompt token (0 to 20); -1 off
  bool return_token_ids = false;  // vLLM's: token_ids (and prompt_token_ids) beside the text
  bool add_special_tokens = true;  // vLLM's: the tokenizer adds BOS to the text (default: completions yes, chat no)
  bool tokens_as_ids = false;     // vLLM's return_tokens_as_token_ids: logprobs name tokens "token_id:N"
  bool best_of() const { return params.n > n; }
  // Completions with echo and logprobs list the prompt's tokens too (the engine's prompt_logprobs).
  bool echo_logprobs() const { return !chat && echo && top_logprobs >= 0; }
  // Whether the response needs the prompt's logprobs (echo with logprobs, or prompt_logprobs).
  bool wants_prompt_logprobs() const { return echo_logprobs() || prompt_logprobs >= 0; }
  std::string cache_salt;
  // The field that asked for a choice or JSON mode (guided_choice, structured_outputs.choice, response_format,
  // structured_outputs.json_object), named by a 400 when the engine refuses the constraint for this model's
  // vocabulary (a choice it cannot spell, a vocabulary that cannot write JSON); "" without one.
  std::string constraint_field;
};

// Parses a request body. `chat` picks the endpoint's fields. Errors name the field and say what is valid.
bool parse_generation_call(const std::string& body, bool chat, GenerationCall& call, ApiError& error);

// Parses a JSON body into an object (the other endpoints), or says why it is not one.
bool parse_json_object(const std::string& body, json& object, ApiError& error);

// What the response writers need to know about the server and the tokenizer.
struct ResponseContext {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
  std::function<std::string(int32_t)> token_piece;  // a token's raw bytes (Tokenizer::token_piece), for logprobs
  // How the model writes tool calls of its own choosing (kvshare serve --tool-call-parser): chats with tool_choice
  // "auto" have their calls read out of their text. kNone: their text is the reply.
  ToolCallParser tool_parser = ToolCallParser::kNone;
  bool reads_tool_calls(const GenerationCall& call) const {
    return call.chat && call.tool_choice == GenerationCall::ToolChoice::kAuto && tool_parser != ToolCallParser::kNone;
  }
};

// A prompt's tokens and their logprobs (the first token has none), for echo with logprobs and prompt_logprobs.
struct PromptLogprobs {
  std::vector<int32_t> token_ids;
  std::vector<GeneratedTokenLogprobs> logprobs;  // token_ids.size() - 1 entries: entry i is token i + 1's
};

// One choice being built from a completion's Outputs.
struct ChoiceState {
  int32_t index = 0;            // the choice's index in the response (prompt i, completion j: i * n + j)
  std::string echo_text;        // completions with echo: the prompt's text
  size_t sent_text = 0;         // streaming: bytes of Output::text already sent
  // Generated tokens' logprobs received from the engine (take_logprobs) and not yet sent: for a stream, those
  // of the next event; for a whole response, all of them. logprobs[0] is generated token logprobs_begin's.
  std::vector<GeneratedTokenLogprobs> logprobs;
  size_t logprobs_begin = 0;
  size_t text_offset = 0;       // completions' logprobs: text_offset of the next token listed
  std::shared_ptr<const PromptLogprobs> prompt;  // wants_prompt_logprobs(): the prompt's, once the engine gave them
  bool sent_role = false;       // chat streaming: the first delta (role) was sent
  bool sent_first = false;      // streaming: the choice's first event was sent (with echo_text, for completions)
  size_t sent_tokens = 0;       // streaming with return_token_ids: generated tokens already listed
  bool finished = false;
};

// Usage of a whole response: prompt tokens counted once per prompt, completions' tokens summed.
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  json to_json() const;
};

// Moves the generated tokens' logprobs of `output` that `state` does not hold yet into it, whether the output
// carries new ones only (a step's) or all (a finished one's): O(new tokens).
void take_logprobs(ChoiceState& state, Output& output);

// The sum of the chosen tokens' logprobs `state` holds (a whole response's: all of them), for best_of.
double cumulative_logprob(const ChoiceState& state);

// OpenAI's finish_reason for an Output: "stop", "length", "abort", or null while unfinished.
json finish_reason_json(const Output& output);

// The whole (non-streaming) response.
json completion_response(const ResponseContext& ctx, const GenerationCall& call,
                         const std::vector<std::pair<ChoiceState, Output>>& choices, const Usage& usage);
// One streaming chunk with what `output` added since `state` last sent (text delta, the logprobs `state`
// holds, finish); json() (null) when there is nothing new to send, or when echo with logprobs waits for the
// prompt's logprobs. Advances `state`.
json stream_chunk(const ResponseContext& ctx, const GenerationCall& call, ChoiceState& state, const Output& output);
// The last chunk of a stream when stream_options.include_usage: no choices, the usage.
json usage_chunk(const ResponseContext& ctx, const GenerationCall& call, const Usage& usage);

}  // namespace kvshare::server
