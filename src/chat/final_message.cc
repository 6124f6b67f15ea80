#include "chat/final_message.h"

#include <optional>
#include <string_view>

namespace kvshare {

namespace {

// The final message's text, which continue_final_message leaves open: its "content" string, or the last text
// part of a list of parts ([{"type": "text", "text": ...}]). None when there is no such text.
std::optional<std::string> final_message_text(const nlohmann::ordered_json& conversation) {
  const nlohmann::ordered_json* messages = &conversation;
  if (conversation.is_object()) {
    auto it = conversation.find("messages");
    if (it == conversation.end()) return std::nullopt;
    messages = &*it;
  }
  if (!messages->is_array() || messages->empty() || !messages->back().is_object()) return std::nullopt;
  const auto content = messages->back().find("content");
  if (content == messages->back().end()) return std::nullopt;
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) return std::nullopt;
  for (auto part = content->rbegin(); part != content->rend(); ++part)
    if (part->is_object() && part->contains("text") && (*part)["text"].is_string())
      return (*part)["text"].get<std::string>();
  return std::nullopt;
}

std::string_view strip(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(kSpace) + 1 - begin);
}

}  // namespace

Result<std::string> cut_after_final_message(std::string rendered, const nlohmann::ordered_json& conversation) {
  const std::optional<std::string> text = final_message_text(conversation);
  if (!text)
    return invalid_argument("continue_final_message: the final message has no text to continue (a \"content\" "
                            "string, or a list of parts with a \"text\" part)");
  const std::string_view core = strip(*text);
  const size_t at = rendered.rfind(core);
  if (core.empty() || at == std::string::npos)
    return invalid_argument("continue_final_message: the final message's text does not appear in the prompt the "
                            "chat template made of it (the template rewrites it, or it is empty); give a final "
                            "message whose text the template shows, or leave continue_final_message off");
  const std::string_view with_trailing =
      std::string_view(*text).substr(static_cast<size_t>(core.data() - text->data()));
  const bool kept_trailing = std::string_view(rendered).substr(at).starts_with(with_trailing);
  rendered.resize(at + (kept_trailing ? with_trailing.size() : core.size()));
  return rendered;
}

}  // namespace kvshare
