// The parsers of tool calls that models write of their own choosing (hermes, llama3_json): what they read, what
// they leave as text, and that streaming never sends as content what the finished reply reads as a call.
#include "server/tool_calls.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "test_util.h"

namespace kvshare::server {
namespace {

ParsedReply hermes(std::string_view text) { return parse_tool_calls(ToolCallParser::kHermes, text, "call_7_"); }
ParsedReply llama3(std::string_view text) { return parse_tool_calls(ToolCallParser::kLlama3Json, text, "call_7_"); }

TEST(ToolCallParser, Names) {
  ToolCallParser p = ToolCallParser::kNone;
  EXPECT_TRUE(tool_call_parser_named("hermes", p));
  EXPECT_EQ(p, ToolCallParser::kHermes);
  EXPECT_TRUE(tool_call_parser_named("llama3_json", p));
  EXPECT_EQ(p, ToolCallParser::kLlama3Json);
  EXPECT_FALSE(tool_call_parser_named("Hermes", p));
  EXPECT_FALSE(tool_call_parser_named("", p));
}

// The real templates that ask for tool calls name their format; the others none.
TEST(ToolCallParser, SuggestedByRealTemplates) {
  KV_REQUIRE_SHARED("chat-templates/README.md");
  for (const auto& [name, want] : std::vector<std::pair<std::string, ToolCallParser>>{
           {"Qwen-Qwen2.5-7B-Instruct", ToolCallParser::kHermes},
           {"Qwen-Qwen3-0.6B", ToolCallParser::kHermes},
           {"meta-llama-Llama-3.1-8B-Instruct", ToolCallParser::kLlama3Json},
           {"meta-llama-Llama-3.2-3B-Instruct", ToolCallParser::kLlama3Json},
           {"mistralai-Mistral-Nemo-Instruct-2407", ToolCallParser::kNone},
           {"microsoft-Phi-3.5-mini-instruct", ToolCallParser::kNone}}) {
    std::ifstream in(testing::shared_dir() + "/chat-templates/" + name + ".jinja");
    std::stringstream source;
    source << in.rdbuf();
    ASSERT_FALSE(source.str().empty()) << name;
    const std::string text = source.str();
    EXPECT_EQ(tool_call_parser_suggested([&](std::string_view t) { return text.find(t) != std::string::npos; }), want)
        << name;
  }
  EXPECT_STREQ(tool_call_parser_name(ToolCallParser::kLlama3Json), "llama3_json");
}

// Qwen2.5's and Hermes 2 Pro's form: content before the calls, each call a <tool_call> block of
// {"name", "arguments"} in either order, arguments kept as written.
TEST(ToolCallParser, HermesReadsEveryBlock) {
  ParsedReply r = hermes("Let me look that up.\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                         "{\"city\": \"Paris\", \"days\": 0.10, \"big\": 1e999}}\n</tool_call>\n<tool_call>\n"
                         "{\"arguments\": {}, \"name\": \"now\"}\n</tool_call>");
  EXPECT_EQ(r.content, "Let me look that up.");
  ASSERT_EQ(r.calls.size(), 2u) << r.calls.dump();
  EXPECT_EQ(r.calls[0]["id"], "call_7_0");
  EXPECT_EQ(r.calls[0]["type"], "function");
  EXPECT_EQ(r.calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.calls[0]["function"]["arguments"], R"({"city": "Paris", "days": 0.10, "big": 1e999})");
  EXPECT_EQ(r.calls[1]["id"], "call_7_1");
  EXPECT_EQ(r.calls[1]["function"]["name"], "now");
  EXPECT_EQ(r.calls[1]["function"]["arguments"], "{}");
  // No content; the last block left open where the model stopped; a name with escapes.
  r = hermes(R"(<tool_call>{"name": "a\"b", "arguments": {}}</tool_call>)"
             R"(<tool_call>{"name": "f", "arguments": {"x": [1]}})");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 2u) << r.calls.dump();
  EXPECT_EQ(r.calls[0]["function"]["name"], "a\"b");
  EXPECT_EQ(r.calls[0]["function"]["arguments"], "{}");
  EXPECT_EQ(r.calls[1]["function"]["arguments"], R"({"x": [1]})");
}

// A reply whose calls do not all read stays text, whole: nothing is lost or half-read.
TEST(ToolCallParser, HermesLeavesWhatDoesNotReadAsText) {
  for (const std::string text : {
           "Just text, </tool_call> and all.\n",
           "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": tru}}\n</tool_call>",
           "<tool_call>\n{\"name\": \"f\", \"argu",                                           // cut short
           "<tool_call>{\"arguments\": {}}</tool_call>",                                      // no name
           "<tool_call>{\"name\": \"f\"}</tool_call>",                                         // no arguments
           "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",                      // an empty name
           "<tool_call>{\"name\": 5}</tool_call>",
           "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>",                 // arguments a string
           "<tool_call>{\"name\": \"f\"} and more</tool_call>",
           "<tool_call>[{\"name\": \"f\"}]</tool_call>",
           "<tool_call>{\"name\": \"f\", \"arguments\": {\"n\": 01}}</tool_call>",            // not JSON
           "<tool_call>{\"name\": \"f\"}</tool_call> ok <tool_call>{\"name\": }</tool_call>",  // the second fails
           "<tool_call></tool_call>",
       }) {
    const ParsedReply r = hermes(text);
    EXPECT_EQ(r.content, text);
    EXPECT_TRUE(r.calls.empty()) << text << " read as " << r.calls.dump();
  }
  // Nesting deeper than the reader follows is not read (and does not overflow the stack).
  const std::string deep = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": " + std::string(100000, '[') +
                           std::string(100000, ']') + "}}</tool_call>";
  EXPECT_TRUE(hermes(deep).calls.empty());
}

