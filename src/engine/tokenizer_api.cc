// kvshare::Tokenizer: the internal BpeTokenizer behind the public class, and chat templates applied as Hugging
// Face's apply_chat_template does (continue_final_message included).
#include "engine/tokenizer_api.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "chat/chat_template.h"
#include "chat/final_message.h"
#include "engine/loader.h"
#include "formats/json_error.h"

namespace kvshare {

struct Tokenizer::Impl {
  std::shared_ptr<const BpeTokenizer> tok;
  Result<ModelChatTemplates> chat_template = Status(StatusCode::kNotFound, "not read");  // the model's
};

std::unique_ptr<Tokenizer> make_public_tokenizer(std::shared_ptr<const BpeTokenizer> tokenizer,
                                                 const std::string& model_path) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  impl->tok = std::move(tokenizer);
  impl->chat_template = ModelChatTemplates::from_model(model_path);
  return std::make_unique<Tokenizer>(std::move(impl));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::load(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok, load_tokenizer(path));
  return make_public_tokenizer(std::move(tok), path);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  return impl_->tok->encode(text, add_special, parse_special);
}

int64_t Tokenizer::min_tokens(size_t text_bytes) const { return impl_->tok->min_tokens(text_bytes); }
std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  return impl_->tok->decode(ids, skip_special);
}
std::string Tokenizer::token_piece(int32_t id) const { return impl_->tok->token_piece(id); }
std::string Tokenizer::id_to_token(int32_t id) const { return impl_->tok->id_to_token(id); }
bool Tokenizer::is_special(int32_t id) const { return impl_->tok->is_special(id); }
int32_t Tokenizer::vocab_size() const { return impl_->tok->vocab_size(); }
int32_t Tokenizer::bos_id() const { return impl_->tok->bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->tok->eos_id(); }
std::vector<int32_t> Tokenizer::eos_ids() const { return impl_->tok->eos_ids(); }
bool Tokenizer::adds_bos() const { return impl_->tok->adds_bos(); }

bool Tokenizer::has_chat_template() const { return impl_->chat_template.ok(); }
Status Tokenizer::chat_template_status() const {
  return impl_->chat_template.ok() ? Status() : impl_->chat_template.status();
}

Result<std::string> Tokenizer::apply_chat_template(std::string_view conversation,
                                                   const ChatTemplateOptions& options) const {
  if (options.continue_final_message && options.add_generation_prompt)
    return invalid_argument("continue_final_message and add_generation_prompt cannot both be on: the first leaves "
                            "the final message open, the second starts a new assistant turn after it");
  const auto json = nlohmann::ordered_json::parse(conversation.begin(), conversation.end(), nullptr,
                                                  /*allow_exceptions=*/false);
  if (json.is_discarded())
    return invalid_argument("the conversation is not valid JSON" + json_syntax_error(conversation) +
                            " (a list of messages or an object with \"messages\")");

  const Result<ModelChatTemplates>& own = impl_->chat_template;
  const bool has_tools = json.is_object() && json.contains("tools") && !json.at("tools").is_null();
  std::optional<ChatTemplate> given;
  const ChatTemplate* tpl = nullptr;
  if (!options.chat_template.empty() && !(own.ok() && own->has(options.chat_template))) {
    // Jinja source. BOS/EOS texts from the model's own template, else from the tokenizer.
    const BpeTokenizer& t = *impl_->tok;
    const Result<const ChatTemplate*> model_tpl = own.ok() ? own->pick("", has_tools) : own.status();
    std::string bos = model_tpl.ok() ? (*model_tpl)->bos_token() : (t.bos_id() >= 0 ? t.token_piece(t.bos_id()) : "");
    std::string eos = model_tpl.ok() ? (*model_tpl)->eos_token() : (t.eos_id() >= 0 ? t.token_piece(t.eos_id()) : "");
    KV_ASSIGN_OR_RETURN(given, ChatTemplate::from_string(options.chat_template, std::move(bos), std::move(eos)));
    tpl = &*given;
  } else if (!own.ok()) {
    if (own.status().code() == StatusCode::kNotFound)
      return invalid_argument("the model has no chat template (" + own.status().message() +
                              "); pass one as chat_template (a Jinja string)");
    return own.status();
  } else {
    KV_ASSIGN_OR_RETURN(tpl, own->pick(options.chat_template, has_tools));
  }
  KV_ASSIGN_OR_RETURN(std::string prompt, tpl->apply(json, options.add_generation_prompt, {},
                                                              options.tool_arguments_as_objects));
  if (!options.continue_final_message) return prompt;
  return cut_after_final_message(std::move(prompt), json);
}

}  // namespace kvshare
