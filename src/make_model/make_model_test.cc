#include "make_model/make_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    s += static_cast<char>(0xe0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

// GPT-2's printable spelling of the 256 byte values.
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> out(256);
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    out[b] = utf8(printable ? b : 256 + extra++);
  }
  return out;
}

// A small GPT-2-style vocabulary: 256 byte tokens, 3 merges, <|endoftext|> last (260 tokens).
constexpr int64_t kTinyVocab = 260;

std::string make_tiny_tokenizer(const std::string& name) {
  const std::string dir = testing::temp_dir(name);
  Json vocab = Json::object();
  const auto bytes = byte_alphabet();
  for (int i = 0; i < 256; ++i) vocab[bytes[i]] = i;
  const std::string g = bytes[' '];  // "Ġ"
  vocab[g + "t"] = 256;
  vocab["he"] = 257;
  vocab[g + "the"] = 258;
  vocab["<|endoftext|>"] = 259;
  write_all(dir + "/vocab.json", vocab.dump());
  write_all(dir + "/merges.txt", "#version: 0.2\n" + g + " t\nh e\n" + g + "t he\n");
  return dir;
}

MakeModelOptions options(const std::string& arch, const std::string& shape, const std::string& tokenizer,
                         const std::string& out, uint64_t seed = 0) {
  MakeModelOptions o;
  o.arch = arch;
  o.shape = shape;
  o.tokenizer_dir = tokenizer;
  o.out_dir = out;
  o.seed = seed;
  return o;
}

std::vector<float> floats_of(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.num_elements()));
  to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

std::string bytes_of(const TensorView& t) { return std::string(static_cast<const char*>(t.data), t.num_bytes()); }

// The generator as make_model.h documents it, written out again here.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<float> documented_values(uint64_t seed, const std::string& name, double offset, double bound, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  uint64_t state = mix(seed ^ mix(h));
  std::vector<float> out;
  for (size_t i = 0; i < n; ++i) {
    state += 0x9e3779b97f4a7c15ull;
    const double u = static_cast<double>(mix(state) >> 40) / 16777216.0;
    out.push_back(static_cast<float>(offset + bound * (2 * u - 1)));
  }
  return out;
}

TEST(MakeModel, ShapeNames) {
  EXPECT_EQ(model_shape_names("gpt2"), (std::vector<std::string>{"micro", "tiny", "gpt2-small"}));
  const std::vector<std::string> llama{"micro", "tiny", "tiny-llama3", "smollm-135m", "llama-1b"};
  EXPECT_EQ(model_shape_names("llama"), llama);
  EXPECT_EQ(model_shape_names("qwen2"), llama);
  EXPECT_TRUE(model_shape_names("mamba").empty());
}

TEST(MakeModel, SameSeedWritesIdenticalFilesAndOtherSeedsDiffer) {
  const std::string tok = make_tiny_tokenizer("mm_det_tok");
  const std::string a = testing::temp_dir("mm_det_a"), b = testing::temp_dir("mm_det_b"),
                    c = testing::temp_dir("mm_det_c");
  ASSERT_TRUE(make_model(options("llama", "tiny", tok, a, 7)).ok());
  ASSERT_TRUE(make_model(options("llama", "tiny", tok, b, 7)).ok());
  ASSERT_TRUE(make_model(options("llama", "tiny", tok, c, 8)).ok());
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "model.gguf", "vocab.json",
                        "merges.txt", "tokenizer_config.json"}) {
    ASSERT_TRUE(file_exists(a + "/" + f)) << f;
    EXPECT_EQ(read_all(a + "/" + f), read_all(b + "/" + f)) << f;
  }
  EXPECT_FALSE(file_exists(a + "/tokenizer.json"));  // the source had none
  EXPECT_EQ(read_all(a + "/config.json"), read_all(c + "/config.json"));
  auto sa = load_safetensors_dir(a);
  auto sc = load_safetensors_dir(c);
  ASSERT_TRUE(sa.ok() && sc.ok());
  ASSERT_EQ(sa->names(), sc->names());
  for (const std::string& name : sa->names()) EXPECT_NE(bytes_of(*sa->find(name)), bytes_of(*sc->find(name))) << name;
}

