#include "server/openai_api.h"

#include <map>

#include <gtest/gtest.h>

#include "sampling/json_guide.h"
#include "sampling/json_schema.h"
#include "server/tool_calls.h"

namespace kvshare::server {
namespace {

GenerationCall parse_ok(const std::string& body, bool chat = false) {
  GenerationCall call;
  ApiError error;
  EXPECT_TRUE(parse_generation_call(body, chat, call, error)) << body << ": " << error.message;
  return call;
}

ApiError parse_error(const std::string& body, bool chat = false) {
  GenerationCall call;
  ApiError error;
  EXPECT_FALSE(parse_generation_call(body, chat, call, error)) << body;
  EXPECT_EQ(error.status, 400) << body;
  EXPECT_FALSE(error.message.empty()) << body;
  return error;
}

TEST(OpenAiApi, PromptShapes) {
  GenerationCall c = parse_ok(R"({"prompt": "Hello"})");
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_TRUE(c.prompts[0].is_text);
  EXPECT_EQ(c.prompts[0].text, "Hello");
  EXPECT_EQ(c.params.max_tokens, 16);  // OpenAI's default for completions

  c = parse_ok(R"({"prompt": ["a", "b", "c"]})");
  ASSERT_EQ(c.prompts.size(), 3u);
  EXPECT_EQ(c.prompts[2].text, "c");

  c = parse_ok(R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_FALSE(c.prompts[0].is_text);
  EXPECT_EQ(c.prompts[0].token_ids, (std::vector<int32_t>{1, 2, 3}));

  c = parse_ok(R"({"prompt": [[1, 2], [3]]})");
  ASSERT_EQ(c.prompts.size(), 2u);
  EXPECT_EQ(c.prompts[1].token_ids, (std::vector<int32_t>{3}));
}

TEST(OpenAiApi, SamplingFields) {
  GenerationCall c = parse_ok(R"({"prompt": "x", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
      "min_p": 0.1, "n": 3, "stop": ["\n", "END"], "stop_token_ids": [2], "seed": 42, "presence_penalty": 0.5,
      "frequency_penalty": -0.5, "repetition_penalty": 1.2, "logit_bias": {"17": -100, "3": 2.5}, "logprobs": 2,
      "echo": true, "ignore_eos": true, "min_tokens": 2, "cache_salt": "s", "stream": true,
      "stream_options": {"include_usage": true}, "user": "ignored", "model": "m"})");
  EXPECT_EQ(c.params.max_tokens, 7);
  EXPECT_FLOAT_EQ(c.params.temperature, 0.5f);
  EXPECT_FLOAT_EQ(c.params.top_p, 0.9f);
  EXPECT_EQ(c.params.top_k, 5);
  EXPECT_FLOAT_EQ(c.params.min_p, 0.1f);
  EXPECT_EQ(c.params.n, 3);
  EXPECT_EQ(c.params.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(c.params.stop_token_ids, (std::vector<int32_t>{2}));
  ASSERT_TRUE(c.params.seed.has_value());
  EXPECT_EQ(*c.params.seed, 42u);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "seed": 9223372036854775807})").params.seed.has_value());
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "seed": -9223372036854775808})").params.seed.has_value());
  EXPECT_FLOAT_EQ(c.params.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(c.params.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(c.params.repetition_penalty, 1.2f);
  EXPECT_EQ(c.params.logit_bias.size(), 2u);
  EXPECT_FLOAT_EQ(c.params.logit_bias.at(17), -100.0f);
  EXPECT_EQ(c.top_logprobs, 2);
  EXPECT_FALSE(c.params.allowed_token_ids.has_value());
  EXPECT_TRUE(c.params.skip_special_tokens);
  const GenerationCall vllm = parse_ok(
      R"({"prompt": "x", "allowed_token_ids": [5, 9], "skip_special_tokens": false, "truncate_prompt_tokens": 7,
          "bad_words": ["darn", " heck it"]})");
  EXPECT_EQ(vllm.params.allowed_token_ids, (std::vector<int32_t>{5, 9}));
  EXPECT_FALSE(vllm.params.skip_special_tokens);
  EXPECT_EQ(vllm.params.truncate_prompt_tokens, 7);
  EXPECT_EQ(vllm.params.bad_words, (std::vector<std::string>{"darn", " heck it"}));
  // add_special_tokens: yes for a completion's text, no for a chat's (its template writes them), as vLLM.
  EXPECT_TRUE(vllm.add_special_tokens);
  EXPECT_FALSE(parse_ok(R"({"prompt": "x", "add_special_tokens": false})").add_special_tokens);
  EXPECT_FALSE(parse_ok(R"({"messages": [{"role": "user", "content": "x"}]})", true).add_special_tokens);
  EXPECT_TRUE(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "add_special_tokens": true})", true)
                  .add_special_tokens);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "use_beam_search": false, "guided_json": null})").params.n == 1);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "structured_outputs": {}})").params.n == 1);  // no constraint, as vLLM
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "structured_outputs": {"json": null}})").params.n == 1);
  // The output as one of a list of strings: vLLM's two spellings.
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "guided_choice": ["yes", "no"]})").params.choice,
            (std::vector<std::string>{"yes", "no"}));
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "structured_outputs": {"choice": ["a"], "json": null, "json_object": false}})")
                .params.choice,
            (std::vector<std::string>{"a"}));
  EXPECT_FALSE(parse_ok(R"({"prompt": "x", "guided_choice": null})").params.choice.has_value());
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "structured_outputs": {"choice": ["a"], "disable_any_whitespace": true,
                                                               "whitespace_pattern": " +"}})")
                .params.choice,
            (std::vector<std::string>{"a"}));  // vLLM's backend options: nothing to change for a choice
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "bad_words": null})").params.bad_words.empty());
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "truncate_prompt_tokens": -1})").params.truncate_prompt_tokens, -1);
  ASSERT_TRUE(c.params.logprobs.has_value());
  EXPECT_EQ(*c.params.logprobs, 2);
  EXPECT_TRUE(c.echo);
  EXPECT_TRUE(c.params.ignore_eos);
  EXPECT_EQ(c.params.min_tokens, 2);
  EXPECT_EQ(c.cache_salt, "s");
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_FALSE(c.continuous_usage);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true,
                           "continuous_usage_stats": true}})").continuous_usage);
  EXPECT_EQ(c.model, "m");
  // A single stop string and nulls (the SDKs send them) are accepted.
  c = parse_ok(R"({"prompt": "x", "stop": "###", "temperature": null, "max_tokens": null})");
  EXPECT_EQ(c.params.stop, (std::vector<std::string>{"###"}));
  EXPECT_FLOAT_EQ(c.params.temperature, 1.0f);
}

