// A chat's messages as a request gives them (OpenAI's [{"role", "content"}, ...]), checked and made ready for a chat
// template: the server's /v1/chat/completions and a batch job's chat lines read them the same way.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace kvshare {

constexpr size_t kMaxChatMessages = 4096;  // messages in one conversation

// `given` as the template's `messages`: a non-empty list of at most kMaxChatMessages objects with a string role;
// content that is a list of parts becomes their text joined by newlines, as vLLM does for text-only models (other
// parts are refused). Other keys (tool_calls, name, ...) are kept. On error, false and `error` says which message
// and what it must be ("messages[2].role must be a string").
bool read_chat_messages(const nlohmann::ordered_json& given, nlohmann::ordered_json& messages, std::string& error);

}  // namespace kvshare