TEST(MakeModel, WeightsFollowTheDocumentedGenerator) {
  const std::string tok = make_tiny_tokenizer("mm_gen_tok");
  const std::string out = testing::temp_dir("mm_gen");
  ASSERT_TRUE(make_model(options("gpt2", "tiny", tok, out, 1234)).ok());
  auto store = load_safetensors_dir(out);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  struct Case {
    const char* name;
    double offset, bound;
  };
  for (const Case& c : {Case{"transformer.h.1.attn.c_attn.weight", 0, std::sqrt(3.0 / 64)},
                        Case{"transformer.h.0.mlp.c_proj.weight", 0, std::sqrt(3.0 / 256)},
                        Case{"transformer.wte.weight", 0, 1}, Case{"transformer.wpe.weight", 0, 1},
                        Case{"transformer.ln_f.weight", 1, 0.1}, Case{"transformer.h.0.ln_1.bias", 0, 0.1}}) {
    const TensorView* t = store->find(c.name);
    ASSERT_NE(t, nullptr) << c.name;
    const std::vector<float> got = floats_of(*t);
    EXPECT_EQ(got, documented_values(1234, c.name, c.offset, c.bound, got.size())) << c.name;
    for (float x : got) ASSERT_LE(std::fabs(x - c.offset), c.bound) << c.name;
  }
}

