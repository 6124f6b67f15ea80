// The engine against Hugging Face's own implementation (@huggingface/jinja 0.5.11): goldens rendered by
// tools/chat_templates/make_goldens.mjs, for the ten real templates in ../shared/chat-templates (read in place)
// times the conversations in tests/goldens/chat_templates/cases, and for our own small tricky templates.
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "test_util.h"

namespace kvshare {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string goldens() { return testing::source_dir() + "/tests/goldens/chat_templates"; }

// The clock make_goldens.mjs fixes: 2026-01-15 10:30 (UTC).
jinja::RenderOptions fixed_clock() {
  jinja::RenderOptions o;
  o.now = [] {
    std::tm tm{};
    tm.tm_year = 2026 - 1900;
    tm.tm_mon = 0;
    tm.tm_mday = 15;
    tm.tm_hour = 10;
    tm.tm_min = 30;
    return tm;
  };
  return o;
}

// Compares one rendering with its golden ({"output"} or {"error"}); returns a description of a mismatch.
std::string compare(const Result<std::string>& got, const ordered_json& want) {
  if (want.contains("output")) {
    if (!got.ok()) return "expected output, got error: " + got.status().message();
    if (*got != want.at("output").get<std::string>())
      return "output differs\n--- expected:\n" + want.at("output").get<std::string>() + "\n--- got:\n" + *got;
    return "";
  }
  if (got.ok()) return "expected the error \"" + want.at("error").get<std::string>() + "\", got output:\n" + *got;
  return "";
}

TEST(ChatTemplateGoldens, RealTemplatesMatchTheReference) {
  KV_REQUIRE_SHARED("chat-templates/README.md");
  const std::string tdir = testing::shared_dir() + "/chat-templates";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(goldens() + "/expected")) {
    const std::string name = entry.path().stem().string();
    const std::string tpl_path = tdir + "/" + name + ".jinja";
    ASSERT_TRUE(file_exists(tpl_path)) << tpl_path;
    auto tpl = ChatTemplate::from_string(slurp(tpl_path), "<s>", "</s>");
    ASSERT_TRUE(tpl.ok()) << name << ": " << tpl.status().message();
    const ordered_json expected = ordered_json::parse(slurp(entry.path().string()));
    for (auto c = expected.begin(); c != expected.end(); ++c) {
      const ordered_json conversation = ordered_json::parse(slurp(goldens() + "/cases/" + c.key() + ".json"));
      for (auto mode = c.value().begin(); mode != c.value().end(); ++mode) {
        const bool agp = mode.key() == "generation_prompt";
        const std::string diff = compare(tpl->apply(conversation, agp, fixed_clock()), mode.value());
        EXPECT_EQ(diff, "") << name << " x " << c.key() << " (" << mode.key() << ")";
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 10 * 2 * 10);
}

TEST(ChatTemplateGoldens, RaisedMessagesAreReported) {
  KV_REQUIRE_SHARED("chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja");
  auto tpl = ChatTemplate::from_string(
      slurp(testing::shared_dir() + "/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja"), "<s>", "</s>");
  ASSERT_TRUE(tpl.ok());
  auto r = tpl->apply(ordered_json::parse(slurp(goldens() + "/cases/alternation_error.json")), true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("conversation roles must alternate user/assistant"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("line 18, column"), std::string::npos) << r.status().message();
}

// tricky.txt: "### name" then the template, up to the next "### " line (as make_goldens.mjs splits it).
std::vector<std::pair<std::string, std::string>> tricky_cases() {
  std::vector<std::pair<std::string, std::string>> out;
  std::stringstream in(slurp(goldens() + "/tricky.txt"));
  std::string line;
  std::vector<std::string> body;
  std::string name;
  bool have = false;
  auto flush = [&] {
    if (!have) return;
    std::string t;
    for (size_t i = 0; i < body.size(); ++i) t += (i ? "\n" : "") + body[i];
    out.emplace_back(name, t);
  };
  // std::getline drops the final empty piece that JavaScript's split keeps after a trailing "\n".
  const std::string all = in.str();
  size_t start = 0;
  while (true) {
    const size_t nl = all.find('\n', start);
    line = all.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (line.rfind("### ", 0) == 0) {
      flush();
      name = line.substr(4);
      body.clear();
      have = true;
    } else if (have) {
      body.push_back(line);
    }
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  flush();
  return out;
}

TEST(ChatTemplateGoldens, TrickyTemplatesMatchTheReference) {
  const ordered_json expected = ordered_json::parse(slurp(goldens() + "/tricky_expected.json"));
  const ordered_json context = ordered_json::parse(slurp(goldens() + "/tricky_context.json"));
  std::vector<std::pair<std::string, jinja::Value>> vars;
  for (auto it = context.begin(); it != context.end(); ++it) vars.emplace_back(it.key(), jinja::Value::from_json(it.value()));
  const auto cases = tricky_cases();
  ASSERT_EQ(cases.size(), expected.size());
  for (const auto& [name, source] : cases) {
    ASSERT_TRUE(expected.contains(name)) << name;
    auto tpl = jinja::Template::parse(source);
    Result<std::string> got = tpl.ok() ? tpl->render(vars, fixed_clock()) : Result<std::string>(tpl.status());
    EXPECT_EQ(compare(got, expected.at(name)), "") << "tricky case " << name << "\n--- template:\n" << source;
  }
}

TEST(ChatTemplate, ModelFolderTemplateListAndTokens) {
  const std::string dir = testing::temp_dir("chat_template_model");
  {
    std::ofstream(dir + "/tokenizer_config.json")
        << R"({"bos_token": {"content": "<|begin|>"}, "eos_token": "<|end|>", "chat_template": [)"
        << R"({"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})";
  }
  auto tpl = ChatTemplate::from_model(dir);
  ASSERT_TRUE(tpl.ok()) << tpl.status().message();
  EXPECT_EQ(tpl->bos_token(), "<|begin|>");
  auto r = tpl->apply(ordered_json::parse(R"([{"role": "user", "content": "hi"}])"), true);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "<|begin|>hi<|end|>");
  // Every named template, picked as transformers' get_chat_template picks: by name, else "tool_use" for a
  // conversation with tools, else "default". Only "default" was read: tools went to a template without them.
  auto all = ModelChatTemplates::from_model(dir);
  ASSERT_TRUE(all.ok()) << all.status().message();
  const auto hi = ordered_json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(*(*all->pick("", /*has_tools=*/true))->apply(hi, true), "TOOLS");
  EXPECT_EQ(*(*all->pick("", false))->apply(hi, true), "<|begin|>hi<|end|>");
  EXPECT_EQ(*(*all->pick("tool_use", false))->apply(hi, true), "TOOLS");
  EXPECT_TRUE(all->has("tool_use"));
  EXPECT_FALSE(all->has("rag"));
  const auto rag = all->pick("rag", false);
  ASSERT_FALSE(rag.ok());
  EXPECT_NE(rag.status().message().find("no chat template named 'rag' (it has 'tool_use', 'default')"),
            std::string::npos)
      << rag.status().message();

  std::ofstream(dir + "/tokenizer_config.json") << R"({"chat_template": [{"name": "rag", "template": "x"}]})";
  auto missing = ChatTemplate::from_model(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("none named 'default'"), std::string::npos) << missing.status().message();
  EXPECT_TRUE((*ModelChatTemplates::from_model(dir)).pick("rag", false).ok());

  std::ofstream(dir + "/tokenizer_config.json") << R"({"eos_token": "E"})";
  std::ofstream(dir + "/chat_template.jinja") << "{% for m in messages %}{{ m.role }}{% endfor %}{{ eos_token }}";
  auto from_file = ChatTemplate::from_model(dir);
  ASSERT_TRUE(from_file.ok()) << from_file.status().message();
  EXPECT_EQ(*from_file->apply(ordered_json::parse(R"({"messages": [{"role": "user"}]})"), false), "userE");
}

// A GGUF's named templates, as llama.cpp's converter writes them: tokenizer.chat_template (the default),
// tokenizer.chat_templates (the names) and tokenizer.chat_template.NAME.
TEST(ChatTemplate, GgufNamedTemplates) {
  const std::string path = testing::temp_dir("chat_template_gguf") + "/named.gguf";
  GgufWriter w;
  w.set_string("tokenizer.chat_template", "DEFAULT");
  w.set_string_array("tokenizer.chat_templates", {"tool_use", "rag"});
  w.set_string("tokenizer.chat_template.tool_use", "TOOLS");
  w.set_string("tokenizer.chat_template.rag", "RAG");
  ASSERT_TRUE(w.write(path).ok());
  auto all = ModelChatTemplates::from_model(path);
  ASSERT_TRUE(all.ok()) << all.status().message();
  const auto hi = ordered_json::parse(R"([{"role": "user", "content": "hi"}])");
  EXPECT_EQ(*(*all->pick("", false))->apply(hi, true), "DEFAULT");
  EXPECT_EQ(*(*all->pick("", true))->apply(hi, true), "TOOLS");
  EXPECT_EQ(*(*all->pick("rag", false))->apply(hi, true), "RAG");
  EXPECT_EQ(*ChatTemplate::from_model(path)->apply(hi, true), "DEFAULT");
  w.set_string_array("tokenizer.chat_templates", {"missing"});
  ASSERT_TRUE(w.write(path).ok());
  const auto bad = ModelChatTemplates::from_model(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tokenizer.chat_template.missing is not a string"), std::string::npos)
      << bad.status().message();
}

TEST(ChatTemplate, ConversationMustHaveMessages) {
  auto tpl = ChatTemplate::from_string("{{ messages | length }}");
  ASSERT_TRUE(tpl.ok());
  EXPECT_FALSE(tpl->apply(ordered_json::parse(R"({"tools": []})"), true).ok());
  EXPECT_FALSE(tpl->apply(ordered_json::parse(R"("text")"), true).ok());
  EXPECT_EQ(*tpl->apply(ordered_json::parse(R"({"messages": [1, 2]})"), true), "2");
}

// A conversation whose tool call's arguments are the JSON text OpenAI's clients send.
ordered_json tool_call_conversation(const std::string& arguments) {
  return {{"messages",
           {{{"role", "user"}, {"content", "Weather in Oslo?"}},
            {{"role", "assistant"},
             {"content", nullptr},
             {"tool_calls", {{{"id", "call_1"}, {"type", "function"},
                              {"function", {{"name", "get_weather"}, {"arguments", arguments}}}}}}},
            {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "-3 C"}}}}};
}

// Arguments given as JSON text reach the template as the object (tojson writes it, items walks it), which is its
// text where the template makes it a string; text that would not write back the same stays text. Off (Hugging
// Face's apply_chat_template), the text stays text.
TEST(ChatTemplate, ToolCallArgumentsBecomeObjects) {
  auto tpl = ChatTemplate::from_string(
      "{%- set a = messages[1].tool_calls[0].function.arguments -%}"
      "{{ a | tojson }}|{{ a is mapping }}|{{ '<' + a + '>' }}|{{ a }}|"
      "{%- if a is mapping %}{% for k, v in a | items %}{{ k }}={{ v }};{% endfor %}{% endif %}");
  ASSERT_TRUE(tpl.ok()) << tpl.status().message();
  auto render = [&](const std::string& arguments, bool convert) {
    auto r = tpl->apply(tool_call_conversation(arguments), false, {}, convert);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : "";
  };
  const std::string oslo = R"({"city":  "Oslo", "days": 2})";
  EXPECT_EQ(render(oslo, true), R"({"city": "Oslo", "days": 2}|true|<{"city":  "Oslo", "days": 2}>|)"
                                R"({"city":  "Oslo", "days": 2}|city=Oslo;days=2;)");
  EXPECT_EQ(render(oslo, false), R"("{\"city\":  \"Oslo\", \"days\": 2}"|false|<{"city":  "Oslo", "days": 2}>|)"
                                 R"({"city":  "Oslo", "days": 2}|)");
  // Stays text: not an object, not JSON, an integer a double rounds, a key JavaScript's order moves, deep nesting.
  const std::string deep = std::string(70, '[') + std::string(70, ']');
  for (const std::string& text : {std::string("[1, 2]"), std::string("not json"),
                                  std::string("{\"id\": 12345678901234567}"), std::string("{\"b\": 1, \"0\": 2}"),
                                  std::string("{\"id\": -123456789012345678901}"),  // past 64 bits: a double
                                  "{\"a\": " + deep + "}"})
    EXPECT_EQ(render(text, true), render(text, false)) << text;
  EXPECT_NE(render("{\"id\": 9007199254740992, \"k\": \"01\"}", true),
            render("{\"id\": 9007199254740992, \"k\": \"01\"}", false));  // 2^53 and "01" write back
}

// Real templates: Llama 3.1 writes arguments with tojson (a string came out quoted), DeepSeek-R1-Distill-Llama adds
// them to a string (an object came out "[object Map]"): both write the call as the client sent it.
TEST(ChatTemplateGoldens, ToolCallArgumentsSentBackRenderAsWritten) {
  KV_REQUIRE_SHARED("chat-templates/README.md");
  const std::string arguments = R"({"city": "Oslo"})";
  for (const auto& [name, written] : std::vector<std::pair<std::string, std::string>>{
           {"meta-llama-Llama-3.1-8B-Instruct", R"({"name": "get_weather", "parameters": {"city": "Oslo"}})"},
           {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "get_weather\n```json\n{\"city\": \"Oslo\"}\n```"}}) {
    auto tpl = ChatTemplate::from_string(slurp(testing::shared_dir() + "/chat-templates/" + name + ".jinja"), "<s>",
                                         "</s>");
    ASSERT_TRUE(tpl.ok()) << name << ": " << tpl.status().message();
    auto text = tpl->apply(tool_call_conversation(arguments), true, {}, true);
    ASSERT_TRUE(text.ok()) << name << ": " << text.status().message();
    EXPECT_NE(text->find(written), std::string::npos) << name << ":\n" << *text;
    EXPECT_EQ(text->find("[object Map]"), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace kvshare
