#include "model/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "test_util.h"

namespace kvshare {
namespace {

using Json = nlohmann::json;

Json llama_json() {
  return Json{{"model_type", "llama"},  {"vocab_size", 32},          {"hidden_size", 16},
              {"num_hidden_layers", 1}, {"num_attention_heads", 2},  {"num_key_value_heads", 1},
              {"intermediate_size", 32}, {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6},
              {"rope_theta", 10000.0}};
}

Json gpt2_json() {
  return Json{{"model_type", "gpt2"}, {"vocab_size", 32}, {"n_embd", 16},        {"n_layer", 1},
              {"n_head", 2},          {"n_positions", 64}, {"layer_norm_epsilon", 1e-5}};
}

// Expects parse_hf_config to fail with invalid_argument and a message holding every one of `words`.
void expect_config_error(const std::string& text, std::initializer_list<const char*> words) {
  Result<ModelConfig> r = parse_hf_config(text);
  ASSERT_FALSE(r.ok()) << "accepted: " << text;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
  for (const char* w : words) EXPECT_NE(r.status().message().find(w), std::string::npos) << r.status().to_string();
}

TEST(ModelConfig, ValidConfigsParse) {
  Result<ModelConfig> llama = parse_hf_config(llama_json().dump());
  ASSERT_TRUE(llama.ok()) << llama.status().to_string();
  EXPECT_FLOAT_EQ(llama->norm_eps, 1e-6f);
  EXPECT_EQ(llama->rope_theta, 10000.0);
  // Optional numbers may be absent or null: the defaults apply.
  Json j = llama_json();
  j.erase("rope_theta");
  j["rms_norm_eps"] = nullptr;
  Result<ModelConfig> defaults = parse_hf_config(j.dump());
  ASSERT_TRUE(defaults.ok()) << defaults.status().to_string();
  EXPECT_EQ(defaults->rope_theta, 10000.0);
  EXPECT_FLOAT_EQ(defaults->norm_eps, 1e-6f);
  // An integer is a number.
  j["rope_theta"] = 500000;
  ASSERT_TRUE(parse_hf_config(j.dump()).ok());
  ASSERT_TRUE(parse_hf_config(gpt2_json().dump()).ok());
}

TEST(ModelConfig, NonsenseEpsilonAndThetaAreRejected) {
  for (double bad : {-1.0, 0.0, 1e-60 /* 0 as a float */}) {
    Json j = llama_json();
    j["rms_norm_eps"] = bad;
    expect_config_error(j.dump(), {"rms_norm_eps", "greater than 0"});
    j = llama_json();
    j["rope_theta"] = bad;
    if (bad != 1e-60) expect_config_error(j.dump(), {"\"rope_theta\"", "greater than 0"});
    j = gpt2_json();
    j["layer_norm_epsilon"] = bad;
    expect_config_error(j.dump(), {"layer_norm_epsilon", "greater than 0"});
  }
  // Too large for a float: infinite.
  Json j = llama_json();
  j["rms_norm_eps"] = 1e300;
  expect_config_error(j.dump(), {"rms_norm_eps", "finite"});
  // JSON has no infinity; a number out of double range is refused by the JSON parser itself.
  std::string text = llama_json().dump();
  text.replace(text.find("10000.0"), 7, "1e999");
  expect_config_error(text, {"config.json"});
}

TEST(ModelConfig, WrongJsonTypesNameTheField) {
  Json j = llama_json();
  j["rope_theta"] = "x";
  expect_config_error(j.dump(), {"\"rope_theta\"", "must be a number", "\"x\""});
  j = llama_json();
  j["rms_norm_eps"] = Json::array({1e-6});
  expect_config_error(j.dump(), {"\"rms_norm_eps\"", "must be a number"});
  j = gpt2_json();
  j["layer_norm_epsilon"] = true;
  expect_config_error(j.dump(), {"\"layer_norm_epsilon\"", "must be a number"});
  j = llama_json();
  j["num_key_value_heads"] = "1";
  expect_config_error(j.dump(), {"\"num_key_value_heads\"", "must be an integer"});
  j = llama_json();
  j["head_dim"] = 8.5;
  expect_config_error(j.dump(), {"\"head_dim\"", "must be an integer"});
  j = llama_json();
  j["hidden_size"] = "16";
  expect_config_error(j.dump(), {"\"hidden_size\"", "must be an integer"});
  // 2^63 is read as unsigned; it wrapped to -2^63 ("must be positive, got -9223372036854775808").
  for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers"}) {
    std::string text = llama_json().dump();
    const std::string from = std::string("\"") + key + "\":";
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos);
    const size_t end = text.find_first_of(",}", at);
    text.replace(at + from.size(), end - at - from.size(), "9223372036854775808");
    expect_config_error(text, {key, "9223372036854775808", "too large"});
  }
  j = gpt2_json();
  j["n_inner"] = "64";
  expect_config_error(j.dump(), {"\"n_inner\"", "must be an integer"});
  j = llama_json();
  j["tie_word_embeddings"] = "true";
  expect_config_error(j.dump(), {"\"tie_word_embeddings\"", "must be true or false"});
  j = llama_json();
  j["hidden_act"] = 1;
  expect_config_error(j.dump(), {"\"hidden_act\"", "must be a string"});
  j = llama_json();
  j["rope_scaling"] = {{"rope_type", 3}};
  expect_config_error(j.dump(), {"\"rope_type\"", "must be a string"});
  j = llama_json();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", "8"}};
  expect_config_error(j.dump(), {"\"factor\"", "must be a number"});
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", -8}};
  expect_config_error(j.dump(), {"\"factor\"", "greater than 0"});
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8}, {"low_freq_factor", 4}, {"high_freq_factor", 4},
                       {"original_max_position_embeddings", 32}};
  expect_config_error(j.dump(), {"high_freq_factor", "must be greater than", "low_freq_factor"});
  // rope_scaling of another JSON type was ignored (the model ran unscaled).
  j["rope_scaling"] = "linear";
  expect_config_error(j.dump(), {"rope_scaling must be an object", "\"linear\""});
  j["rope_scaling"] = Json::array({1, 2});
  expect_config_error(j.dump(), {"rope_scaling must be an object", "[1,2]"});
  j["rope_scaling"] = nullptr;
  EXPECT_TRUE(parse_hf_config(j.dump()).ok());
}