TEST(MakeModel, Gpt2FolderMatchesItsConfig) {
  const std::string tok = make_tiny_tokenizer("mm_gpt2_tok");
  const std::string out = testing::temp_dir("mm_gpt2");
  Status st = make_model(options("gpt2", "tiny", tok, out));
  ASSERT_TRUE(st.ok()) << st.to_string();
  auto text = read_text_file(out + "/config.json");
  ASSERT_TRUE(text.ok());
  const Json j = Json::parse(*text);
  EXPECT_EQ(j["model_type"], "gpt2");
  EXPECT_EQ(j["architectures"], Json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(j["bos_token_id"], 259);
  EXPECT_EQ(j["eos_token_id"], 259);
  EXPECT_EQ(j["torch_dtype"], "float32");
  auto config = parse_hf_config(*text);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_EQ(config->vocab_size, kTinyVocab);
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->num_layers, 2);
  EXPECT_EQ(config->num_heads, 4);
  EXPECT_EQ(config->max_context, 512);
  EXPECT_EQ(config->ffn_size, 256);
  auto store = load_safetensors_dir(out);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  EXPECT_EQ(store->size(), 4u + 12u * 2u);
  EXPECT_EQ(store->metadata().at("format"), "pt");
  EXPECT_EQ(store->find("transformer.wte.weight")->shape, (std::vector<int64_t>{kTinyVocab, 64}));
  EXPECT_EQ(store->find("transformer.wpe.weight")->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(store->find("transformer.h.1.attn.c_attn.weight")->shape, (std::vector<int64_t>{64, 192}));
  EXPECT_EQ(store->find("transformer.h.1.mlp.c_fc.weight")->shape, (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(store->find("transformer.h.1.mlp.c_proj.weight")->shape, (std::vector<int64_t>{256, 64}));
  EXPECT_FALSE(store->contains("lm_head.weight"));
  const Json gen = Json::parse(read_all(out + "/generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], 259);
  const Json tc = Json::parse(read_all(out + "/tokenizer_config.json"));
  EXPECT_EQ(tc["eos_token"], "<|endoftext|>");
  EXPECT_EQ(tc["add_bos_token"], false);
  EXPECT_EQ(read_all(out + "/vocab.json"), read_all(tok + "/vocab.json"));
  EXPECT_EQ(read_all(out + "/merges.txt"), read_all(tok + "/merges.txt"));
}

TEST(MakeModel, Gpt2GgufTransposesConv1DAndHoldsTheVocabulary) {
  const std::string tok = make_tiny_tokenizer("mm_gpt2g_tok");
  const std::string out = testing::temp_dir("mm_gpt2g");
  ASSERT_TRUE(make_model(options("gpt2", "tiny", tok, out)).ok());
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(*g->get_string("general.architecture"), "gpt2");
  EXPECT_EQ(*g->get_int("gpt2.block_count"), 2);
  EXPECT_EQ(*g->get_int("gpt2.context_length"), 512);
  EXPECT_EQ(*g->get_int("gpt2.embedding_length"), 64);
  EXPECT_EQ(*g->get_int("gpt2.feed_forward_length"), 256);
  EXPECT_EQ(*g->get_int("gpt2.attention.head_count"), 4);
  EXPECT_NEAR(*g->get_float("gpt2.attention.layer_norm_epsilon"), 1e-5, 1e-9);
  EXPECT_EQ(*g->get_int("general.file_type"), 0);
  EXPECT_EQ(*g->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*g->get_string("tokenizer.ggml.pre"), "gpt-2");
  auto tokens = g->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), static_cast<size_t>(kTinyVocab));
  EXPECT_EQ((*tokens)[259], "<|endoftext|>");
  auto types = g->get_int_array("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok());
  EXPECT_EQ((*types)[0], 1);
  EXPECT_EQ((*types)[259], 3);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.merges")->size(), 3u);
  EXPECT_EQ(*g->get_int("tokenizer.ggml.bos_token_id"), 259);
  EXPECT_EQ(*g->get_int("tokenizer.ggml.eos_token_id"), 259);
  EXPECT_EQ(g->tensors().size(), 4u + 12u * 2u);
  EXPECT_EQ(g->tensors().find("output.weight"), nullptr);

  auto hf = load_safetensors_dir(out);
  ASSERT_TRUE(hf.ok());
  struct Pair {
    const char* hf;
    const char* gguf;
  };
  for (const Pair& p : {Pair{"transformer.h.1.attn.c_attn.weight", "blk.1.attn_qkv.weight"},
                        Pair{"transformer.h.0.attn.c_proj.weight", "blk.0.attn_output.weight"},
                        Pair{"transformer.h.0.mlp.c_fc.weight", "blk.0.ffn_up.weight"},
                        Pair{"transformer.h.1.mlp.c_proj.weight", "blk.1.ffn_down.weight"}}) {
    const TensorView* a = hf->find(p.hf);
    const TensorView* b = g->tensors().find(p.gguf);
    ASSERT_TRUE(a != nullptr && b != nullptr) << p.gguf;
    const int64_t in = a->shape[0], outs = a->shape[1];
    ASSERT_EQ(b->shape, (std::vector<int64_t>{outs, in})) << p.gguf;
    const auto va = floats_of(*a), vb = floats_of(*b);
    for (int64_t i = 0; i < in; ++i) {
      for (int64_t o = 0; o < outs; ++o) ASSERT_EQ(vb[o * in + i], va[i * outs + o]) << p.gguf;
    }
  }
  EXPECT_EQ(bytes_of(*hf->find("transformer.h.1.attn.c_attn.bias")), bytes_of(*g->tensors().find("blk.1.attn_qkv.bias")));
  EXPECT_EQ(bytes_of(*hf->find("transformer.wpe.weight")), bytes_of(*g->tensors().find("position_embd.weight")));
  auto config = config_from_gguf(*g);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_EQ(config->vocab_size, kTinyVocab);
  EXPECT_EQ(config->ffn_size, 256);
}

TEST(MakeModel, LlamaFolderAndGgufAgree) {
  const std::string tok = make_tiny_tokenizer("mm_llama_tok");
  const std::string out = testing::temp_dir("mm_llama");
  ASSERT_TRUE(make_model(options("llama", "tiny", tok, out, 3)).ok());
  auto text = read_text_file(out + "/config.json");
  ASSERT_TRUE(text.ok());
  auto config = parse_hf_config(*text);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_EQ(config->model_type, "llama");
  EXPECT_EQ(config->vocab_size, kTinyVocab);
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->ffn_size, 192);
  EXPECT_FALSE(config->tie_embeddings);
  EXPECT_FALSE(config->rope_scaling.enabled);
  EXPECT_FALSE(config->qkv_bias);
  auto hf = load_safetensors_dir(out);
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(hf->size(), 3u + 9u * 2u);
  EXPECT_EQ(hf->find("lm_head.weight")->shape, (std::vector<int64_t>{kTinyVocab, 64}));
  EXPECT_EQ(hf->find("model.layers.1.self_attn.q_proj.weight")->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(hf->find("model.layers.1.self_attn.k_proj.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(hf->find("model.layers.1.self_attn.o_proj.weight")->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(hf->find("model.layers.1.mlp.down_proj.weight")->shape, (std::vector<int64_t>{64, 192}));

  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(*g->get_string("general.architecture"), "llama");
  EXPECT_EQ(*g->get_int("llama.block_count"), 2);
  EXPECT_EQ(*g->get_int("llama.context_length"), 512);
  EXPECT_EQ(*g->get_int("llama.embedding_length"), 64);
  EXPECT_EQ(*g->get_int("llama.feed_forward_length"), 192);
  EXPECT_EQ(*g->get_int("llama.attention.head_count"), 4);
  EXPECT_EQ(*g->get_int("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(*g->get_int("llama.rope.dimension_count"), 16);
  EXPECT_NEAR(*g->get_float("llama.rope.freq_base"), 10000.0, 1e-3);
  EXPECT_NEAR(*g->get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
  EXPECT_FALSE(g->tensors().contains("rope_freqs.weight"));
  EXPECT_EQ(bytes_of(*hf->find("lm_head.weight")), bytes_of(*g->tensors().find("output.weight")));
  EXPECT_EQ(bytes_of(*hf->find("model.layers.0.mlp.gate_proj.weight")),
            bytes_of(*g->tensors().find("blk.0.ffn_gate.weight")));
  auto gconfig = config_from_gguf(*g);
  ASSERT_TRUE(gconfig.ok()) << gconfig.status().to_string();
  EXPECT_EQ(gconfig->vocab_size, config->vocab_size);
  EXPECT_EQ(gconfig->num_kv_heads, 2);
  EXPECT_FALSE(gconfig->tie_embeddings);

  // Q and K rows are interleaved per head: GGUF row 2i = HF row i, row 2i+1 = HF row i + head_dim / 2.
  const int64_t hd = 16, half = 8, d = 64;
  for (auto [hf_name, gguf_name, heads] : {std::tuple{"model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight", 4},
                                           std::tuple{"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", 2}}) {
    const auto a = floats_of(*hf->find(hf_name));
    const auto b = floats_of(*g->tensors().find(gguf_name));
    ASSERT_EQ(a.size(), b.size());
    EXPECT_NE(a, b);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        for (int64_t c = 0; c < d; ++c) {
          ASSERT_EQ(b[(h * hd + 2 * i) * d + c], a[(h * hd + i) * d + c]) << gguf_name;
          ASSERT_EQ(b[(h * hd + 2 * i + 1) * d + c], a[(h * hd + i + half) * d + c]) << gguf_name;
        }
      }
    }
  }
  // One row spelled out: head 1, i = 3.
  const auto q = floats_of(*hf->find("model.layers.1.self_attn.q_proj.weight"));
  const auto gq = floats_of(*g->tensors().find("blk.1.attn_q.weight"));
  EXPECT_EQ(std::vector<float>(gq.begin() + (16 + 7) * d, gq.begin() + (16 + 8) * d),
            std::vector<float>(q.begin() + (16 + 3 + 8) * d, q.begin() + (16 + 4 + 8) * d));
}

TEST(MakeModel, Llama3RopeScaling) {
  const std::string tok = make_tiny_tokenizer("mm_l3_tok");
  const std::string out = testing::temp_dir("mm_l3");
  ASSERT_TRUE(make_model(options("llama", "tiny-llama3", tok, out)).ok());
  auto config = parse_hf_config(read_all(out + "/config.json"));
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_TRUE(config->tie_embeddings);
  EXPECT_TRUE(config->rope_scaling.enabled);
  EXPECT_EQ(config->rope_scaling.factor, 8.0);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 64.0);
  EXPECT_EQ(config->rope_theta, 500000.0);
  auto hf = load_safetensors_dir(out);
  ASSERT_TRUE(hf.ok());
  EXPECT_FALSE(hf->contains("lm_head.weight"));
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->tensors().contains("output.weight"));
  const TensorView* f = g->tensors().find("rope_freqs.weight");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->shape, (std::vector<int64_t>{8}));
  const auto factors = floats_of(*f);
  EXPECT_EQ(factors[0], 1.0f);                         // wavelength 6.3 < 16: kept
  EXPECT_GT(factors[1], 1.0f);                         // wavelength 32: smoothed
  EXPECT_LT(factors[1], 8.0f);
  for (int i = 2; i < 8; ++i) EXPECT_EQ(factors[i], 8.0f);  // longer than 64: divided by 8
  // The same frequencies as the Hugging Face config gives.
  ModelConfig unscaled = *config;
  unscaled.rope_scaling.enabled = false;
  const auto scaled = config->rope_inv_freq(), plain = unscaled.rope_inv_freq();
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(plain[i] / factors[i], scaled[i], 1e-6 * plain[i]) << i;
}

TEST(MakeModel, Qwen2HasBiasesAndLlamaCppLayout) {
  const std::string tok = make_tiny_tokenizer("mm_qwen_tok");
  const std::string out = testing::temp_dir("mm_qwen");
  ASSERT_TRUE(make_model(options("qwen2", "tiny", tok, out)).ok());
  auto config = parse_hf_config(read_all(out + "/config.json"));
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  EXPECT_EQ(config->model_type, "qwen2");
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_TRUE(config->tie_embeddings);
  auto hf = load_safetensors_dir(out);
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(hf->find("model.layers.0.self_attn.q_proj.bias")->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(hf->find("model.layers.0.self_attn.k_proj.bias")->shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(hf->find("model.layers.0.self_attn.v_proj.bias")->shape, (std::vector<int64_t>{32}));
  EXPECT_FALSE(hf->contains("lm_head.weight"));
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g->get_string("general.architecture"), "qwen2");
  EXPECT_EQ(*g->get_int("qwen2.attention.head_count_kv"), 2);
  // llama.cpp runs qwen2 with NEOX-style RoPE: Q/K (and their biases) keep the Hugging Face row order.
  EXPECT_EQ(bytes_of(*hf->find("model.layers.0.self_attn.q_proj.weight")), bytes_of(*g->tensors().find("blk.0.attn_q.weight")));
  EXPECT_EQ(bytes_of(*hf->find("model.layers.0.self_attn.k_proj.bias")), bytes_of(*g->tensors().find("blk.0.attn_k.bias")));
  EXPECT_TRUE(g->tensors().contains("blk.1.attn_v.bias"));
  EXPECT_FALSE(g->tensors().contains("output.weight"));
}

TEST(MakeModel, HalfPrecisionDtypes) {
  const std::string tok = make_tiny_tokenizer("mm_half_tok");
  for (auto [name, dtype, file_type, torch] : {std::tuple{"f16", DType::kF16, 1, "float16"},
                                                std::tuple{"bf16", DType::kBF16, 32, "bfloat16"}}) {
    const std::string out = testing::temp_dir(std::string("mm_half_") + name);
    MakeModelOptions o = options("llama", "tiny", tok, out, 5);
    o.dtype = name;
    Status st = make_model(o);
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(Json::parse(read_all(out + "/config.json"))["torch_dtype"], torch);
    auto hf = load_safetensors_dir(out);
    ASSERT_TRUE(hf.ok());
    for (const auto& [tname, view] : hf->tensors()) EXPECT_EQ(view.dtype, dtype) << tname;
    auto g = GgufFile::open(out + "/model.gguf");
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(*g->get_int("general.file_type"), file_type);
    for (const auto& [tname, view] : g->tensors().tensors())
      EXPECT_EQ(view.dtype, view.shape.size() == 1 ? DType::kF32 : dtype) << tname;
    // Norms are stored as F32 in GGUF but hold the same (rounded) values.
    EXPECT_EQ(floats_of(*hf->find("model.layers.1.input_layernorm.weight")),
              floats_of(*g->tensors().find("blk.1.attn_norm.weight")));
    EXPECT_EQ(bytes_of(*hf->find("model.embed_tokens.weight")), bytes_of(*g->tensors().find("token_embd.weight")));
  }
}

// make_model reads the tokenizer folder with the engine's own reader, so the vocabulary the GGUF holds encodes
// every text exactly as the folder does: the same pieces, merges, added tokens and pre-tokenizer.
void expect_gguf_tokenizer_encodes_as_folder(const std::string& out) {
  auto folder = BpeTokenizer::from_hf_dir(out);
  ASSERT_TRUE(folder.ok()) << folder.status().to_string();
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto gguf = BpeTokenizer::from_gguf(*g);
  ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
  EXPECT_EQ((*gguf)->vocab_size(), (*folder)->vocab_size());
  EXPECT_EQ((*gguf)->bos_id(), (*folder)->bos_id());
  for (const char* text : {"the theme, then<|endoftext|> hello world", "  h\xc3\xa9llo\n\n the 123 <s>x</s>"}) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> expected = (*folder)->encode(text, special, special);
      EXPECT_FALSE(expected.empty());
      EXPECT_EQ((*gguf)->encode(text, special, special), expected) << text;
    }
  }
}

TEST(MakeModel, TokenizerJsonSource) {
  const std::string tok = testing::temp_dir("mm_tj_tok");
  const auto bytes = byte_alphabet();
  Json vocab = Json::object();
  for (int i = 0; i < 256; ++i) vocab[bytes[i]] = i;
  vocab["he"] = 256;
  Json tj = {{"version", "1.0"},
             {"added_tokens", Json::array({Json{{"id", 258}, {"content", "<s>"}, {"special", true}},
                                           Json{{"id", 259}, {"content", "</s>"}, {"special", true}},
                                           Json{{"id", 260}, {"content", "hello world"}, {"special", false}}})},
             {"normalizer", nullptr},
             {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
             {"post_processor",
              {{"type", "TemplateProcessing"},
               {"single", Json::array({Json{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                       Json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}}},
             {"decoder", {{"type", "ByteLevel"}}},
             {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array({Json::array({"h", "e"})})}}}};
  write_all(tok + "/tokenizer.json", tj.dump());
  const std::string out = testing::temp_dir("mm_tj");
  Status st = make_model(options("llama", "tiny", tok, out));
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(read_all(out + "/tokenizer.json"), read_all(tok + "/tokenizer.json"));
  EXPECT_EQ(read_all(out + "/merges.txt"), "#version: 0.2\nh e\n");
  EXPECT_EQ(Json::parse(read_all(out + "/vocab.json")).size(), 257u);
  const Json config = Json::parse(read_all(out + "/config.json"));
  EXPECT_EQ(config["vocab_size"], 261);
  EXPECT_EQ(config["bos_token_id"], 258);
  EXPECT_EQ(config["eos_token_id"], nullptr);  // no </s> named anywhere, no <|endoftext|>
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok());
  auto tokens = *g->get_string_array("tokenizer.ggml.tokens");
  auto types = *g->get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 261u);
  EXPECT_EQ(tokens[257], "[PAD257]");
  EXPECT_EQ(types[257], 5);
  EXPECT_EQ(types[258], 3);
  EXPECT_EQ(types[260], 4);
  EXPECT_EQ(*g->get_int("tokenizer.ggml.bos_token_id"), 258);
  EXPECT_FALSE(g->contains("tokenizer.ggml.eos_token_id"));
  EXPECT_TRUE(*g->get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(*g->get_string("tokenizer.ggml.pre"), "gpt-2");
  expect_gguf_tokenizer_encodes_as_folder(out);

  // A SentencePiece-style tokenizer.json cannot be written as a GPT-2 vocabulary.
  tj["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}};
  write_all(tok + "/tokenizer.json", tj.dump());
  st = make_model(options("llama", "tiny", tok, testing::temp_dir("mm_tj_bad")));
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
  EXPECT_NE(st.message().find("byte-level"), std::string::npos) << st.message();
}

TEST(MakeModel, GgufTokenizerEncodesAsTheFolder) {
  const std::string out = testing::temp_dir("mm_enc_gpt2");
  ASSERT_TRUE(make_model(options("gpt2", "micro", make_tiny_tokenizer("mm_enc_gpt2_tok"), out)).ok());
  expect_gguf_tokenizer_encodes_as_folder(out);
}

// A byte-level tokenizer whose pre-tokenizer no GGUF name spells is refused (its GGUF copy would split text
// differently), as is one that adds a prefix space.
TEST(MakeModel, PreTokenizerWithoutAGgufNameIsRefused) {
  const std::string tok = testing::temp_dir("mm_pre_tok");
  const auto bytes = byte_alphabet();
  Json vocab = Json::object();
  for (int i = 0; i < 256; ++i) vocab[bytes[i]] = i;
  Json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}},
             {"pre_tokenizer", {{"type", "Sequence"},
                                {"pretokenizers", Json::array({Json{{"type", "Split"},
                                                                    {"pattern", {{"Regex", "\\d+|\\D+"}}},
                                                                    {"behavior", "Isolated"}},
                                                               Json{{"type", "ByteLevel"}, {"use_regex", false}}})}}},
             {"decoder", {{"type", "ByteLevel"}}}};
  write_all(tok + "/tokenizer.json", tj.dump());
  Status st = make_model(options("gpt2", "micro", tok, testing::temp_dir("mm_pre")));
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
  EXPECT_NE(st.message().find("gpt-2, llama-bpe, qwen2"), std::string::npos) << st.message();

  tj["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  write_all(tok + "/tokenizer.json", tj.dump());
  st = make_model(options("gpt2", "micro", tok, testing::temp_dir("mm_pre2")));
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
  EXPECT_NE(st.message().find("add_prefix_space"), std::string::npos) << st.message();
}

TEST(MakeModel, RealGpt2Tokenizer) {
  KV_REQUIRE_SHARED("tokenizers/gpt2");
  const std::string out = testing::temp_dir("mm_real_gpt2");
  ASSERT_TRUE(make_model(options("gpt2", "tiny", testing::shared_dir() + "/tokenizers/gpt2", out)).ok());
  auto config = parse_hf_config(read_all(out + "/config.json"));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->vocab_size, 50257);
  const Json j = Json::parse(read_all(out + "/config.json"));
  EXPECT_EQ(j["bos_token_id"], 50256);
  EXPECT_EQ(j["eos_token_id"], 50256);
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens")->size(), 50257u);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.merges")->size(), 50000u);
  EXPECT_EQ((*g->get_int_array("tokenizer.ggml.token_type"))[50256], 3);
  EXPECT_EQ(*g->get_int("tokenizer.ggml.eos_token_id"), 50256);
  EXPECT_EQ(g->tensors().find("token_embd.weight")->shape, (std::vector<int64_t>{50257, 64}));
}