// Llama 3.x's JSON calls: the reply is the calls, {"name", "parameters"} (or "arguments"), separated by ';', after
// <|python_tag|> or not.
TEST(ToolCallParser, Llama3JsonReadsTheReplyAsCalls) {
  ParsedReply r = llama3("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.calls[0]["function"]["arguments"], R"({"city": "Oslo"})");
  r = llama3(R"(<|python_tag|>{"name": "a", "arguments": {}}; {"name": "b", "parameters": {"n": -2.5e3}})" "\n");
  ASSERT_EQ(r.calls.size(), 2u) << r.calls.dump();
  EXPECT_EQ(r.calls[1]["id"], "call_7_1");
  EXPECT_EQ(r.calls[1]["function"]["arguments"], R"({"n": -2.5e3})");
  r = llama3("\n {\"name\": \"a\", \"parameters\": {}}");
  ASSERT_EQ(r.calls.size(), 1u);
  // A JSON answer that has a "name" is not a call (found by a review helper: it became a call of "Alice", its
  // other members lost).
  r = llama3(R"({"name": "Alice", "age": 30, "city": "Oslo"})");
  EXPECT_TRUE(r.calls.empty());
  EXPECT_EQ(r.content, R"({"name": "Alice", "age": 30, "city": "Oslo"})");
  for (const std::string text : {"The answer is {\"name\": \"a\"}", "{\"name\": \"a\"} is what I would call",
                                 "{\"name\": \"a\"};", "{\"city\": \"Oslo\"}", "{\"name\": \"a\"", "",
                                 "<|python_tag|>"}) {
    r = llama3(text);
    EXPECT_EQ(r.content, text);
    EXPECT_TRUE(r.calls.empty()) << text;
  }
}

TEST(ToolCallParser, SettledContentHoldsBackWhatMayBeACall) {
  auto h = [](std::string_view t) { return settled_content(ToolCallParser::kHermes, t); };
  EXPECT_EQ(h("Hello"), 5u);
  EXPECT_EQ(h("Hello <tool"), 5u);        // may become <tool_call>, and the space before it is then dropped
  EXPECT_EQ(h("Hello <tool_call>{"), 5u);
  EXPECT_EQ(h("Hello <b>"), 9u);
  EXPECT_EQ(h("Hello\n\n"), 5u);
  EXPECT_EQ(h("a<"), 1u);
  EXPECT_EQ(h("<tool_call"), 0u);
  auto l = [](std::string_view t) { return settled_content(ToolCallParser::kLlama3Json, t); };
  EXPECT_EQ(l(""), 0u);
  EXPECT_EQ(l("  {"), 0u);
  EXPECT_EQ(l("<|py"), 0u);
  EXPECT_EQ(l("<|python_tag|>{\"na"), 0u);
  EXPECT_EQ(l("Hi"), 2u);
  EXPECT_EQ(l(" <b"), 3u);
  EXPECT_EQ(settled_content(ToolCallParser::kNone, "<tool_call>"), 11u);
}

// What streaming sends as content before a reply ends is never taken back: on every prefix of a reply, the settled
// content only grows, and it is a prefix of the content the finished reply reads. Replies are made at random from
// pieces of calls and text.
TEST(ToolCallParser, StreamedContentIsAPrefixOfTheFinishedReplys) {
  const std::vector<std::string> pieces = {"<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>",
                                           "{\"name\": \"h\", \"parameters\": {}}",
                                           "<tool_call>", "</tool_call>", "{\"name\": \"f\", \"arguments\": {}}",
                                           "{\"name\": \"g\"}", "<|python_tag|>", "; ", "hi", " ", "\n", "<", "tool",
                                           "_call>", "{", "}", "\"", "<|py", "thon_tag|>"};
  std::mt19937 rng(7);
  int with_calls[2] = {0, 0};  // [llama3_json, hermes]
  for (int round = 0; round < 4000; ++round) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) text += pieces[rng() % pieces.size()];
    for (ToolCallParser parser : {ToolCallParser::kHermes, ToolCallParser::kLlama3Json}) {
      const ParsedReply finished = parse_tool_calls(parser, text, "c");
      with_calls[parser == ToolCallParser::kHermes] += !finished.calls.empty();
      size_t settled = 0;
      for (size_t end = 0; end <= text.size(); ++end) {
        const size_t s = settled_content(parser, std::string_view(text).substr(0, end));
        // resuming where the last prefix settled finds the same (a stream's work stays linear)
        ASSERT_EQ(settled_content(parser, std::string_view(text).substr(0, end), settled), s) << text << " " << end;
        ASSERT_GE(s, settled) << text << " at " << end;
        ASSERT_LE(s, finished.content.size()) << text << " at " << end;
        ASSERT_EQ(text.compare(0, s, finished.content, 0, s), 0) << text << " at " << end;
        settled = s;
      }
    }
  }
  EXPECT_GT(with_calls[0], 50);  // both parsers read calls in many of them
  EXPECT_GT(with_calls[1], 50);
}

}  // namespace
}  // namespace kvshare::server