// A llama3 rope_scaling without one of its numbers took a default (factor 8, low_freq_factor 1, high_freq_factor 4,
// original_max_position_embeddings 8192) without a word, so a model trained with others ran with the wrong
// frequencies; transformers refuses it ("Missing required keys in `rope_scaling`"). The "default" type needs no
// other key; a rope_scaling naming no type at all is refused too.
TEST(ModelConfig, Llama3RopeScalingWithoutOneOfItsKeysIsRefused) {
  const Json full = {{"rope_type", "llama3"},      {"factor", 8.0},
                     {"low_freq_factor", 1.0},     {"high_freq_factor", 4.0},
                     {"original_max_position_embeddings", 32}};
  Json j = llama_json();
  j["rope_scaling"] = full;
  Result<ModelConfig> ok = parse_hf_config(j.dump());
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->rope_scaling.original_max_position_embeddings, 32.0);
  for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
    j["rope_scaling"] = full;
    j["rope_scaling"].erase(key);
    const std::string missing = std::string("rope_scaling of type \"llama3\" has no \"") + key + "\"";
    expect_config_error(j.dump(), {missing.c_str(), "transformers refuses it too"});
    j["rope_scaling"][key] = nullptr;
    expect_config_error(j.dump(), {missing.c_str()});
    // The legacy "type" key names the type as well.
    j["rope_scaling"].erase("rope_type");
    j["rope_scaling"]["type"] = "llama3";
    expect_config_error(j.dump(), {missing.c_str()});
  }
  j["rope_scaling"] = full;
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";
  EXPECT_TRUE(parse_hf_config(j.dump()).ok());
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_TRUE(parse_hf_config(j.dump()).ok());
  j["rope_scaling"] = {{"factor", 8.0}, {"low_freq_factor", 1.0}};
  expect_config_error(j.dump(), {"rope_scaling has no \"rope_type\""});
}

