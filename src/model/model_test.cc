#include "model/model.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "make_model/make_model.h"
#include "test_util.h"

namespace kvshare {
namespace {

// make_model's "tiny" model of `arch` (2 layers) as a folder with model.gguf beside it.
std::string tiny_model(const std::string& arch) {
  MakeModelOptions o;
  o.arch = arch;
  o.shape = "tiny";
  o.tokenizer_dir = testing::gpt2_tokenizer_dir();
  o.out_dir = testing::temp_dir("model_tiny_" + arch);
  const Status st = make_model(o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return o.out_dir;
}

void expect_error_holding(const Status& st, std::initializer_list<std::string> words) {
  ASSERT_FALSE(st.ok());
  for (const std::string& w : words)
    EXPECT_NE(st.message().find(w), std::string::npos) << w << " in " << st.to_string();
}

// Metadata claiming fewer layers than the file stores once loaded and ran the first layers only, giving garbage.
TEST(BuildModel, LayersPastTheConfigsCountAreRefused) {
  KV_REQUIRE_GPT2_TOKENIZER();
  for (const std::string arch : {"gpt2", "llama", "qwen2"}) {
    const std::string dir = tiny_model(arch);
    // The folder, through config.json.
    const std::string key = arch == "gpt2" ? "n_layer" : "num_hidden_layers";
    nlohmann::json config = nlohmann::json::parse(*read_text_file(dir + "/config.json"));
    ASSERT_EQ(config[key], 2);
    config[key] = 1;
    std::ofstream(dir + "/config.json") << config.dump();
    const std::string first = arch == "gpt2" ? "transformer.h.1." : "model.layers.1.";
    expect_error_holding(load_model(dir).status(),
                         {dir, "tensor '" + first, "of layer 1", "config.json's " + key + " is 1",
                          "disagrees with the file"});
    // The GGUF, with block_count lowered.
    Result<GgufFile> gguf = GgufFile::open(dir + "/model.gguf");
    ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
    Result<ModelConfig> c = config_from_gguf(*gguf);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    ASSERT_EQ(c->num_layers, 2);
    c->num_layers = 1;
    expect_error_holding(build_model(*c, gguf->tensors(), WeightSource::kGguf).status(),
                         {"tensor 'blk.1.", "GGUF " + arch + ".block_count is 1"});
    // The count the files were written with loads.
    c->num_layers = 2;
    EXPECT_TRUE(build_model(*c, gguf->tensors(), WeightSource::kGguf).ok());
  }
}

// A tied model storing neither its embedding nor lm_head.weight (which a tied checkpoint may store in its place)
// was said to lack 'lm_head.weight'; the tensor it needs is the embedding.
TEST(BuildModel, ATiedModelWithNoEmbeddingNamesTheEmbedding) {
  KV_REQUIRE_GPT2_TOKENIZER();
  const std::string dir = tiny_model("qwen2");  // tied
  Result<ModelConfig> c = parse_hf_config(*read_text_file(dir + "/config.json"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_TRUE(c->tie_embeddings);
  Result<TensorStore> stored = load_safetensors_dir(dir);
  ASSERT_TRUE(stored.ok()) << stored.status().to_string();
  TensorStore store;  // views into `stored`'s mapping, which outlives it
  for (const auto& [name, view] : stored->tensors())
    if (name != "model.embed_tokens.weight") store.add(name, view);
  ASSERT_FALSE(store.contains("lm_head.weight"));
  expect_error_holding(build_model(*c, store, WeightSource::kHuggingFace).status(),
                       {"the model has no tensor 'model.embed_tokens.weight'"});
}

// A tensor that no part of the model reads (a file written for another variant) was ignored without a word.
TEST(BuildModel, TensorsTheModelDoesNotUseAreRefused) {
  KV_REQUIRE_GPT2_TOKENIZER();
  for (const std::string arch : {"gpt2", "llama", "qwen2"}) {
    const std::string dir = tiny_model(arch);
    Result<ModelConfig> c = parse_hf_config(*read_text_file(dir + "/config.json"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    Result<TensorStore> stored = load_safetensors_dir(dir);
    ASSERT_TRUE(stored.ok()) << stored.status().to_string();
    const std::vector<float> extra(8, 1.0f);
    auto with = [&](std::initializer_list<std::string> names) {
      TensorStore store;  // views into `stored`'s mapping, which outlives it
      for (const auto& [name, view] : stored->tensors()) store.add(name, view);
      for (const std::string& n : names) store.add(n, TensorView{DType::kF32, {8}, extra.data()});
      return build_model(*c, std::move(store), WeightSource::kHuggingFace).status();
    };
    EXPECT_TRUE(with({}).ok());
    expect_error_holding(with({"junk"}), {"1 tensor that a " + c->model_type + " model does not use ('junk')",
                                          "another architecture"});
    expect_error_holding(with({"a.weight", "b", "c", "d", "e", "f", "g"}),
                         {"7 tensors", "('a.weight', 'b', 'c', 'd', 'e' and 2 more)"});
    // Buffers that real checkpoints carry load as before.
    const std::string layer0 = arch == "gpt2" ? "transformer.h.0." : "model.layers.0.";
    EXPECT_TRUE(with({layer0 + "attn.bias", layer0 + "attn.masked_bias", layer0 + "self_attn.rotary_emb.inv_freq"}).ok());
    // The GGUF path is checked too.
    Result<GgufFile> gguf = GgufFile::open(dir + "/model.gguf");
    ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
    Result<ModelConfig> gc = config_from_gguf(*gguf);
    ASSERT_TRUE(gc.ok()) << gc.status().to_string();
    TensorStore gstore = gguf->tensors();
    gstore.add("blk.0.attn_k_norm.weight", TensorView{DType::kF32, {8}, extra.data()});
    expect_error_holding(build_model(*gc, std::move(gstore), WeightSource::kGguf).status(),
                         {"'blk.0.attn_k_norm.weight'"});
  }
}

}  // namespace
}  // namespace kvshare
