// Tool calls in a chat reply, two ways.
// Forced (tool_choice naming a function, or "required"), as vLLM does them without a model-specific parser: the
// output is constrained to a JSON schema made of the tools' parameters, and read back into the reply's tool_calls.
// Chosen by the model (tool_choice "auto", kvshare serve --tool-call-parser): the model writes its calls in its own
// format, which a parser reads out of the text (ToolCallParser). "none", and "auto" without a parser, leave the
// reply as text.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kvshare::server {

using json = nlohmann::ordered_json;

// The schema the output follows, or an error message naming what is wrong with `tools` (OpenAI's
// [{"type": "function", "function": {"name", "description", "parameters"}}]) for it.
// `name` given (tool_choice {"type": "function", "function": {"name": ...}}): the output is that function's
// arguments, one object that follows its parameters ({} for a function without them).
// `name` null (tool_choice "required"): the output is a non-empty list of calls, [{"name": ..., "parameters":
// {...}}] (vLLM's form), each of one of the tools with arguments that follow its parameters. The tools' $defs are
// gathered at the top; a $ref elsewhere than into $defs or definitions is refused, since it would point elsewhere
// once the tools are put together.
bool tool_call_schema(const json& tools, const std::string* name, std::string& schema, std::string& error);

// A reply's tool calls ([{"id", "type": "function", "function": {"name", "arguments"}}]) read from its text:
// `name` given, one call of it whose arguments are the text (as generated, even if cut short); else the calls the
// text lists, none when it is not a whole list (cut short). Each id is `id_prefix` and the call's index.
json tool_calls_of(const std::string& text, const std::string* name, const std::string& id_prefix);

// The formats in which models write tool calls of their own choosing, by vLLM's --tool-call-parser names:
//   hermes       <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, once per call (Hermes 2 Pro, Qwen2.5,
//                Qwen3 and others whose template writes <tool_call>)
//   llama3_json  {"name": "f", "parameters": {...}}, calls separated by ';', the whole reply, optionally after
//                <|python_tag|> (Llama 3.1, 3.2, 3.3 with JSON tool calling)
enum class ToolCallParser : uint8_t { kNone, kHermes, kLlama3Json };
// The parser named `name`, or false.
bool tool_call_parser_named(std::string_view name, ToolCallParser& parser);
const char* tool_call_parser_name(ToolCallParser parser);  // "hermes", "llama3_json" ("none" for kNone)
inline constexpr const char* kToolCallParserNames = "hermes, llama3_json";

// The parser whose format a chat template asks its model to write tool calls in (<tool_call> tags: hermes; Llama
// 3.x's {"name": function name, "parameters": ...}: llama3_json), judged from the template's text; kNone when it names
// neither. For a hint: the choice stays the user's (--tool-call-parser), as in vLLM.
ToolCallParser tool_call_parser_suggested(const std::function<bool(std::string_view)>& template_mentions);

// A finished reply as its model's format reads: the calls ([{"id", "type": "function", "function": {"name",
// "arguments"}}], ids `id_prefix` and the call's index, arguments as the model wrote them) and the text beside
// them, or the whole text as content with no calls when the text holds no calls or a call that does not read (a
// call's JSON must be an object with a string "name" and an object "arguments" or "parameters", as vLLM's parsers
// need: a JSON answer with a "name" is not a call).
// hermes: the content is the text before the first <tool_call> (whitespace at its end taken off); the text
// between and after the calls is dropped, as vLLM does. llama3_json: calls leave no content.
struct ParsedReply {
  std::string content;
  json calls = json::array();
};
ParsedReply parse_tool_calls(ToolCallParser parser, std::string_view text, const std::string& id_prefix);

// Streaming: the bytes at the start of an unfinished reply that are content whatever the model writes next. Held
// back are a call and what follows it, text that may still begin a call's opening, and the whitespace before it
// (which a reply with calls does not keep). A prefix of what parse_tool_calls finds once the reply is finished.
// `from`: where the last call, on a start of this text, settled (the search resumes there: a stream's work stays
// linear in its length).
size_t settled_content(ToolCallParser parser, std::string_view text, size_t from = 0);

}  // namespace kvshare::server