TEST(MakeModel, RealLlama3Tokenizer) {
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  const std::string out = testing::temp_dir("mm_real_llama3");
  Status st = make_model(options("llama", "tiny-llama3", testing::shared_dir() + "/tokenizers/llama3", out));
  ASSERT_TRUE(st.ok()) << st.to_string();
  const Json j = Json::parse(read_all(out + "/config.json"));
  EXPECT_EQ(j["vocab_size"], 128256);
  EXPECT_EQ(j["bos_token_id"], 128000);
  EXPECT_EQ(j["eos_token_id"], 128001);
  auto g = GgufFile::open(out + "/model.gguf");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g->get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens")->size(), 128256u);
  EXPECT_EQ(read_all(out + "/tokenizer_config.json"),
            read_all(testing::shared_dir() + "/tokenizers/llama3/tokenizer_config.json"));
  expect_gguf_tokenizer_encodes_as_folder(out);
}

TEST(MakeModel, BadOptionsSayWhatIsWrong) {
  const std::string tok = make_tiny_tokenizer("mm_bad_tok");
  const std::string out = testing::temp_dir("mm_bad");
  Status st = make_model(options("mamba", "tiny", tok, out));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("gpt2, llama, qwen2"), std::string::npos) << st.message();

  st = make_model(options("gpt2", "huge", tok, out));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tiny, gpt2-small"), std::string::npos) << st.message();
  st = make_model(options("qwen2", "gpt2-small", tok, out));
  EXPECT_NE(st.message().find("tiny, tiny-llama3, smollm-135m, llama-1b"), std::string::npos) << st.message();

  MakeModelOptions o = options("gpt2", "tiny", tok, out);
  o.dtype = "q4";
  st = make_model(o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("f32, f16, bf16"), std::string::npos) << st.message();

  st = make_model(options("gpt2", "tiny", out + "/no_such_folder", out));
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  st = make_model(options("gpt2", "tiny", testing::temp_dir("mm_bad_empty"), out));
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("vocab.json + merges.txt"), std::string::npos) << st.message();

  write_all(out + "/plain_file", "x");
  st = make_model(options("gpt2", "tiny", tok, out + "/plain_file/model"));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(out + "/plain_file/model"), std::string::npos) << st.message();
  st = make_model(options("gpt2", "tiny", tok, out + "/plain_file"));
  EXPECT_FALSE(st.ok());
  st = make_model(options("gpt2", "tiny", tok, ""));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(file_exists(out + "/model.safetensors"));  // nothing was written by the failures
}