TEST(OpenAiApi, ChatFields) {
  GenerationCall c = parse_ok(R"({"messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
      "max_completion_tokens": 5, "logprobs": true, "top_logprobs": 3, "add_generation_prompt": true})", true);
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[1]["content"], "Hi\nthere");
  EXPECT_EQ(c.params.max_tokens, 5);
  EXPECT_TRUE(c.max_tokens_given);
  EXPECT_EQ(c.top_logprobs, 3);
  c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 5})",
               true);
  EXPECT_EQ(c.params.max_tokens, 5) << "OpenAI's current name wins";
  c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}]})", true);
  EXPECT_FALSE(c.max_tokens_given);
  EXPECT_EQ(c.top_logprobs, -1);
  EXPECT_FALSE(c.params.logprobs.has_value());
}

TEST(OpenAiApi, ErrorsNameTheField) {
  struct Case {
    const char* body;
    bool chat;
    const char* param;
  };
  const Case cases[] = {
      {R"({})", false, "prompt"},
      {R"({"prompt": 5})", false, "prompt"},
      {R"({"prompt": []})", false, "prompt"},
      {R"({"prompt": [1, -2]})", false, "prompt"},
      {R"({"prompt": [[1], "a", 3]})", false, "prompt"},
      {R"({"prompt": "x", "temperature": "hot"})", false, "temperature"},
      {R"({"prompt": "x", "temperature": 2.5})", false, "temperature"},
      {R"({"prompt": "x", "top_p": 0})", false, "top_p"},
      {R"({"prompt": "x", "max_tokens": 1.5})", false, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 0})", false, "max_tokens"},
      {R"({"prompt": "x", "n": 0})", false, "n"},
      {R"({"prompt": "x", "n": 1000})", false, "n"},
      {R"({"prompt": "x", "stop": [1]})", false, "stop"},
      {R"({"prompt": "x", "stop_token_ids": "a"})", false, "stop_token_ids"},
      {R"({"prompt": "x", "allowed_token_ids": []})", false, "allowed_token_ids"},
      {R"({"prompt": "x", "allowed_token_ids": [1, -1]})", false, "allowed_token_ids"},
      {R"({"prompt": "x", "skip_special_tokens": 1})", false, "skip_special_tokens"},
      {R"({"prompt": "x", "bad_words": "darn"})", false, "bad_words"},
      {R"({"prompt": "x", "guided_choice": []})", false, "guided_choice"},
      {R"({"prompt": "x", "guided_choice": "yes"})", false, "guided_choice"},
      {R"({"prompt": "x", "guided_choice": ["yes", 1]})", false, "guided_choice"},
      {R"({"prompt": "x", "guided_choice": ["yes", ""]})", false, "guided_choice"},
      {R"({"prompt": "x", "structured_outputs": {"choice": []}})", false, "structured_outputs.choice"},
      {R"({"prompt": "x", "structured_outputs": ["a"]})", false, "structured_outputs"},
      {R"({"prompt": "x", "structured_outputs": {"choice": ["a"]}, "guided_choice": ["a"]})", false,
       "structured_outputs"},
      {R"({"prompt": "x", "structured_outputs": {"choice": ["a"], "json_object": true}})", false,
       "structured_outputs.json_object"},
      {R"({"prompt": "x", "structured_outputs": {"json_object": "yes"}})", false, "structured_outputs"},
      {R"({"prompt": "x", "structured_outputs": {"json": {"type": "object"}, "json_object": true}})", false,
       "structured_outputs.json_object"},
      {R"({"prompt": "x", "structured_outputs": {"json": 3}})", false, "structured_outputs.json"},
      {R"({"prompt": "x", "structured_outputs": {"json_object": true, "disable_any_whitespace": 1}})", false,
       "structured_outputs"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}, "guided_choice": ["a"]})", false,
       "response_format"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}, "structured_outputs": {"json_object": true}})",
       false, "structured_outputs.json_object"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}, "min_tokens": 3})", false, "min_tokens"},
      {R"({"prompt": "x", "guided_json": [1]})", false, "guided_json"},
      {R"({"prompt": "x", "guided_json": {}, "guided_choice": ["a"]})", false, "guided_json"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})", false,
       "response_format"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
           "min_tokens": 2})", false, "min_tokens"},
      {R"({"prompt": "x", "guided_grammar": "root ::= \"a\""})", false, "guided_grammar"},
      {R"({"prompt": "x", "guided_regex": "a+"})", false, "guided_regex"},
      {R"({"messages": [{"role": "user", "content": "x"}], "structured_outputs": {"regex": "a+"}})", true,
       "structured_outputs"},
      {R"({"prompt": "x", "use_beam_search": true})", false, "use_beam_search"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template": "{{ 1 }}"})", true, "chat_template"},
      {R"({"prompt": "x", "add_special_tokens": "no"})", false, "add_special_tokens"},
      {R"({"prompt": "x", "bad_words": ["a", 1]})", false, "bad_words"},
      {R"({"prompt": "x", "bad_words": ["a", " "]})", false, "bad_words"},
      {R"({"prompt": "x", "truncate_prompt_tokens": 0})", false, "truncate_prompt_tokens"},
      {R"({"prompt": "x", "truncate_prompt_tokens": -2})", false, "truncate_prompt_tokens"},
      {R"({"prompt": "x", "truncate_prompt_tokens": 1.5})", false, "truncate_prompt_tokens"},
      {R"({"prompt": "x", "logit_bias": {"a": 1}})", false, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"5": 101}})", false, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": [1]})", false, "logit_bias"},
      {R"({"prompt": "x", "logprobs": 21})", false, "logprobs"},
      {R"({"prompt": "x", "presence_penalty": 3})", false, "presence_penalty"},
      {R"({"prompt": "x", "repetition_penalty": 0})", false, "repetition_penalty"},
      {R"({"prompt": "x", "min_tokens": -1})", false, "min_tokens"},
      {R"({"prompt": "x", "echo": "yes"})", false, "echo"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", false, "stream_options"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"continuous_usage_stats": "yes"}})", false,
       "stream_options"},
      {R"({"prompt": "x", "model": 3})", false, "model"},
      {R"({"prompt": "x", "suffix": "y"})", false, "suffix"},
      {R"({"prompt": "x", "n": 3, "best_of": 2})", false, "best_of"},
      {R"({"prompt": "x", "best_of": 2, "stream": true})", false, "best_of"},
      {R"({"prompt": "x", "best_of": 0})", false, "best_of"},
      {R"({"prompt": "x", "best_of": 129})", false, "best_of"},
      {R"({"prompt": "x", "seed": "s"})", false, "seed"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5, "max_tokens": -1})", true,
       "max_tokens"},  // went unread beside max_completion_tokens
      {R"({"prompt": "x", "seed": 9223372036854775808})", false, "seed"},    // 2^63: was INT64_MIN
      {R"({"prompt": "x", "seed": 9223372036854775808.0})", false, "seed"},  // was an undefined conversion
      {R"({})", true, "messages"},
      {R"({"messages": []})", true, "messages"},
      {R"({"messages": [{"content": "x"}]})", true, "messages"},
      {R"({"messages": ["x"]})", true, "messages"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true, "messages"},
      {R"({"messages": [{"role": "user", "content": 5}]})", true, "messages"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", true, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", true, "logprobs"},
      {R"({"prompt": "x", "top_p": 2})", false, "top_p"},
      {R"({"prompt": "x", "stop": ""})", false, "stop"},
      {R"({"prompt": "x", "stop": ["a", ""]})", false, "stop"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {}}})", false, "response_format"},
      {R"({"prompt": "x", "response_format": {"type": "xml"}})", false, "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": 5})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": "xyz"})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [1]})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": {"type": "function"}})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "documents": ["d"]})", true, "documents"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", true, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function",
          "function": {"name": "f"}}})", true, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"})", true, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "g"}}],
          "tool_choice": {"type": "function", "function": {"name": "f"}}})", true, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}],
          "tool_choice": "required"})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "code_interpreter"}],
          "tool_choice": "required"})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f",
          "parameters": 3}}], "tool_choice": "required"})", true, "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": "required", "response_format": {"type": "json_object"}})", true, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": "required", "min_tokens": 2})", true, "min_tokens"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})", true,
       "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": "text"})", true, "response_format"},
  };
  for (const Case& c : cases) {
    ApiError e = parse_error(c.body, c.chat);
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_EQ(e.to_json()["error"]["param"], c.param);
    EXPECT_EQ(e.to_json()["error"]["type"], "invalid_request_error");
  }
}

// JSON mode: OpenAI's response_format and vLLM's structured_outputs.json_object, with its whitespace option;
// {"type": "text"} and null ask for nothing.
TEST(OpenAiApi, JsonModeFromEitherSpelling) {
  GenerationCall c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}],
                                  "response_format": {"type": "json_object"}})", true);
  EXPECT_TRUE(c.params.json_object);
  EXPECT_FALSE(c.params.disable_any_whitespace);
  c = parse_ok(R"({"prompt": "x", "structured_outputs": {"json_object": true, "disable_any_whitespace": true}})");
  EXPECT_TRUE(c.params.json_object);
  EXPECT_TRUE(c.params.disable_any_whitespace);
  c = parse_ok(R"({"prompt": "x", "response_format": {"type": "json_object"},
                   "structured_outputs": {"disable_any_whitespace": true}})");
  EXPECT_TRUE(c.params.json_object && c.params.disable_any_whitespace);
  for (const char* body : {R"({"prompt": "x", "response_format": {"type": "text"}})",
                           R"({"prompt": "x", "response_format": null, "structured_outputs": {"json_object": false}})"})
    EXPECT_FALSE(parse_ok(body).params.json_object) << body;
  EXPECT_NE(parse_error(R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {}}})")
                .message.find("needs \"json_schema\": {\"name\": ..., \"schema\": {...}}"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"prompt": "x", "response_format": {"type": "xml"}})").message.find(
                "use \"json_schema\", \"json_object\" or \"text\""),
            std::string::npos);
}

// A JSON schema: OpenAI's response_format json_schema, vLLM's structured_outputs.json and guided_json (a schema or
// its text). It reaches the engine as text, its properties in the order the client gave them.
TEST(OpenAiApi, JsonSchemaFromEachSpelling) {
  GenerationCall c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type":
      "json_schema", "json_schema": {"name": "p", "strict": true, "schema": {"type": "object",
      "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}}}})", true);
  EXPECT_EQ(c.params.json_schema, R"({"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}}})");
  EXPECT_FALSE(c.params.json_object);
  EXPECT_EQ(c.constraint_field, "response_format");
  c = parse_ok(R"({"prompt": "x", "structured_outputs": {"json": "{\"type\": \"array\"}",
                   "disable_any_whitespace": true}})");
  EXPECT_EQ(c.params.json_schema, "{\"type\": \"array\"}");
  EXPECT_TRUE(c.params.disable_any_whitespace);
  EXPECT_EQ(c.constraint_field, "structured_outputs.json");
  c = parse_ok(R"({"prompt": "x", "guided_json": true})");
  EXPECT_EQ(c.params.json_schema, "true");
  EXPECT_EQ(c.constraint_field, "guided_json");
}

// One range, one message: top_p 0 and top_p 2 used to be told different ranges.
TEST(OpenAiApi, OpenRangesSayWhichEndIsOpen) {
  EXPECT_EQ(parse_error(R"({"prompt": "x", "top_p": 0})").message, "top_p must be in (0, 1], got 0");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "top_p": 2})").message, "top_p must be in (0, 1], got 2");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "repetition_penalty": 0})").message,
            "repetition_penalty must be in (0, 100], got 0");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "temperature": 2.5})").message, "temperature must be in [0, 2], got 2.5");
  EXPECT_FLOAT_EQ(parse_ok(R"({"prompt": "x", "top_p": 1})").params.top_p, 1.0f);
}

// An empty stop string was dropped (200) although the engine, and so the batch job, refuse it.
TEST(OpenAiApi, EmptyStopStringsAreRefused) {
  EXPECT_NE(parse_error(R"({"prompt": "x", "stop": ""})").message.find("must not be empty"), std::string::npos);
  EXPECT_TRUE(parse_ok(R"({"prompt": "x", "stop": []})").params.stop.empty());
}

// tools and documents were accepted whatever they held and never reached the template; tool_choice and
// response_format values the server cannot honour were ignored.
TEST(OpenAiApi, ToolsAndDocumentsAreKeptForTheTemplate) {
  GenerationCall c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
      "documents": [{"title": "T", "text": "body"}], "tool_choice": "auto", "response_format": {"type": "text"}})",
                              true);
  ASSERT_TRUE(c.tools.is_array());
  EXPECT_EQ(c.tools[0]["function"]["name"], "get_weather");
  ASSERT_TRUE(c.documents.is_array());
  EXPECT_EQ(c.documents[0]["title"], "T");
  c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": "none"})", true);
  EXPECT_TRUE(c.tools.is_array());
  c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}]})", true);
  EXPECT_TRUE(c.tools.is_null());
  EXPECT_TRUE(c.documents.is_null());
  const ApiError e = parse_error(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", true);
  EXPECT_NE(e.message.find("needs tools"), std::string::npos) << e.message;
}

// tool_choice "required" and a named function force tool calls: the output follows a schema made of the tools'
// parameters (vLLM's), which the engine compiles, and its refusal names `tools`.
TEST(OpenAiApi, ForcedToolCallsFollowTheToolsParameters) {
  const std::string tools = R"("tools": [
      {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
       "properties": {"city": {"$ref": "#/$defs/City"}}, "required": ["city"], "$defs": {"City": {"type": "string"}}}}},
      {"type": "function", "function": {"name": "now"}}])";
  GenerationCall c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], )" + tools +
                                  R"(, "tool_choice": {"type": "function", "function": {"name": "now"}}})", true);
  EXPECT_EQ(c.tool_choice, GenerationCall::ToolChoice::kNamed);
  EXPECT_EQ(c.tool_name, "now");
  EXPECT_EQ(c.params.json_schema, R"({"type":"object","properties":{}})");  // no parameters: {}
  EXPECT_EQ(c.constraint_field, "tools");
  c = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], )" + tools + R"(, "tool_choice": "required"})",
               true);
  EXPECT_EQ(c.tool_choice, GenerationCall::ToolChoice::kRequired);
  ASSERT_TRUE(c.params.json_schema.has_value());
  EXPECT_EQ(*c.params.json_schema,
            R"({"type":"array","minItems":1,"items":{"anyOf":[{"type":"object","properties":{"name":)"
            R"({"const":"get_weather"},"parameters":{"type":"object","properties":{"city":{"$ref":"#/$defs/City"}},)"
            R"("required":["city"]}},"required":["name","parameters"]},{"type":"object","properties":{"name":)"
            R"({"const":"now"},"parameters":{"type":"object","properties":{}}},"required":["name","parameters"]}]},)"
            R"("$defs":{"City":{"type":"string"}}})");
  auto schema = JsonSchema::compile(*c.params.json_schema);
  ASSERT_TRUE(schema.ok()) << schema.status().to_string();
  JsonPrefix p(**schema, true);
  EXPECT_TRUE(p.feed(R"([{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "now", "parameters": {}}])"));
  EXPECT_TRUE(p.complete());
  // A $ref that would point elsewhere once the tools are put together, and two different $defs of one name.
  ApiError e = parse_error(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "tree", "parameters": {"type": "object", "properties": {"kids": {"type": "array",
      "items": {"$ref": "#"}}}}}}], "tool_choice": "required"})", true);
  EXPECT_EQ(e.param, "tools");
  EXPECT_NE(e.message.find("hold the $ref \"#\""), std::string::npos) << e.message;
  // ... in its $defs too (found by a review helper: "#" there came to mean the whole list of calls).
  e = parse_error(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "f", "parameters": {"$defs": {"N": {"type": "object", "properties": {"c": {"$ref": "#"}}}},
      "type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}}}], "tool_choice": "required"})", true);
  EXPECT_NE(e.message.find("hold the $ref \"#\""), std::string::npos) << e.message;
  e = parse_error(R"({"messages": [{"role": "user", "content": "x"}], "tools": [
      {"type": "function", "function": {"name": "a", "parameters": {"$defs": {"X": {"type": "string"}}}}},
      {"type": "function", "function": {"name": "b", "parameters": {"$defs": {"X": {"type": "integer"}}}}}],
      "tool_choice": "required"})", true);
  EXPECT_NE(e.message.find("two different $defs named \"X\""), std::string::npos) << e.message;
}

// The reply's message carries tool_calls (content null) read from the output: a named function's arguments as
// generated; a required list's calls, each one's arguments as written (a number past a double's precision kept),
// "tool_calls" as finish_reason; a list cut short stays text. Streamed: the name first, then the arguments; a
// required list at once when it closes.
TEST(OpenAiApi, RepliesCarryTheToolCalls) {
  const std::string text = R"([{"name": "f", "parameters": {"n": 123456789012345678901234567890, "s": "a\"}"}},)"
                           R"( {"name": "parameters", "parameters": {}}])";
  json calls = tool_calls_of(text, nullptr, "call_x_0_");
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["id"], "call_x_0_0");
  EXPECT_EQ(calls[0]["function"]["name"], "f");
  EXPECT_EQ(calls[0]["function"]["arguments"], R"({"n": 123456789012345678901234567890, "s": "a\"}"})");
  EXPECT_EQ(calls[1]["function"]["name"], "parameters");
  EXPECT_EQ(calls[1]["function"]["arguments"], "{}");
  EXPECT_TRUE(tool_calls_of(R"([{"name": "f", "parameters": {"n": 1)", nullptr, "c").empty());
  // Found by a review helper: parameters that are not objects ran to the end of the text ("5}]"), and a number
  // nlohmann cannot hold (1e999, which JSON allows) lost every call.
  calls = tool_calls_of(R"([{"name":"f","parameters":5},{"name":"g","parameters":true}, {"name": "h",)"
                        R"( "parameters": {"x": 1e999}}])", nullptr, "c");
  ASSERT_EQ(calls.size(), 3u) << calls.dump();
  EXPECT_EQ(calls[0]["function"]["arguments"], "5");
  EXPECT_EQ(calls[1]["function"]["arguments"], "true");
  EXPECT_EQ(calls[2]["function"]["arguments"], R"({"x": 1e999})");
  const std::string name = "f";
  EXPECT_EQ(tool_calls_of("{\"n\": 1", &name, "c")[0]["function"]["arguments"], "{\"n\": 1");

  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "f"}}])";
  ResponseContext ctx{"chatcmpl-abc", 1, "m", [](int32_t) { return std::string(); }};
  Output o;
  o.text = R"([{"name": "f", "parameters": {}}])";
  o.finished = true;
  o.finish_reason = FinishReason::kStop;
  GenerationCall required = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], )" + tools +
                                         R"(, "tool_choice": "required"})", true);
  json r = completion_response(ctx, required, {{ChoiceState{}, o}}, Usage{});
  const json& choice = r["choices"][0];
  EXPECT_TRUE(choice["message"]["content"].is_null());
  EXPECT_EQ(choice["message"]["tool_calls"][0]["id"], "call_abc_0_0");
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["arguments"], "{}");
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  Output cut = o;
  cut.text = R"([{"name": "f", "par)";
  cut.finish_reason = FinishReason::kLength;
  r = completion_response(ctx, required, {{ChoiceState{}, cut}}, Usage{});
  EXPECT_EQ(r["choices"][0]["message"]["content"], cut.text);
  EXPECT_FALSE(r["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  // Streamed, required: nothing until the list closes, then every call with its index.
  ChoiceState state;
  Output partial = o;
  partial.text = R"([{"name": "f")";
  partial.finished = false;
  json chunk = stream_chunk(ctx, required, state, partial);  // the role
  EXPECT_FALSE(chunk["choices"][0]["delta"].contains("content"));
  EXPECT_TRUE(stream_chunk(ctx, required, state, partial).is_null());
  chunk = stream_chunk(ctx, required, state, o);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "tool_calls");
  // Streamed, named: the call's id, type and name first, then the arguments' pieces.
  GenerationCall named = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], )" + tools +
                                      R"(, "tool_choice": {"type": "function", "function": {"name": "f"}}})", true);
  state = ChoiceState{};
  partial.text = "{\"a\"";
  chunk = stream_chunk(ctx, named, state, partial);
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"a\"");
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["id"], "call_abc_0_0");
  o.text = "{\"a\": 1}";
  chunk = stream_chunk(ctx, named, state, o);
  EXPECT_FALSE(chunk["choices"][0]["delta"]["tool_calls"][0].contains("id"));
  EXPECT_EQ(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], ": 1}");
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "stop");
}

// tool_choice "auto" (the default with tools) lets the model choose; a server with a tool-call parser reads the
// calls the model writes in its own format, the text before them as content, "tool_calls" as finish_reason.
// Streamed, the text that may belong to a call is held back, and the calls come when the reply ends: the deltas
// put together are the whole reply's message. Without a parser, or with tool_choice "none", the reply is text.
TEST(OpenAiApi, AutoToolChoiceReadsTheModelsOwnCalls) {
  const std::string messages = R"({"messages": [{"role": "user", "content": "x"}], )";
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "get_weather"}}])";
  EXPECT_EQ(parse_ok(messages + tools + "}", true).tool_choice, GenerationCall::ToolChoice::kAuto);
  const GenerationCall automatic = parse_ok(messages + tools + R"(, "tool_choice": "auto"})", true);
  EXPECT_EQ(automatic.tool_choice, GenerationCall::ToolChoice::kAuto);
  EXPECT_FALSE(automatic.params.json_schema.has_value());  // the model may answer in text
  const GenerationCall none = parse_ok(messages + tools + R"(, "tool_choice": "none"})", true);
  EXPECT_EQ(none.tool_choice, GenerationCall::ToolChoice::kText);
  EXPECT_EQ(parse_ok(messages + R"("tool_choice": "auto"})", true).tool_choice, GenerationCall::ToolChoice::kText);
  EXPECT_EQ(parse_ok(messages + R"("tools": [], "tool_choice": "auto"})", true).tool_choice,
            GenerationCall::ToolChoice::kText);

  ResponseContext ctx{"chatcmpl-abc", 1, "m", [](int32_t) { return std::string(); }};
  ctx.tool_parser = ToolCallParser::kHermes;
  const std::string text = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                           "\"Oslo\"}}\n</tool_call>";
  Output o;
  o.text = text;
  o.finished = true;
  o.finish_reason = FinishReason::kStop;
  json message = completion_response(ctx, automatic, {{ChoiceState{}, o}}, Usage{})["choices"][0]["message"];
  EXPECT_EQ(message["content"], "Checking.");
  ASSERT_EQ(message["tool_calls"].size(), 1u) << message.dump();
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_abc_0_0");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city": "Oslo"})");
  EXPECT_EQ(completion_response(ctx, automatic, {{ChoiceState{}, o}}, Usage{})["choices"][0]["finish_reason"],
            "tool_calls");
  for (const GenerationCall* text_call : {&none, &automatic}) {
    ResponseContext plain = ctx;
    if (text_call == &automatic) plain.tool_parser = ToolCallParser::kNone;
    json choice = completion_response(plain, *text_call, {{ChoiceState{}, o}}, Usage{})["choices"][0];
    EXPECT_EQ(choice["message"]["content"], text);
    EXPECT_FALSE(choice["message"].contains("tool_calls"));
    EXPECT_EQ(choice["finish_reason"], "stop");
  }

  // Streamed a byte at a time: content until the call may begin, then the call in the last chunk.
  auto stream = [&](const std::string& reply, json& calls, std::string& finish) {
    ChoiceState state;
    std::string content;
    for (size_t end = 0; end <= reply.size(); ++end) {
      Output partial = o;
      partial.text = reply.substr(0, end);
      partial.finished = end == reply.size();
      const json chunk = stream_chunk(ctx, automatic, state, partial);
      if (chunk.is_null()) continue;
      const json& delta = chunk["choices"][0]["delta"];
      if (delta.contains("content")) content += delta["content"].get<std::string>();
      if (delta.contains("tool_calls")) calls = delta["tool_calls"];
      if (partial.finished) finish = chunk["choices"][0]["finish_reason"];
      else EXPECT_FALSE(delta.contains("tool_calls"));
    }
    return content;
  };
  json calls;
  std::string finish;
  EXPECT_EQ(stream(text, calls, finish), "Checking.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["id"], "call_abc_0_0");
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(calls[0]["function"]["arguments"], R"({"city": "Oslo"})");
  EXPECT_EQ(finish, "tool_calls");
  // A reply whose call does not read is text, all of it, also what was held back.
  const std::string broken = "I would call <tool_call>{\"name\": \"get_weather\", \"arguments\": {]}</tool_call>";
  calls = json();
  EXPECT_EQ(stream(broken, calls, finish), broken);
  EXPECT_TRUE(calls.is_null());
  EXPECT_EQ(finish, "stop");
}

TEST(OpenAiApi, MalformedBodies) {
  for (const char* body : {"", "{", "[1, 2]", "\"x\"", "null", "{\"prompt\": \"x\",}"}) {
    ApiError e = parse_error(body);
    EXPECT_TRUE(e.param.empty()) << body;
  }
  std::string deep = "{\"prompt\": \"x\", \"user\": ";
  for (int i = 0; i < 300; ++i) deep += "[";
  for (int i = 0; i < 300; ++i) deep += "]";
  deep += "}";
  // The project's one nesting limit, found before the body is parsed.
  EXPECT_NE(parse_error(deep).message.find("the request body nests arrays and objects more than 256 levels"),
            std::string::npos)
      << parse_error(deep).message;
}

ResponseContext context() {
  ResponseContext ctx;
  ctx.id = "cmpl-1";
  ctx.created = 123;
  ctx.model = "m";
  ctx.token_piece = [](int32_t id) { return "<" + std::to_string(id) + ">"; };
  return ctx;
}

Output output(const std::string& text, std::vector<int32_t> tokens, bool finished) {
  Output o;
  o.text = text;
  o.token_ids = std::move(tokens);
  o.finished = finished;
  o.finish_reason = finished ? FinishReason::kLength : FinishReason::kNone;
  return o;
}

TEST(OpenAiApi, BestOfRunsMoreCompletionsAndRanksByLogprobs) {
  GenerationCall c = parse_ok(R"({"prompt": "x", "n": 2, "best_of": 5})");
  EXPECT_EQ(c.n, 2);
  EXPECT_EQ(c.params.n, 5);
  EXPECT_TRUE(c.best_of());
  EXPECT_EQ(c.params.logprobs, 0) << "ranking needs the chosen tokens' logprobs";
  EXPECT_EQ(c.top_logprobs, -1) << "but none are returned unless asked for";
  c = parse_ok(R"({"prompt": "x", "n": 3, "best_of": 3, "stream": true})");
  EXPECT_FALSE(c.best_of());
  EXPECT_FALSE(c.params.logprobs.has_value());
  c = parse_ok(R"({"prompt": "x", "best_of": 4, "logprobs": 3})");
  EXPECT_EQ(c.params.logprobs, 3);
  ChoiceState st;
  st.logprobs = {{{1, -0.25f}, {}}, {{2, -1.5f}, {}}};
  EXPECT_DOUBLE_EQ(cumulative_logprob(st), -1.75);
}

TEST(OpenAiApi, EchoWithLogprobsAsksForPromptLogprobs) {
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "echo": true, "logprobs": 2})").params.prompt_logprobs, 2);
  EXPECT_FALSE(parse_ok(R"({"prompt": "x", "echo": true})").params.prompt_logprobs.has_value());
  EXPECT_FALSE(parse_ok(R"({"prompt": "x", "logprobs": 2})").params.prompt_logprobs.has_value());
}

// A step's output carries new logprobs only; a finished one restates them all: the state ends with each once.
TEST(OpenAiApi, TakeLogprobsKeepsEachTokenOnce) {
  ChoiceState st;
  Output a = output("", {5}, false);
  a.logprobs = {{{5, -1.0f}, {}}};
  take_logprobs(st, a);
  Output b = output("", {5, 6}, false);
  b.logprobs_begin = 1;
  b.logprobs = {{{6, -2.0f}, {}}};
  take_logprobs(st, b);
  Output c = output("", {5, 6, 7}, true);
  c.logprobs = {{{5, -1.0f}, {}}, {{6, -2.0f}, {}}, {{7, -3.0f}, {}}};
  take_logprobs(st, c);
  ASSERT_EQ(st.logprobs.size(), 3u);
  EXPECT_EQ(st.logprobs[2].chosen.token_id, 7);
  EXPECT_TRUE(c.logprobs.empty()) << "moved, not copied";
  st.logprobs_begin = 3;  // as after a stream sent them
  st.logprobs.clear();
  take_logprobs(st, c = output("", {5, 6, 7}, true));
  EXPECT_TRUE(st.logprobs.empty());
}

TEST(OpenAiApi, CompletionResponse) {
  GenerationCall call = parse_ok(R"({"prompt": "Hi", "logprobs": 1})");
  ChoiceState st;
  st.index = 0;
  Output o = output(" there", {7, 8}, true);
  o.logprobs = {{{7, -0.5f}, {{7, -0.5f}}}, {{8, -1.5f}, {{9, -1.0f}}}};
  take_logprobs(st, o);
  Usage u{3, 2, 1};
  json r = completion_response(context(), call, {{st, o}}, u);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], " there");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["choices"][0]["logprobs"]["tokens"], json({"<7>", "<8>"}));
  EXPECT_EQ(r["choices"][0]["logprobs"]["token_logprobs"][1], -1.5);
  EXPECT_EQ(r["choices"][0]["logprobs"]["top_logprobs"][1]["<9>"], -1.0);
  EXPECT_EQ(r["choices"][0]["logprobs"]["text_offset"], json({0, 3}));
  EXPECT_EQ(r["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(r["usage"]["total_tokens"], 5);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
}

// Echo with logprobs lists the prompt's tokens first: the first with null logprob and alternatives (it has no
// context), each later one with its logprob; offsets run on through the generated tokens.
TEST(OpenAiApi, EchoListsThePromptTokensLogprobs) {
  GenerationCall call = parse_ok(R"({"prompt": "Hi", "echo": true, "logprobs": 1})");
  ChoiceState st;
  st.echo_text = "Hi";
  auto prompt = std::make_shared<PromptLogprobs>();
  prompt->token_ids = {3, 4};
  prompt->logprobs = {{{4, -2.5f}, {{10, -0.5f}}}};
  st.prompt = prompt;
  Output o = output(" there", {7}, true);
  o.logprobs = {{{7, -0.5f}, {{7, -0.5f}}}};
  take_logprobs(st, o);
  json lp = completion_response(context(), call, {{st, o}}, Usage{})["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"<3>", "<4>", "<7>"}));
  EXPECT_EQ(lp["token_logprobs"], json({nullptr, -2.5, -0.5}));
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["top_logprobs"][1]["<10>"], -0.5);
  EXPECT_EQ(lp["text_offset"], json({0, 3, 6}));

  // Streamed: the first chunk waits for the prompt's logprobs, then carries them with the echo; the chunks'
  // logprobs put together are the whole response's.
  call = parse_ok(R"({"prompt": "Hi", "echo": true, "logprobs": 1, "stream": true})");
  ChoiceState s;
  s.echo_text = "Hi";
  Output first = output(" there", {7}, false);
  first.logprobs = {{{7, -0.5f}, {{7, -0.5f}}}};
  take_logprobs(s, first);
  EXPECT_TRUE(stream_chunk(context(), call, s, first).is_null()) << "waits for the prompt's logprobs";
  s.prompt = prompt;
  json c1 = stream_chunk(context(), call, s, first);
  EXPECT_EQ(c1["choices"][0]["text"], "Hi there");
  EXPECT_EQ(c1["choices"][0]["logprobs"]["tokens"], json({"<3>", "<4>", "<7>"}));
  EXPECT_TRUE(s.logprobs.empty()) << "sent logprobs are dropped";
  Output last = output(" there!", {7, 8}, true);
  last.logprobs = {{{7, -0.5f}, {{7, -0.5f}}}, {{8, -0.25f}, {{8, -0.25f}}}};
  take_logprobs(s, last);
  json c2 = stream_chunk(context(), call, s, last);
  EXPECT_EQ(c2["choices"][0]["logprobs"]["tokens"], json({"<8>"}));
  EXPECT_EQ(c2["choices"][0]["logprobs"]["text_offset"], json({9}));
  EXPECT_EQ(c2["choices"][0]["logprobs"]["token_logprobs"], json({-0.25}));
}

// vLLM's prompt_logprobs: per choice for completions, beside the choices for chat; null first, then the prompt's
// token (its own rank) and the k likeliest (ranks 1..k), keyed by token id. The engine computes them once, with
// the most alternatives either view asks for, and each view lists its own number.
TEST(OpenAiApi, PromptLogprobsAsVllmGivesThem) {
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "prompt_logprobs": 3})").params.prompt_logprobs, 3);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "prompt_logprobs": 0, "echo": true, "logprobs": 2})").params.prompt_logprobs, 2);
  EXPECT_EQ(parse_ok(R"({"prompt": "x", "prompt_logprobs": 4, "echo": true, "logprobs": 1})").params.prompt_logprobs, 4);
  EXPECT_EQ(parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": 1})", true)
                .params.prompt_logprobs, 1);
  EXPECT_FALSE(parse_ok(R"({"prompt": "x", "prompt_logprobs": null})").params.prompt_logprobs.has_value());
  for (const char* bad : {R"({"prompt": "x", "prompt_logprobs": -1})", R"({"prompt": "x", "prompt_logprobs": 21})",
                          R"({"prompt": "x", "prompt_logprobs": "2"})",
                          R"({"prompt": "x", "prompt_logprobs": 1e300})", R"({"prompt": "x", "prompt_logprobs": -1.0})",
                          R"({"prompt": "x", "prompt_logprobs": 18446744073709551615})",
                          R"({"prompt": "x", "prompt_logprobs": 1, "stream": true})"})
    EXPECT_EQ(parse_error(bad).param, "prompt_logprobs") << bad;
  EXPECT_NE(parse_error(R"({"prompt": "x", "prompt_logprobs": 18446744073709551615})").message.find("must be in [0, 20]"),
            std::string::npos) << "a range error, not taken for -1";
  // 0 with stream is taken, as vLLM takes it; a stream lists no prompt logprobs, so none are computed.
  const GenerationCall streamed = parse_ok(R"({"prompt": "x", "prompt_logprobs": 0, "stream": true})");
  EXPECT_EQ(streamed.prompt_logprobs, -1);
  EXPECT_FALSE(streamed.params.prompt_logprobs.has_value());

  auto prompt = std::make_shared<PromptLogprobs>();
  prompt->token_ids = {3, 4, 5};
  GeneratedTokenLogprobs second{{4, -2.5f}, {{10, -0.5f}, {11, -1.0f}, {4, -2.5f}}};
  second.chosen_rank = 3;
  GeneratedTokenLogprobs third{{5, -0.25f}, {{5, -0.25f}, {12, -3.0f}, {13, -4.0f}}};
  third.chosen_rank = 1;
  prompt->logprobs = {second, third};
  ChoiceState st;
  st.prompt = prompt;
  Output o = output("!", {7}, true);
  GenerationCall call = parse_ok(R"({"prompt": "Hi", "prompt_logprobs": 2, "echo": true, "logprobs": 1})");
  json choice = completion_response(context(), call, {{st, o}}, Usage{})["choices"][0];
  const json plp = choice["prompt_logprobs"];
  ASSERT_EQ(plp.size(), 3u) << plp;
  EXPECT_TRUE(plp[0].is_null());
  EXPECT_EQ(plp[1], json::parse(R"({"4": {"logprob": -2.5, "rank": 3, "decoded_token": "<4>"},
                                     "10": {"logprob": -0.5, "rank": 1, "decoded_token": "<10>"},
                                     "11": {"logprob": -1.0, "rank": 2, "decoded_token": "<11>"}})"));
  EXPECT_EQ(plp[2], json::parse(R"({"5": {"logprob": -0.25, "rank": 1, "decoded_token": "<5>"},
                                     "12": {"logprob": -3.0, "rank": 2, "decoded_token": "<12>"}})"));
  EXPECT_EQ(choice["logprobs"]["top_logprobs"][1], json::parse(R"({"<10>": -0.5})")) << "echo lists its own 1";
  // Without prompt_logprobs, no such field; for chat, one list beside the choices.
  call = parse_ok(R"({"prompt": "Hi", "echo": true, "logprobs": 1})");
  EXPECT_FALSE(completion_response(context(), call, {{st, o}}, Usage{})["choices"][0].contains("prompt_logprobs"));
  call = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": 0})", true);
  json chat = completion_response(context(), call, {{st, o}}, Usage{});
  EXPECT_FALSE(chat["choices"][0].contains("prompt_logprobs"));
  EXPECT_EQ(chat["prompt_logprobs"][2], json::parse(R"({"5": {"logprob": -0.25, "rank": 1, "decoded_token": "<5>"}})"));
  // A request that ended before its prompt's logprobs were computed has none to list.
  st.prompt = nullptr;
  EXPECT_TRUE(completion_response(context(), call, {{st, o}}, Usage{})["prompt_logprobs"].is_null());
}