// partial_rotary_factor below 1 rotates only the first part of each head; kvshare rotates all of it, so such a
// model ran with the wrong positions without a word. Refused, as GGUF's rope.dimension_count short of the head is.
TEST(ModelConfig, PartialRotaryFactorIsRefused) {
  for (const auto& [factor, text] : std::vector<std::pair<double, const char*>>{
           {0.5, "0.5"}, {0.0, "0"}, {0.25, "0.25"}, {2.0, "2"}}) {
    Json j = llama_json();
    j["partial_rotary_factor"] = factor;
    Result<ModelConfig> r = parse_hf_config(j.dump());
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().to_string();
    const std::string words =
        std::string("partial_rotary_factor ") + text + " is not supported: kvshare rotates the whole head";
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().to_string();
  }
  Json j = llama_json();
  j["partial_rotary_factor"] = "0.5";
  expect_config_error(j.dump(), {"\"partial_rotary_factor\"", "must be a number"});
  for (const Json& whole : {Json(1), Json(1.0), Json(nullptr)}) {
    j["partial_rotary_factor"] = whole;
    EXPECT_TRUE(parse_hf_config(j.dump()).ok()) << whole.dump();
  }
}

// architectures naming another model than model_type (GPT2LMHeadModel beside model_type "llama") loaded as
// model_type says, while vLLM and llama.cpp's converter pick the model by architectures: the files contradict
// themselves, and are refused naming both. A model_type's own classes (any task head) are accepted.
TEST(ModelConfig, ArchitecturesThatContradictModelTypeAreRefused) {
  auto config = [](const char* model_type, const Json& architectures) {
    Json j = std::string(model_type) == "gpt2" ? gpt2_json() : llama_json();
    j["model_type"] = model_type;
    j["architectures"] = architectures;
    return j.dump();
  };
  for (const auto& [type, arch] : std::vector<std::pair<const char*, Json>>{
           {"llama", Json::array({"LlamaForCausalLM"})},
           {"llama", Json::array({"LLaMAForCausalLM"})},
           {"llama", Json::array({"LlamaForSequenceClassification"})},
           {"qwen2", Json::array({"Qwen2ForCausalLM"})},
           {"mistral", Json::array({"MistralForCausalLM"})},
           {"gpt2", Json::array({"GPT2LMHeadModel"})},
           {"gpt2", Json::array({"GPT2Model"})},
           {"llama", Json::array()},
           {"gpt2", Json(nullptr)}}) {
    Result<ModelConfig> r = parse_hf_config(config(type, arch));
    EXPECT_TRUE(r.ok()) << type << " " << arch.dump() << ": " << r.status().to_string();
  }
  for (const auto& [type, arch, named] : std::vector<std::tuple<const char*, Json, const char*>>{
           {"llama", Json::array({"GPT2LMHeadModel"}), "GPT2LMHeadModel"},
           {"gpt2", Json::array({"LlamaForCausalLM"}), "LlamaForCausalLM"},
           {"qwen2", Json::array({"LlamaForCausalLM"}), "LlamaForCausalLM"},
           {"llama", Json::array({"MistralForCausalLM"}), "MistralForCausalLM"},
           {"llama", Json::array({"Qwen2ForCausalLM"}), "Qwen2ForCausalLM"},
           {"qwen2", Json::array({"Qwen2MoeForCausalLM"}), "Qwen2MoeForCausalLM"},
           {"mistral", Json::array({"MixtralForCausalLM"}), "MixtralForCausalLM"},
           {"llama", Json::array({"LlamaForCausalLM", "GPT2LMHeadModel"}), "GPT2LMHeadModel"}}) {
    const std::string words = std::string("architectures names \"") + named + "\"";
    const std::string type_words = std::string("model_type is \"") + type + "\"";
    expect_config_error(config(type, arch), {words.c_str(), type_words.c_str()});
  }
  expect_config_error(config("llama", "LlamaForCausalLM"), {"\"architectures\" must be a list of class names"});
  expect_config_error(config("llama", Json::array({1})), {"\"architectures\" must be a list of class names", "[1]"});
}

