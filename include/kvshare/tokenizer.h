// The model's tokenizer as a library user sees it: text to token ids and back, the special tokens, the
// vocabulary, and the model's chat template. Engine::tokenizer() hands one out; Tokenizer::load reads one from a
// model path without its weights.
//
//   const kvshare::Tokenizer& tok = engine->tokenizer();
//   std::vector<int32_t> ids = tok.encode("Once upon a time");
//   std::string text = tok.decode(ids);
//   kvshare::Result<std::string> prompt = tok.apply_chat_template(R"([{"role": "user", "content": "Hi"}])");
//
// A Tokenizer is immutable: it may be used from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvshare/status.h"

namespace kvshare {

// How Tokenizer::apply_chat_template renders a conversation (the arguments of Hugging Face's apply_chat_template).
struct ChatTemplateOptions {
  // End with the opening of the assistant's turn, so the model writes its reply.
  bool add_generation_prompt = true;
  // End the prompt inside the final message (the text after its content is cut off), so the model continues
  // that message, e.g. a partly written assistant reply. Needs add_generation_prompt = false.
  bool continue_final_message = false;
  // A Jinja template to use instead of the model's, or the name of one the model lists ("tool_use", "rag"); "": the
  // model's own, as transformers picks it (its "tool_use" template when the conversation has tools and the model
  // lists one, else its default). A Jinja template given here sees the model's BOS/EOS texts.
  // ({} so that a designated initializer that leaves it out, {.add_generation_prompt = false}, draws no
  // -Wmissing-field-initializers warning.)
  std::string chat_template{};
  // Tool calls' arguments in the messages given as JSON text (as OpenAI's clients send them) reach the template as
  // objects, as vLLM's chat (and kvshare's server and batch chat lines) pass them; off, they stay as given, as Hugging
  // Face's apply_chat_template leaves them.
  bool tool_arguments_as_objects = false;
};

class Tokenizer {
 public:
  // The tokenizer (and chat template) of a model path as Engine reads it: a Hugging Face folder (tokenizer.json,
  // or vocab.json + merges.txt; tokenizer_config.json) or a .gguf file (also a vocabulary-only one).
  static Result<std::unique_ptr<Tokenizer>> load(const std::string& path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. add_special: BOS (and EOS) as the model's files say. parse_special: text that spells a
  // special token ("<|eot_id|>") becomes that token; when false it is tokenized as plain text.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = true) const;
  // A lower bound on encode(text).size() for any text of `text_bytes` bytes, known without encoding (0 when the
  // vocabulary gives none): for refusing text far longer than a context before spending seconds on it.
  int64_t min_tokens(size_t text_bytes) const;
  // The text of `ids`, valid UTF-8 (bytes that form no character become U+FFFD); skip_special drops BOS, EOS,
  // chat markers and the unknown token. Ids outside the vocabulary decode to nothing.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw bytes one token stands for, as llama.cpp's token_to_piece ("" outside the vocabulary; a token may
  // hold part of a UTF-8 character); for special tokens, their text ("<s>").
  std::string token_piece(int32_t id) const;
  // The token as the vocabulary spells it ("Ġworld" in GPT-2's byte alphabet, "▁world", "<0x0A>"), as Hugging
  // Face's convert_ids_to_tokens; "" outside the vocabulary.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;  // BOS, EOS, chat markers, unknown

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;  // -1 when the model has none
  // Every id that ends generation: EOS, end-of-turn tokens, and those generation_config.json or the GGUF lists.
  std::vector<int32_t> eos_ids() const;
  bool adds_bos() const;  // encode(..., add_special=true) starts with BOS

  // Whether the model has a chat template (tokenizer_config.json's chat_template, chat_template.jinja or
  // .json beside it, or the GGUF's tokenizer.chat_template).
  bool has_chat_template() const;
  // Why has_chat_template() is false: not_found when the model has none, else the error its template gave when it
  // was read (a syntax error with its line and column, a chat_template that is not text). OK when it has one.
  Status chat_template_status() const;
  // The prompt the chat template makes of `conversation`, a JSON text: a list of messages
  // ([{"role": "user", "content": "..."}]) or an object holding "messages" and any other variables the template
  // reads ("tools", "documents", "enable_thinking", ...), rendered exactly as Hugging Face renders it.
  // invalid_argument for bad JSON, a model without a template (and none in options), a template error (its
  // message with line and column; raise_exception included), or continue_final_message without a final message
  // whose text the prompt shows.
  Result<std::string> apply_chat_template(std::string_view conversation, const ChatTemplateOptions& options = {}) const;

  // Internal: Engine and load() make Tokenizers (Impl is defined in src/engine/tokenizer_api.cc).
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvshare
