// include/kvshare/tokenizer.h, the public Tokenizer, on real tokenizers from ../shared: llama.cpp's test vectors
// through Tokenizer::load, the vocabulary's spellings, the special tokens, the chat template against the committed
// Hugging Face goldens (tools and continue_final_message included), and Engine::tokenizer() being the same tokenizer.
#include "kvshare/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "kvshare/engine.h"
#include "test_util.h"

namespace kvshare {
namespace {

using nlohmann::ordered_json;

std::string shared(const std::string& rel) { return testing::shared_dir() + "/" + rel; }

std::unique_ptr<Tokenizer> load(const std::string& rel) {
  auto t = Tokenizer::load(shared(rel));
  KV_CHECK(t.ok(), t.status().to_string());
  return std::move(t).value();
}

// Json is nlohmann::json (keys sorted, logarithmic lookup) or ordered_json (file order kept, but every insert
// scans the keys before it: quadratic, a minute and a half for GPT-2's 50,257-entry vocab.json in the
// sanitizer build, whose test code is not optimized).
template <class Json = ordered_json>
Json read_json(const std::string& path) {
  auto text = read_text_file(path);
  KV_CHECK(text.ok(), text.status().to_string());
  return Json::parse(*text);
}

// Every text of llama.cpp's vectors NAME.inp must encode to its line of NAME.out (no BOS/EOS, special text not
// parsed) and decode back. Returns how many texts were checked.
int check_vectors(const Tokenizer& tok, const std::string& name) {
  const std::string base = shared("tokenizers/vectors/" + name);
  auto inp = read_text_file(base + ".inp");
  auto out = read_text_file(base + ".out");
  KV_CHECK(inp.ok() && out.ok(), "cannot read " + base);
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::istringstream lines(*out);
  int checked = 0;
  for (size_t pos = 0, end; pos < inp->size(); pos = end + separator.size(), ++checked) {
    end = inp->find(separator, pos);
    KV_CHECK(end != std::string::npos, "unterminated text in " + base + ".inp");
    const std::string text = inp->substr(pos, end - pos);
    std::string line;
    KV_CHECK(static_cast<bool>(std::getline(lines, line)), "too few lines in " + base + ".out");
    std::istringstream ids_in(line);
    std::vector<int32_t> want;
    for (int32_t id; ids_in >> id;) want.push_back(id);
    EXPECT_EQ(tok.encode(text, /*add_special=*/false, /*parse_special=*/false), want) << name << ": \"" << text << "\"";
    EXPECT_EQ(tok.decode(want), text) << name;
  }
  return checked;
}

TEST(PublicTokenizer, VectorsThroughLoad) {
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  KV_REQUIRE_SHARED("tokenizers/qwen3/tokenizer.json");
  EXPECT_GT(check_vectors(*load("tokenizers/gpt2"), "ggml-vocab-gpt-2.gguf"), 30);
  EXPECT_GT(check_vectors(*load("tokenizers/qwen3"), "ggml-vocab-qwen2.gguf"), 30);
  EXPECT_GT(check_vectors(*load("tokenizers/vectors/ggml-vocab-llama-spm.gguf"), "ggml-vocab-llama-spm.gguf"), 30);
}

TEST(PublicTokenizer, Gpt2SpecialTokensAndSpellings) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  const auto tok = load("tokenizers/gpt2");
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok->encode("Hello<|endoftext|>"), (std::vector<int32_t>{15496, 50256}));
  EXPECT_NE(tok->encode("Hello<|endoftext|>", true, /*parse_special=*/false).back(), 50256);
  EXPECT_EQ(tok->decode({15496, 995, 50256}), "Hello world<|endoftext|>");
  EXPECT_EQ(tok->decode({15496, 995, 50256}, /*skip_special=*/true), "Hello world");
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->bos_id(), 50256);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_FALSE(tok->adds_bos());
  EXPECT_TRUE(tok->is_special(50256));
  EXPECT_FALSE(tok->is_special(995));
  EXPECT_EQ(tok->token_piece(995), " world");
  EXPECT_EQ(tok->token_piece(50256), "<|endoftext|>");
  EXPECT_EQ(tok->token_piece(-1), "");
  // id_to_token spells every id as vocab.json does (GPT-2's byte alphabet: "Ġworld").
  const nlohmann::json vocab = read_json<nlohmann::json>(shared("tokenizers/gpt2/vocab.json"));
  ASSERT_EQ(static_cast<int32_t>(vocab.size()), tok->vocab_size());
  int differing = 0;
  for (const auto& [spelling, id] : vocab.items()) differing += tok->id_to_token(id.get<int32_t>()) != spelling;
  EXPECT_EQ(differing, 0);
  EXPECT_EQ(tok->id_to_token(995), "\xC4\xA0world");
  EXPECT_EQ(tok->id_to_token(50257), "");
}

TEST(PublicTokenizer, SentencePieceSpellingsAndBos) {
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  const auto tok = load("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->adds_bos());
  const std::vector<int32_t> ids = tok->encode("Hello\nworld");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->id_to_token(ids[1]), "\xE2\x96\x81Hello");  // "▁Hello"
  EXPECT_EQ(tok->token_piece(ids[1]), " Hello");
  EXPECT_EQ(tok->id_to_token(13), "<0x0A>");  // a byte-fallback token: spelled <0x0A>, stands for "\n"
  EXPECT_EQ(tok->token_piece(13), "\n");
  EXPECT_FALSE(tok->has_chat_template());
}

// The Qwen3 tokenizer folder carries the real Qwen3 chat template (the same text as ../shared/chat-templates).
class QwenChat : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::shared_dir().empty() || !file_exists(shared("tokenizers/qwen3/tokenizer_config.json")))
      GTEST_SKIP() << "skipped: needs ../shared/tokenizers/qwen3 (the shared data folder is absent)";
    tok = load("tokenizers/qwen3");
  }
  static std::string golden(const std::string& case_name, const std::string& mode) {
    return read_json(testing::source_dir() + "/tests/goldens/chat_templates/expected/Qwen-Qwen3-0.6B.json")[case_name]
                    [mode]["output"].get<std::string>();
  }
  static std::string chat_case(const std::string& name) {
    return read_json(testing::source_dir() + "/tests/goldens/chat_templates/cases/" + name + ".json").dump();
  }
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(QwenChat, ToolsRenderAsHuggingFaceDoes) {
  ASSERT_TRUE(tok->has_chat_template());
  for (const char* name : {"tools_no_calls", "tool_calls", "multi_turn"}) {
    for (bool agp : {true, false}) {
      auto prompt = tok->apply_chat_template(chat_case(name), {.add_generation_prompt = agp});
      ASSERT_TRUE(prompt.ok()) << prompt.status().to_string();
      EXPECT_EQ(*prompt, golden(name, agp ? "generation_prompt" : "no_generation_prompt")) << name;
    }
  }
  // The tool's JSON is in the prompt, between the template's <tools> tags.
  auto prompt = tok->apply_chat_template(chat_case("tools_no_calls"));
  ASSERT_TRUE(prompt.ok());
  EXPECT_NE(prompt->find("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"search\""), std::string::npos);
}

TEST_F(QwenChat, ContinueFinalMessageEndsInsideIt) {
  const std::string closed = golden("assistant_last", "no_generation_prompt");
  const std::string end_of_turn = "<|im_end|>\n";
  ASSERT_TRUE(closed.ends_with("sound of water" + end_of_turn));
  auto open = tok->apply_chat_template(chat_case("assistant_last"),
                                       {.add_generation_prompt = false, .continue_final_message = true});
  ASSERT_TRUE(open.ok()) << open.status().to_string();
  EXPECT_EQ(*open, closed.substr(0, closed.size() - end_of_turn.size()));
  // Whitespace after the text is kept only where the template kept it: Qwen3 keeps it, a template that trims not.
  const std::string spaced = R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello  "}])";
  auto kept = tok->apply_chat_template(spaced, {.add_generation_prompt = false, .continue_final_message = true});
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  EXPECT_TRUE(kept->ends_with("<think>\n\n</think>\n\nHello  ")) << *kept;
  auto trimmed = tok->apply_chat_template(
      spaced, {.add_generation_prompt = false,
               .continue_final_message = true,
               .chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endfor %}"});
  ASSERT_TRUE(trimmed.ok()) << trimmed.status().to_string();
  EXPECT_EQ(*trimmed, "<user>Hi</user><assistant>Hello");
}

TEST_F(QwenChat, Errors) {
  auto both = tok->apply_chat_template(chat_case("assistant_last"), {.continue_final_message = true});
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("cannot both be on"), std::string::npos) << both.status().message();
  auto bad_json = tok->apply_chat_template("[{\"role\": ");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_EQ(bad_json.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_json.status().message().find("not valid JSON"), std::string::npos);
  auto no_text = tok->apply_chat_template(R"([{"role": "user", "content": "Hi"}, {"role": "assistant"}])",
                                          {.add_generation_prompt = false,
                                           .continue_final_message = true,
                                           .chat_template = "{% for m in messages %}{{ m.role }}{% endfor %}"});
  ASSERT_FALSE(no_text.ok());
  EXPECT_NE(no_text.status().message().find("no text to continue"), std::string::npos) << no_text.status().message();
  auto syntax = tok->apply_chat_template("[]", {.chat_template = "{% for m in messages %}"});
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.status().message().find("line 1"), std::string::npos) << syntax.status().message();
}

TEST(PublicTokenizer, NoTemplateAndAGivenOne) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  const auto tok = load("tokenizers/gpt2");
  EXPECT_FALSE(tok->has_chat_template());
  const std::string hi = R"([{"role": "user", "content": "Hi"}])";
  auto none = tok->apply_chat_template(hi);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no chat template"), std::string::npos) << none.status().message();
  // A template of the caller's sees the tokenizer's BOS/EOS texts, and the other variables of the object.
  auto given = tok->apply_chat_template(R"({"messages": [{"role": "user", "content": "Hi"}], "who": "you"})",
                                        {.chat_template = "{{ bos_token }}{{ messages[0].content }}/{{ who }}"
                                                          "{% if add_generation_prompt %}{{ eos_token }}{% endif %}"});
  ASSERT_TRUE(given.ok()) << given.status().to_string();
  EXPECT_EQ(*given, "<|endoftext|>Hi/you<|endoftext|>");
}

TEST(PublicTokenizer, LoadErrors) {
  auto missing = Tokenizer::load("/nonexistent/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(PublicTokenizer, EngineHandsOutTheModelsTokenizer) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string model = shared("models/stories260K/stories260K.gguf");
  auto engine = Engine::create({.model_path = model, .kv_cache_bytes = 16 << 20});
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const Tokenizer& from_engine = (*engine)->tokenizer();
  const auto alone = load("models/stories260K/stories260K.gguf");
  const std::string text = "Once upon a time, a cat sat.";
  EXPECT_EQ(from_engine.encode(text), alone->encode(text));
  EXPECT_EQ(from_engine.vocab_size(), 512);
  EXPECT_EQ(from_engine.bos_id(), alone->bos_id());
  // The engine encodes a text prompt with the same tokenizer.
  Request r;
  r.prompt = text;
  r.params.max_tokens = 1;
  const std::vector<Output> out = (*engine)->generate({r});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].prompt_token_ids, from_engine.encode(text));
}

}  // namespace
}  // namespace kvshare