// GPT-2 options that change the attention's arithmetic are refused, not ignored.
TEST(ModelConfig, UnsupportedGpt2AttentionOptionsAreRefused) {
  for (const char* key : {"scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"}) {
    Json j = gpt2_json();
    j[key] = std::string(key) != "scale_attn_weights";
    Result<ModelConfig> r = parse_hf_config(j.dump());
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(r.status().message().find(key), std::string::npos) << r.status().to_string();
  }
  Json j = gpt2_json();
  j["scale_attn_weights"] = true;  // the default, as every released GPT-2 has it
  EXPECT_TRUE(parse_hf_config(j.dump()).ok());
}

TEST(ModelConfig, ValidateChecksRealNumbers) {
  Result<ModelConfig> c = parse_hf_config(llama_json().dump());
  ASSERT_TRUE(c.ok());
  ModelConfig bad = *c;
  bad.norm_eps = -1;
  EXPECT_NE(bad.validate().message().find("norm_eps"), std::string::npos) << bad.validate().to_string();
  bad = *c;
  bad.rope_theta = std::nan("");
  EXPECT_NE(bad.validate().message().find("rope_theta"), std::string::npos) << bad.validate().to_string();
  bad = *c;
  bad.rope_freq_factors = {1.0f, 0.0f};
  EXPECT_NE(bad.validate().message().find("rope_freq_factors[1]"), std::string::npos) << bad.validate().to_string();
  // Finite values whose RoPE frequencies or angles are not finite float32 numbers: each loaded, then computed NaN.
  bad = *c;
  bad.rope_theta = 1e39;  // infinite as a float
  EXPECT_NE(bad.validate().message().find("rope_theta is 1e+39, which is infinite as a float32"), std::string::npos)
      << bad.validate().to_string();
  bad.rope_theta = 1e-300;  // 0 as a float: det::powf's log was given 0, and the frequencies came out finite garbage
  EXPECT_NE(bad.validate().message().find("which is 0 as a float32"), std::string::npos) << bad.validate().to_string();
  bad.rope_theta = 1e-40;  // subnormal as a float: below the range limits.md gives
  EXPECT_NE(bad.validate().message().find("which is subnormal as a float32"), std::string::npos)
      << bad.validate().to_string();
  bad = *c;
  bad.rope_theta = 0.001;  // frequencies up to 178 (head_dim 8): the angle at the last position passes 2^30
  bad.max_context = 1 << 24;
  EXPECT_NE(bad.validate().message().find("not a finite number below 2^30"), std::string::npos)
      << bad.validate().to_string();
  bad = *c;
  bad.rope_freq_factors.assign(static_cast<size_t>(c->head_dim / 2), 1.0f);
  EXPECT_TRUE(bad.validate().ok()) << bad.validate().to_string();
  bad.rope_freq_factors[1] = 1e-38f;  // frequency 1 grows past float's range
  EXPECT_NE(bad.validate().message().find("RoPE frequency 1 is"), std::string::npos) << bad.validate().to_string();
  EXPECT_NE(bad.validate().message().find("and rope_freqs"), std::string::npos) << bad.validate().to_string();
  Json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 1e-300}, {"low_freq_factor", 1}, {"high_freq_factor", 4},
                       {"original_max_position_embeddings", 8192}};
  expect_config_error(j.dump(), {"rope_scaling.factor 1e-300", "out of range"});
}