// The folder and the .gguf hold the same model: loading both and running a short prompt gives the same logits.
void expect_same_logits(const std::string& arch, const std::string& shape) {
  const std::string tok = make_tiny_tokenizer("mm_load_tok_" + arch);
  const std::string out = testing::temp_dir("mm_load_" + arch + "_" + shape);
  ASSERT_TRUE(make_model(options(arch, shape, tok, out, 11)).ok());
  auto from_folder = load_model(out);
  ASSERT_TRUE(from_folder.ok()) << from_folder.status().to_string();
  auto from_gguf = load_model(out + "/model.gguf");
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status().to_string();

  const ModelConfig& c = (*from_folder)->config();
  const int64_t n = 20;
  KvShape kv_shape;
  kv_shape.num_layers = c.num_layers;
  kv_shape.num_kv_heads = c.num_kv_heads;
  kv_shape.head_dim = c.head_dim;
  kv_shape.block_size = 16;
  kv_shape.num_blocks = 2;
  std::vector<int32_t> blocks{0, 1};
  ForwardBatch batch;
  for (int64_t i = 0; i < n; ++i) {
    batch.tokens.push_back(static_cast<int32_t>((i * 37 + 5) % c.vocab_size));
    batch.positions.push_back(static_cast<int32_t>(i));
    batch.slots.push_back(static_cast<int32_t>(i));
    batch.logit_rows.push_back(i);
  }
  batch.seqs.push_back(AttentionSeq{0, n, n, blocks.data()});
  std::vector<std::vector<float>> logits;
  for (Model* m : {from_folder->get(), from_gguf->get()}) {
    auto kv = KvStorage::create(kv_shape);
    ASSERT_TRUE(kv.ok());
    Activations act;
    std::vector<float> out_logits(static_cast<size_t>(n * c.vocab_size));
    Status st = m->forward(batch, *kv, act, out_logits.data());
    ASSERT_TRUE(st.ok()) << st.to_string();
    logits.push_back(std::move(out_logits));
  }
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) {
    ASSERT_TRUE(std::isfinite(logits[0][i]));
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(logits[0][i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(logits[0][i]) - logits[1][i]));
  }
  EXPECT_GT(max_abs, 0.1);
  EXPECT_LT(max_diff, 1e-3 * std::max(1.0, max_abs)) << arch << " " << shape;
}

TEST(MakeModel, LoadModelGpt2FolderAndGgufAgree) { expect_same_logits("gpt2", "tiny"); }
TEST(MakeModel, LoadModelLlamaFolderAndGgufAgree) { expect_same_logits("llama", "tiny"); }

}  // namespace
}  // namespace kvshare
