// A model's chat template: where it comes from (tokenizer_config.json's `chat_template`, a string or a list of
// {name, template} of which "default" is used; chat_template.jinja / chat_template.json beside it; a GGUF's
// `tokenizer.chat_template`), its BOS/EOS token texts, and rendering a conversation with it exactly as
// Hugging Face's own implementation does (see jinja.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja.h"
#include "core/status.h"

namespace kvshare {

class ChatTemplate {
 public:
  // Parses `source`; a syntax error is invalid_argument with its line and column.
  static Result<ChatTemplate> from_string(const std::string& source, std::string bos_token = "",
                                          std::string eos_token = "");
  // A Hugging Face folder or a .gguf file: its default template (ModelChatTemplates picks among named ones).
  // not_found when the model has no chat template.
  static Result<ChatTemplate> from_model(const std::string& path);

  // Renders `conversation`: a JSON list of messages ({"role", "content", ...}), or an object holding
  // "messages" and any other variables the template reads ("tools", "documents", "enable_thinking", ...).
  // add_generation_prompt, bos_token and eos_token are set from the arguments and this template.
  // Template errors (raise_exception included) are invalid_argument with the line and column.
  // `tool_arguments_as_objects`: the messages' tool calls' arguments given as JSON text, as OpenAI's clients send
  // them, reach the template as objects, as vLLM passes them (tool_arguments_as_objects below); off, as Hugging
  // Face's apply_chat_template, they stay as given.
  Result<std::string> apply(const nlohmann::ordered_json& conversation, bool add_generation_prompt,
                            const jinja::RenderOptions& options = {}, bool tool_arguments_as_objects = false) const;

  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  void set_bos_token(std::string s) { bos_token_ = std::move(s); }
  void set_eos_token(std::string s) { eos_token_ = std::move(s); }

 private:
  std::string source_;
  jinja::Template template_;
  std::string bos_token_, eos_token_;
};

// The source of a chat template named on a command line (--chat-template, --template): read up to the template
// limit (jinja::Limits::max_template_bytes), so a device or a large file mistaken for a template stops there. An
// empty file is refused: it would silently leave the model's own template (or none) in use.
Result<std::string> read_chat_template_file(const std::string& path);

// Where `messages` (the template's variable) holds tool calls whose function.arguments is text holding a JSON
// object, the object takes its place: templates write arguments with tojson or walk them as a mapping (Hugging
// Face's convention), and vLLM parses the text OpenAI's clients send. The object keeps its text, which it is where a
// template makes it a string ('```json\n' + arguments, as DeepSeek's templates write it). The text stays text where
// the object would not write back the same JSON (integers past 2^53, which a double rounds; keys such as "0", which
// JavaScript's order, and so the reference's, puts first) or nests more than 64 levels.
void tool_arguments_as_objects(jinja::Value& messages);

// A model's chat templates. Most models have one; some list several by name (tokenizer_config.json's
// [{"name": "default", "template": ...}, {"name": "tool_use", ...}, {"name": "rag", ...}], as Command-R and Hermes 2
// Pro ship; a GGUF's tokenizer.chat_templates names and tokenizer.chat_template.NAME sources).
class ModelChatTemplates {
 public:
  // not_found when the model has no chat template.
  static Result<ModelChatTemplates> from_model(const std::string& path);
  static ModelChatTemplates single(ChatTemplate t);
  static ModelChatTemplates from_parsed(std::vector<std::pair<std::string, ChatTemplate>> templates);

  // The template for a conversation, as transformers' get_chat_template picks it: `name` when the model lists
  // it; otherwise "tool_use" when the conversation has tools and the model lists one, else "default" (or the
  // model's only template). not_found naming the model's templates when there is none to pick.
  Result<const ChatTemplate*> pick(const std::string& name, bool has_tools) const;
  bool has(const std::string& name) const;
  // Whether one of the templates' sources holds `text`.
  bool mention(std::string_view text) const;

 private:
  const ChatTemplate* find(const std::string& name) const;  // the template of that name (never the unnamed one)
  std::vector<std::pair<std::string, ChatTemplate>> templates_;  // one named "" when the model has a single one
};

}  // namespace kvshare