// A minimal llama GGUF (metadata only: the config needs no tensors), with `edit` applied to the writer.
Result<ModelConfig> gguf_config(const std::string& name, const std::function<void(GgufWriter&)>& edit) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.embedding_length", 16);
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.attention.head_count", 2);
  w.set_u32("llama.attention.head_count_kv", 1);
  w.set_u32("llama.feed_forward_length", 32);
  w.set_u32("llama.context_length", 64);
  w.set_u32("llama.vocab_size", 32);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  edit(w);
  const std::string path = testing::temp_dir("config_gguf") + "/" + name + ".gguf";
  KV_RETURN_IF_ERROR(w.write(path));
  KV_ASSIGN_OR_RETURN(GgufFile g, GgufFile::open(path));
  return config_from_gguf(g);
}

void expect_gguf_error(const std::string& name, const std::function<void(GgufWriter&)>& edit,
                       std::initializer_list<const char*> words, StatusCode code = StatusCode::kInvalidArgument) {
  Result<ModelConfig> r = gguf_config(name, edit);
  ASSERT_FALSE(r.ok()) << name << " accepted";
  EXPECT_EQ(r.status().code(), code) << r.status().to_string();
  for (const char* w : words) EXPECT_NE(r.status().message().find(w), std::string::npos) << r.status().to_string();
}

TEST(ModelConfig, GgufMetadataIsCheckedToo) {
  Result<ModelConfig> ok = gguf_config("ok", [](GgufWriter&) {});
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->rope_theta, 10000.0);
  expect_gguf_error("eps_negative", [](GgufWriter& w) { w.set_f32("llama.attention.layer_norm_rms_epsilon", -1); },
                    {"llama.attention.layer_norm_rms_epsilon", "greater than 0"});
  expect_gguf_error("eps_zero", [](GgufWriter& w) { w.set_f64("llama.attention.layer_norm_rms_epsilon", 0); },
                    {"llama.attention.layer_norm_rms_epsilon", "greater than 0"});
  expect_gguf_error("theta_negative", [](GgufWriter& w) { w.set_f32("llama.rope.freq_base", -1); },
                    {"llama.rope.freq_base", "greater than 0"});
  expect_gguf_error("theta_nan", [](GgufWriter& w) { w.set_f64("llama.rope.freq_base", std::nan("")); },
                    {"llama.rope.freq_base", "finite"});
  expect_gguf_error("theta_string", [](GgufWriter& w) { w.set_string("llama.rope.freq_base", "x"); },
                    {"llama.rope.freq_base", "not a number"});
  expect_gguf_error("kv_heads_string", [](GgufWriter& w) { w.set_string("llama.attention.head_count_kv", "1"); },
                    {"llama.attention.head_count_kv"});
  expect_gguf_error("vocab_float", [](GgufWriter& w) { w.set_f32("llama.vocab_size", 32); },
                    {"llama.vocab_size"});
  // A mixture of experts (Mixtral is stored as "llama") loaded as a dense model when its tensors were dense.
  expect_gguf_error("experts", [](GgufWriter& w) { w.set_u32("llama.expert_count", 8); },
                    {"llama.expert_count is 8", "mixture-of-experts"}, StatusCode::kUnimplemented);
  Result<ModelConfig> dense = gguf_config("no_experts", [](GgufWriter& w) { w.set_u32("llama.expert_count", 0); });
  EXPECT_TRUE(dense.ok()) << dense.status().to_string();
}

// RoPE scaling and sliding windows in GGUF metadata were ignored (the model ran unscaled, with full attention)
// while config.json refuses them: both paths now refuse what kvshare does not implement.
TEST(ModelConfig, GgufRopeScalingAndSlidingWindowAreRefusedAsInConfigJson) {
  Json j = llama_json();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4}};
  const Status hf = parse_hf_config(j.dump()).status();
  EXPECT_EQ(hf.code(), StatusCode::kUnimplemented) << hf.to_string();
  expect_gguf_error("yarn", [](GgufWriter& w) {
    w.set_string("llama.rope.scaling.type", "yarn");
    w.set_f32("llama.rope.scaling.factor", 4);
  }, {"RoPE scaling type 'yarn'", "llama.rope.scaling.factor 4", "not supported (only llama3"},
                    StatusCode::kUnimplemented);
  // llama.cpp takes a factor without a type as linear scaling, and so does the older rope.scale_linear.
  expect_gguf_error("factor_only", [](GgufWriter& w) { w.set_f32("llama.rope.scaling.factor", 2); },
                    {"type 'linear'", "llama.rope.scaling.factor 2"}, StatusCode::kUnimplemented);
  expect_gguf_error("scale_linear", [](GgufWriter& w) { w.set_f32("llama.rope.scale_linear", 2); },
                    {"type 'linear'", "llama.rope.scale_linear 2"}, StatusCode::kUnimplemented);
  expect_gguf_error("type_number", [](GgufWriter& w) { w.set_u32("llama.rope.scaling.type", 1); },
                    {"llama.rope.scaling.type"});
  // Scalings that scale nothing load.
  for (const auto& edit : std::vector<std::function<void(GgufWriter&)>>{
           [](GgufWriter& w) { w.set_string("llama.rope.scaling.type", "none"); },
           [](GgufWriter& w) {
             w.set_string("llama.rope.scaling.type", "none");
             w.set_f32("llama.rope.scaling.factor", 8);
           },
           [](GgufWriter& w) {
             w.set_string("llama.rope.scaling.type", "linear");
             w.set_f32("llama.rope.scaling.factor", 1);
           },
           [](GgufWriter& w) { w.set_f32("llama.rope.scale_linear", 1); }}) {
    Result<ModelConfig> c = gguf_config("no_scaling", edit);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
  }

  j = llama_json();
  j["sliding_window"] = 32;
  j["use_sliding_window"] = true;
  EXPECT_EQ(parse_hf_config(j.dump()).status().code(), StatusCode::kUnimplemented);
  expect_gguf_error("window", [](GgufWriter& w) { w.set_u32("llama.attention.sliding_window", 32); },
                    {"llama.attention.sliding_window is 32, shorter than llama.context_length (64)", "not supported"},
                    StatusCode::kUnimplemented);
  // A window as long as the context never applies.
  Result<ModelConfig> c =
      gguf_config("window_64", [](GgufWriter& w) { w.set_u32("llama.attention.sliding_window", 64); });
  EXPECT_TRUE(c.ok()) << c.status().to_string();
}

// Head counts that do not divide the width are named as such (GPT-2 with n_head 7 was told "head_dim must be
// even for RoPE": GPT-2 has no RoPE).
TEST(ModelConfig, HeadCountsThatDoNotDivideTheWidthAreNamed) {
  Json j = gpt2_json();
  j["n_head"] = 3;
  expect_config_error(j.dump(), {"n_embd (16) must be a multiple of n_head (3)"});
  j = llama_json();
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 3;
  expect_config_error(j.dump(), {"hidden_size (16) is not a multiple of num_attention_heads (3)", "no head_dim"});
  j["head_dim"] = 6;  // an explicit head size need not divide the width
  EXPECT_TRUE(parse_hf_config(j.dump()).ok());
  j["head_dim"] = 5;
  expect_config_error(j.dump(), {"head_dim (5) must be even for RoPE"});
  expect_gguf_error("heads_3", [](GgufWriter& w) { w.set_u32("llama.attention.head_count", 3); },
                    {"llama.embedding_length (16) must be a positive multiple of llama.attention.head_count (3)"});
  expect_gguf_error("heads_0", [](GgufWriter& w) { w.set_u32("llama.attention.head_count", 0); },
                    {"llama.attention.head_count (0)"});
  expect_gguf_error("width_0", [](GgufWriter& w) { w.set_u32("llama.embedding_length", 0); },
                    {"llama.embedding_length (0)"});
}

}  // namespace
}  // namespace kvshare
