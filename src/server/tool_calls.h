// Tool calls that a chat request forces with tool_choice (OpenAI's named function, and "required"), as vLLM does
// them without a model-specific parser: the output is constrained to a JSON schema made of the tools' parameters,
// and read back into the reply's tool_calls. "auto" and "none" leave the reply as text.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace kvshare::server
