// How a request's tokens are chosen and when its generation stops. Field names and meanings follow vLLM's
// SamplingParams and OpenAI's API; every default leaves the field off.
//
// Each step, the processors run in vLLM's order on a copy of the model's logits:
//   logprobs are taken first, from the raw logits (log-softmax, before any processor);
//   allowed_token_ids (every other token masked) -> choice, json_object or json_schema (tokens that break it masked) ->
//   bad_words (the token that would complete one masked) ->
//   min_tokens (EOS and stop tokens masked) -> logit_bias -> repetition, frequency, presence penalties;
//   then greedy (temperature 0) takes the largest, or: temperature -> min_p -> top_k -> top_p -> draw.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kvshare/status.h"

namespace kvshare {

struct SamplingParams {
  float temperature = 1.0f;       // 0 (or below 1e-5, as in vLLM) = greedy
  int32_t top_k = 0;              // 0 or -1 = off
  float top_p = 1.0f;             // 1 = off
  float min_p = 0.0f;             // [0, 1]: drop tokens less likely than min_p × the likeliest one; 0 = off
  std::optional<uint64_t> seed;   // none: derived from the engine's seed and the request's id
  int32_t max_tokens = 16;        // tokens to generate at most
  int32_t min_tokens = 0;         // [0, max_tokens]: EOS and stop_token_ids cannot be sampled, and stop strings
                                  // do not match, before this many tokens are generated
  bool ignore_eos = false;        // keep going past the model's end-of-sequence tokens
  // Further tokens that end generation. The token that ends it (one of these, or an EOS) is kept in token_ids
  // but not in the text unless include_stop_str_in_output, as in vLLM.
  std::vector<int32_t> stop_token_ids;
  // Strings that end generation when they appear in the generated text, also across token boundaries. The
  // text ends before the stop string (with it when include_stop_str_in_output); token_ids keep every token.
  std::vector<std::string> stop;
  bool include_stop_str_in_output = false;

