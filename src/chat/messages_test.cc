// Chat messages as requests give them, made ready for a template.
#include "chat/messages.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "chat/chat_template.h"
#include "test_util.h"

namespace kvshare {
namespace {

using nlohmann::ordered_json;

ordered_json read(const std::string& given) {
  ordered_json messages;
  std::string error;
  EXPECT_TRUE(read_chat_messages(ordered_json::parse(given), messages, error)) << error;
  return messages;
}

TEST(ChatMessages, PartsAreJoinedAndErrorsNameTheMessage) {
  EXPECT_EQ(read(R"([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])")
                [0]["content"], "a\nb");
  ordered_json messages;
  std::string error;
  EXPECT_FALSE(read_chat_messages(ordered_json::parse(R"([{"role": "user"}, {"content": "x"}])"), messages, error));
  EXPECT_EQ(error, "messages[1].role must be a string");
}

// OpenAI's clients send a call's arguments as JSON text; templates take them as a mapping.
TEST(ChatMessages, ToolCallArgumentsBecomeObjects) {
  const ordered_json m = read(R"([{"role": "assistant", "content": null, "tool_calls": [
      {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"city\": \"Oslo\", \"n\": [1]}"}},
      {"id": "b", "type": "function", "function": {"name": "g", "arguments": "not json"}},
      {"id": "c", "type": "function", "function": {"name": "h", "arguments": "[1, 2]"}},
      {"id": "d", "type": "function", "function": {"name": "i", "arguments": {"x": 1}}},
      {"id": "e", "type": "function", "function": {"name": "j", "arguments": "{\"x\": 1}}"}}, 5]}])");
  const ordered_json& calls = m[0]["tool_calls"];
  EXPECT_EQ(calls[0]["function"]["arguments"], ordered_json::parse(R"({"city": "Oslo", "n": [1]})"));
  EXPECT_EQ(calls[0]["function"]["arguments"].begin().key(), "city");  // the order kept
  EXPECT_EQ(calls[1]["function"]["arguments"], "not json");
  EXPECT_EQ(calls[2]["function"]["arguments"], "[1, 2]");  // not an object: left as given
  EXPECT_EQ(calls[3]["function"]["arguments"], ordered_json::parse(R"({"x": 1})"));
  EXPECT_EQ(calls[4]["function"]["arguments"], "{\"x\": 1}}");
  EXPECT_EQ(calls[5], 5);
  // Text nesting past the JSON limit stays text (the template refuses such a conversation whole).
  const std::string deep = std::string(300, '[') + std::string(300, ']');
  const ordered_json d =
      read(R"([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": )" + deep +
           R"(}"}}]}])");
  EXPECT_TRUE(d[0]["tool_calls"][0]["function"]["arguments"].is_string());
}

// Llama 3.1's template writes arguments with tojson: a call as an OpenAI client sends it back renders as the model
// wrote it, not as a quoted string.
TEST(ChatMessages, ACallSentBackRendersAsTheModelWroteIt) {
  KV_REQUIRE_SHARED("chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja");
  std::ifstream in(testing::shared_dir() + "/chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja");
  std::stringstream source;
  source << in.rdbuf();
  auto tpl = ChatTemplate::from_string(source.str(), "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_TRUE(tpl.ok()) << tpl.status().message();
  ordered_json conversation = {{"messages", read(R"([{"role": "user", "content": "Weather in Oslo?"},
      {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"}])")}};
  auto text = tpl->apply(conversation, true);
  ASSERT_TRUE(text.ok()) << text.status().message();
  EXPECT_NE(text->find(R"({"name": "get_weather", "parameters": {"city": "Oslo"}})"), std::string::npos) << *text;
}

}  // namespace
}  // namespace kvshare
