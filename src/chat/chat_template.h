// A model's chat template: where it comes from (tokenizer_config.json's `chat_template`, a string or a list of
// {name, template} of which "default" is used; chat_template.jinja / chat_template.json beside it; a GGUF's
// `tokenizer.chat_template`), its BOS/EOS token texts, and rendering a conversation with it exactly as
// Hugging Face's own implementation does (see jinja.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "chat/jinja.h"
#include "core/status.h"

namespace kvshare {

class ChatTemplate {
 public:
  // Parses `source`; a syntax error is invalid_argument with its line and column.
  static Result<ChatTemplate> from_string(const std::string& source, std::string bos_token = "",
                                          std::string eos_token = "");
  // A Hugging Face folder or a .gguf file. not_found when the model has no chat template.
  static Result<ChatTemplate> from_model(const std::string& path);

  // Renders `conversation`: a JSON list of messages ({"role", "content", ...}), or an object holding
  // "messages" and any other variables the template reads ("tools", "documents", "enable_thinking", ...).
  // add_generation_prompt, bos_token and eos_token are set from the arguments and this template.
  // Template errors (raise_exception included) are invalid_argument with the line and column.
  Result<std::string> apply(const nlohmann::ordered_json& conversation, bool add_generation_prompt,
                            const jinja::RenderOptions& options = {}) const;

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

}  // namespace kvshare
