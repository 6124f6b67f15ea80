// continue_final_message, as Hugging Face's apply_chat_template does it: the rendered prompt ends inside the
// final message, so that the model continues that message instead of starting a new turn. One implementation for
// the public Tokenizer (and so the Python module) and the server.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"

namespace kvshare {

// `rendered` (the conversation rendered without a generation prompt) cut right after the final message's text:
// its "content" string, or the last text part of a list of parts. The template may have trimmed the text's
// surrounding whitespace, so the text is found stripped, and the cut keeps its trailing whitespace only where
// the template kept it. `conversation` is a list of messages or an object with "messages". An error when the
// final message has no text, or its text does not appear in `rendered`.
Result<std::string> cut_after_final_message(std::string rendered, const nlohmann::ordered_json& conversation);

}  // namespace kvshare