// vLLM's return_token_ids: the prompt's and the generated ids beside the text (a stream lists each event's new
// ones, the prompt's with a choice's first event); return_tokens_as_token_ids names logprobs' tokens "token_id:N".
TEST(OpenAiApi, ReturnTokenIdsAsVllmGivesThem) {
  Output o = output(" there!", {7, 8}, true);
  o.prompt_token_ids = {3, 4};
  o.logprobs = {{{7, -0.5f}, {{7, -0.5f}}}, {{8, -0.25f}, {{8, -0.25f}}}};
  ChoiceState st;
  take_logprobs(st, o);
  GenerationCall call = parse_ok(R"({"prompt": "Hi", "return_token_ids": true, "logprobs": 1,
                                     "return_tokens_as_token_ids": true})");
  json choice = completion_response(context(), call, {{st, o}}, Usage{})["choices"][0];
  EXPECT_EQ(choice["prompt_token_ids"], json({3, 4}));
  EXPECT_EQ(choice["token_ids"], json({7, 8}));
  EXPECT_EQ(choice["logprobs"]["tokens"], json({"token_id:7", "token_id:8"}));
  EXPECT_EQ(choice["logprobs"]["top_logprobs"][1], json::parse(R"({"token_id:8": -0.25})"));
  EXPECT_EQ(choice["logprobs"]["text_offset"], json({0, 3})) << "offsets still count the tokens' bytes";
  call = parse_ok(R"({"prompt": "Hi"})");
  choice = completion_response(context(), call, {{st, o}}, Usage{})["choices"][0];
  EXPECT_FALSE(choice.contains("token_ids"));
  EXPECT_FALSE(choice.contains("prompt_token_ids"));
  // Chat: the prompt's beside the choices; logprobs' "token" as ids, "bytes" still the token's.
  call = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "return_token_ids": true, "logprobs": true,
                      "return_tokens_as_token_ids": true})", true);
  json chat = completion_response(context(), call, {{st, o}}, Usage{});
  EXPECT_EQ(chat["prompt_token_ids"], json({3, 4}));
  EXPECT_EQ(chat["choices"][0]["token_ids"], json({7, 8}));
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["token"], "token_id:7");
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["bytes"],
            json({116, 111, 107, 101, 110, 95, 105, 100, 58, 55}));  // "token_id:7", as vLLM
  // Streamed: each event lists its new tokens, even one whose text is held back; the first lists the prompt's.
  for (bool is_chat : {false, true}) {
    call = is_chat ? parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "return_token_ids": true,
                                  "stream": true})", true)
                   : parse_ok(R"({"prompt": "Hi", "return_token_ids": true, "stream": true})");
    ChoiceState s;
    Output first = output("", {7}, false);  // its text held back (it may begin a stop string)
    first.prompt_token_ids = {3, 4};
    json c1 = stream_chunk(context(), call, s, first);
    ASSERT_FALSE(c1.is_null()) << "new tokens make an event";
    EXPECT_EQ(c1["choices"][0]["token_ids"], json({7}));
    EXPECT_EQ(is_chat ? c1["prompt_token_ids"] : c1["choices"][0]["prompt_token_ids"], json({3, 4}));
    EXPECT_TRUE(stream_chunk(context(), call, s, first).is_null()) << "nothing new";
    Output held = output("", {7, 8}, false);  // a token whose text is held back too
    held.prompt_token_ids = {3, 4};
    json c_held = stream_chunk(context(), call, s, held);
    ASSERT_FALSE(c_held.is_null()) << "new tokens make an event";
    EXPECT_EQ(c_held["choices"][0]["token_ids"], json({8}));
    Output last = output(" there!", {7, 8, 9}, true);
    last.prompt_token_ids = {3, 4};
    json c2 = stream_chunk(context(), call, s, last);
    EXPECT_EQ(c2["choices"][0]["token_ids"], json({9}));
    EXPECT_FALSE(c2.contains("prompt_token_ids"));
    EXPECT_FALSE(c2["choices"][0].contains("prompt_token_ids"));
  }
  EXPECT_EQ(parse_error(R"({"prompt": "x", "return_token_ids": 1})").param, "return_token_ids");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "return_tokens_as_token_ids": "yes"})").param,
            "return_tokens_as_token_ids");
}