  // Penalties, as OpenAI's (presence, frequency: [-2, 2], 0 = off, over the generated tokens: the logit of a
  // token generated c times loses frequency_penalty × c, plus presence_penalty if c > 0) and as Hugging
  // Face's (repetition: > 0, 1 = off, over prompt and generated tokens: a positive logit is divided by it, a
  // negative one multiplied).
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  // Token id -> bias in [-100, 100] added to its logit (ids must be in the vocabulary).
  std::map<int32_t, float> logit_bias;
  // When set, only these tokens can be sampled (vLLM's allowed_token_ids: a label set for classification, say):
  // every other token's logit is -inf. Not empty; ids must be in the vocabulary. Logprobs still come from the
  // raw logits.
  std::optional<std::vector<int32_t>> allowed_token_ids;
  // Words and phrases that must not be generated (vLLM's bad_words). The engine tokenizes each (leading
  // whitespace dropped) alone and after a space, and keeps the second too when it is as many tokens and starts
  // with another one (the word in mid-text); the last token of such a sequence is masked whenever the tokens
  // generated just before it are the rest of it. Only generated tokens count, not the prompt. At most
  // kMaxBadWords, each 1 to kMaxBadWordBytes bytes and not only (ASCII) whitespace; once tokenized, at most
  // kMaxBadWords sequences (as vLLM counts them) of kMaxBadWordTokens tokens in all.
  std::vector<std::string> bad_words;
  // When set (vLLM's structured_outputs.choice; the server's guided_choice), the generated text is one of these
  // strings, for a job that labels or classifies: each token is drawn among those that keep the text the start of
  // a choice (the model may spell it with any tokens), and the request stops with kStop once the text is a choice
  // that no other one continues. Where one does ("yes" and "yes, sir"), the model's EOS may end it at "yes" (unless
  // ignore_eos). Other stops still apply (stop strings, stop_token_ids, max_tokens: a choice cut short ends with
  // kLength). Not empty; at most kMaxChoices strings of UTF-8, none empty, kMaxChoiceBytes in all; not with
  // min_tokens. Logprobs still come from the raw logits.
  std::optional<std::vector<std::string>> choice;
  // When true (OpenAI's response_format {"type": "json_object"}, vLLM's structured_outputs.json_object), the
  // generated text is one JSON object (RFC 8259: valid UTF-8, escapes and surrogate pairs as strict parsers take
  // them, at most 128 levels deep; between its tokens one space, or a newline and up to 20 spaces or tabs): each
  // token is drawn among those that keep the text the start of one, and the request stops with kStop once the
  // object closes. Other stops still apply (max_tokens: an object cut short ends with kLength, so leave room). Not
  // with choice, json_schema or min_tokens. Logprobs still come from the raw logits.
  bool json_object = false;
  // When set (OpenAI's response_format {"type": "json_schema", "json_schema": {"schema": ...}}, vLLM's
  // structured_outputs.json), a JSON Schema as JSON text: the generated text is one JSON value that follows it, as
  // json_object's follows "any object", with the same whitespace and stops. Objects are written with their
  // properties in the schema's order, and without keys it does not name. What a schema may say is listed in
  // docs/limits.md (type, properties, required, items, enum, anyOf, $ref and others); a keyword beyond that, such as
  // pattern or minimum, is refused when the request is added, as is a schema longer than kMaxJsonSchemaBytes. Not
  // with choice, json_object or min_tokens.
  std::optional<std::string> json_schema;
  // With json_object or json_schema: no whitespace between JSON's tokens, the compact form (vLLM's
  // structured_outputs.disable_any_whitespace); a model that likes newlines cannot spend tokens on them.
  bool disable_any_whitespace = false;
  // When set, a longer prompt keeps only its last truncate_prompt_tokens tokens (vLLM's; -1: as many as the
  // context holds with one token to generate). Text up to kTruncatedTextContexts contexts long is then taken
  // (context_limit.h).
  std::optional<int32_t> truncate_prompt_tokens;
  // Whether Output::text leaves out the special tokens (BOS, EOS, chat markers) that the model generates, as
  // vLLM's default; token_ids always hold them.
  bool skip_special_tokens = true;

  int32_t n = 1;  // [1, 128] completions of the prompt; they share its KV blocks (see Engine and Output::index)
  // When set (0 to 20): every generated token comes back with its log-probability and the `*logprobs` most
  // likely tokens' (Output::logprobs), from the model's raw log-softmax.
  std::optional<int32_t> logprobs;
  // When set (0 to 20): the prompt's tokens come back with their log-probabilities too, as vLLM's
  // prompt_logprobs (Output::prompt_logprobs): each prompt token after the first, given the tokens before it,
  // and the `*prompt_logprobs` most likely tokens at its position, from the model's raw log-softmax. A cached
  // prefix holds K/V but no logits, so such a request computes its whole prompt (it still shares the blocks it
  // computes with later requests).
  std::optional<int32_t> prompt_logprobs;

  static constexpr int32_t kMaxN = 128;
  static constexpr int32_t kMaxLogprobs = 20;
  static constexpr size_t kMaxBadWords = 128;      // words, and token sequences: vLLM's VLLM_MAX_NUM_BAD_WORDS
  static constexpr size_t kMaxBadWordBytes = 1024;
  static constexpr size_t kMaxBadWordTokens = 1024;  // as vLLM's MAX_BAD_WORDS_TOTAL_TOKENS
  static constexpr size_t kMaxChoices = 1024;
  static constexpr size_t kMaxJsonSchemaBytes = 65536;  // compiling a schema is linear in this
  static constexpr size_t kMaxChoiceBytes = 16384;  // all choices together: checking them is linear in this

  // The outputs Engine::generate gives a request with these parameters: n, or 1 (its error) when n is out of range.
  int32_t num_outputs() const { return n >= 1 && n <= kMaxN ? n : 1; }

  // Says which parameter is wrong and its valid range. (Token ids are checked against the vocabulary when
  // the engine takes the request.)
  Status validate() const;
};

}  // namespace kvshare
