#include "chat/messages.h"

namespace kvshare {

bool read_chat_messages(const nlohmann::ordered_json& given, nlohmann::ordered_json& messages, std::string& error) {
  if (!given.is_array() || given.empty()) {
    error = "messages must be a non-empty list of {\"role\", \"content\"} objects";
    return false;
  }
  if (given.size() > kMaxChatMessages) {
    error = "a conversation holds at most " + std::to_string(kMaxChatMessages) + " messages";
    return false;
  }
  messages = nlohmann::ordered_json::array();
  for (size_t i = 0; i < given.size(); ++i) {
    const nlohmann::ordered_json& m = given[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      error = where + " must be an object";
      return false;
    }
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      error = where + ".role must be a string";
      return false;
    }
    nlohmann::ordered_json msg = m;
    const auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (const nlohmann::ordered_json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          error = where + ".content: only parts of type \"text\" are supported by this model";
          return false;
        }
        if (!text.empty()) text += "\n";
        text += part["text"].get<std::string>();
      }
      msg["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      error = where + ".content must be a string or a list of text parts";
      return false;
    }
    messages.push_back(std::move(msg));
  }
  return true;
}

}  // namespace kvshare