// A model that computed NaN was answered 400 invalid_request_error, as if the client had sent a bad field.
TEST(OpenAiApi, EngineFailuresMapToStatuses) {
  EXPECT_EQ(from_status(data_loss("the model computed a logit of NaN")).status, 500);
  EXPECT_EQ(from_status(data_loss("x")).type, "server_error");
  EXPECT_EQ(from_status(internal_error("x")).status, 500);
  EXPECT_EQ(from_status(resource_exhausted("x")).status, 503);
  EXPECT_EQ(from_status(out_of_range("x")).code, "context_length_exceeded");
  EXPECT_EQ(from_status(invalid_argument("x")).status, 400);
  // A refusal that names a request field first gives it as the error's param (it was null).
  EXPECT_EQ(from_status(invalid_argument("allowed_token_ids: token id 99999 is outside the vocabulary")).param,
            "allowed_token_ids");
  EXPECT_EQ(from_status(invalid_argument("allowed_token_ids holds no token that can begin a JSON object")).param,
            "allowed_token_ids");
  EXPECT_EQ(from_status(invalid_argument("every token of allowed_token_ids is a word of bad_words")).param,
            "allowed_token_ids");
  EXPECT_EQ(from_status(invalid_argument("logit_bias token id 7 is outside the vocabulary")).param, "logit_bias");
  EXPECT_EQ(from_status(invalid_argument("bad_words make 200 token sequences")).param, "bad_words");
  EXPECT_EQ(from_status(invalid_argument("min_tokens (1) cannot be combined with choice")).param, "min_tokens");
  EXPECT_EQ(from_status(invalid_argument("logit_biased")).param, "");
  EXPECT_EQ(from_status(invalid_argument("the prompt is empty")).param, "");
}

// Logprobs name a token by its own bytes: a leading space stays (decoding " the" alone dropped it for
// SentencePiece vocabularies), bytes are 0-255 (a signed char gave -61 for 0xC3), and a token holding part of a
// character is "bytes:\xHH..." as OpenAI writes it (each was U+FFFD, so alternatives collided in one key).
TEST(OpenAiApi, LogprobsNameTokensByTheirBytes) {
  ResponseContext ctx = context();
  const std::map<int32_t, std::string> pieces = {{1, " the"}, {2, "\xC3\xA9"}, {3, "\xE2\x80"}, {4, "\x9C"}};
  ctx.token_piece = [&](int32_t id) { return pieces.at(id); };
  const auto generated = [] {
    Output o = output(" the\xC3\xA9\xE2\x80\x9C", {1, 2, 3, 4}, true);
    o.logprobs = {{{1, -0.5f}, {{1, -0.5f}, {2, -1.0f}}},
                  {{2, -0.25f}, {{2, -0.25f}}},
                  {{3, -1.0f}, {{3, -1.0f}, {4, -2.0f}}},
                  {{4, -0.125f}, {{4, -0.125f}}}};
    return o;
  };
  Output o = generated();
  GenerationCall chat = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                                     "top_logprobs": 2})", true);
  ChoiceState st;
  take_logprobs(st, o);
  json content = completion_response(ctx, chat, {{st, o}}, Usage{})["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  EXPECT_EQ(content[0]["token"], " the");
  EXPECT_EQ(content[0]["bytes"], json({32, 116, 104, 101}));
  EXPECT_EQ(content[1]["token"], "\xC3\xA9");
  EXPECT_EQ(content[1]["bytes"], json({195, 169}));
  EXPECT_EQ(content[2]["token"], "bytes:\\xe2\\x80");
  EXPECT_EQ(content[2]["bytes"], json({226, 128}));
  EXPECT_EQ(content[2]["top_logprobs"][1]["token"], "bytes:\\x9c");
  EXPECT_EQ(content[2]["top_logprobs"][1]["bytes"], json({156}));

  GenerationCall completion = parse_ok(R"({"prompt": "x", "logprobs": 2})");
  ChoiceState cs;
  o = generated();
  take_logprobs(cs, o);
  json lp = completion_response(ctx, completion, {{cs, o}}, Usage{})["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({" the", "\xC3\xA9", "bytes:\\xe2\\x80", "bytes:\\x9c"}));
  EXPECT_EQ(lp["top_logprobs"][2].size(), 2u) << "two partial characters, two names";
  EXPECT_EQ(lp["text_offset"], json({0, 4, 6, 8})) << "offsets count the tokens' bytes";
}

TEST(OpenAiApi, ChatStreamSendsRoleThenDeltasThenFinish) {
  GenerationCall call = parse_ok(R"({"messages": [{"role": "user", "content": "x"}], "stream": true})", true);
  ResponseContext ctx = context();
  ChoiceState st;
  json first = stream_chunk(ctx, call, st, output("", {}, false));
  ASSERT_FALSE(first.is_null());
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(stream_chunk(ctx, call, st, output("", {}, false)).is_null());  // nothing new
  json second = stream_chunk(ctx, call, st, output("Hel", {1}, false));
  EXPECT_EQ(second["choices"][0]["delta"], json({{"content", "Hel"}}));
  EXPECT_TRUE(second["choices"][0]["finish_reason"].is_null());
  json last = stream_chunk(ctx, call, st, output("Hello", {1, 2}, true));
  EXPECT_EQ(last["choices"][0]["delta"]["content"], "lo");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(stream_chunk(ctx, call, st, output("Hello", {1, 2}, true)).is_null());  // finished: no more
}

TEST(OpenAiApi, CompletionStreamEchoesOnceAndUsageChunk) {
  GenerationCall call = parse_ok(R"({"prompt": "Hi", "echo": true, "stream": true,
                                     "stream_options": {"include_usage": true}})");
  ResponseContext ctx = context();
  ChoiceState st;
  st.echo_text = "Hi";
  EXPECT_EQ(stream_chunk(ctx, call, st, output("", {}, false))["choices"][0]["text"], "Hi");
  EXPECT_TRUE(stream_chunk(ctx, call, st, output("", {}, false)).is_null());
  EXPECT_EQ(stream_chunk(ctx, call, st, output(" a", {3}, true))["choices"][0]["text"], " a");
  json u = usage_chunk(ctx, call, Usage{2, 1, 0});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["completion_tokens"], 1);
}

}  // namespace
}  // namespace kvshare::server
