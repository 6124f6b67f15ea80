#include "make_model/make_model.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "chat/chat_template.h"
#include "core/det_math.h"
#include "core/dtype.h"
#include "core/hash.h"
#include "core/mapped_file.h"
#include "core/splitmix.h"
#include "core/tensor.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "tokenizer/tokenizer_files.h"

namespace kvshare {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kTransformersVersion = "4.45.0";
constexpr const char* kEndOfText = "<|endoftext|>";

// ---------------------------------------------------------------------------------------------------------------
// Shapes.

struct ShapeSpec {
  const char* name;
  int64_t hidden;
  int64_t layers;
  int64_t heads;
  int64_t kv_heads;
  int64_t ffn;
  int64_t context;
  double rope_theta;
  bool tied;  // for llama; GPT-2 is always tied, qwen2 "tiny" is tied too
  bool llama3_scaling;
  double rope_factor;
  double original_context;
};

constexpr ShapeSpec kGpt2Shapes[] = {
    {"micro", 16, 1, 2, 2, 32, 64, 0, true, false, 1, 0},
    {"tiny", 64, 2, 4, 4, 256, 512, 0, true, false, 1, 0},
    {"gpt2-small", 768, 12, 12, 12, 3072, 2048, 0, true, false, 1, 0},
};

constexpr ShapeSpec kLlamaShapes[] = {
    {"micro", 16, 1, 2, 1, 32, 64, 10000.0, false, false, 1, 0},
    {"tiny", 64, 2, 4, 2, 192, 512, 10000.0, false, false, 1, 0},
    {"tiny-llama3", 64, 2, 4, 2, 192, 512, 500000.0, true, true, 8, 64},
    {"smollm-135m", 576, 30, 9, 3, 1536, 2048, 10000.0, true, false, 1, 0},
    {"llama-1b", 2048, 16, 32, 8, 8192, 8192, 500000.0, true, true, 32, 8192},
};

constexpr double kRmsNormEps = 1e-5;
constexpr double kLayerNormEps = 1e-5;
constexpr double kLowFreqFactor = 1.0;
constexpr double kHighFreqFactor = 4.0;

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i == 0 ? "" : ", ") + items[i];
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The generator: SplitMix64 with a per-tensor seed.

// Uniform in [0, 1) with 24 random bits: exact in float and in double.
double next_unit(SplitMix64& rng) { return static_cast<double>(rng.next() >> 40) * (1.0 / 16777216.0); }

enum class InitKind { kMatrix, kEmbedding, kNormWeight, kBias };

void fill_values(uint64_t seed, const std::string& name, InitKind kind, int64_t fan_in, float* out, size_t n) {
  SplitMix64 rng(splitmix64_mix(seed ^ splitmix64_mix(fnv1a64(name))));
  double bound = 0.1, offset = 0.0;
  switch (kind) {
    case InitKind::kMatrix: bound = std::sqrt(3.0 / static_cast<double>(fan_in)); break;
    case InitKind::kEmbedding: bound = 1.0; break;
    case InitKind::kNormWeight: offset = 1.0; break;
    case InitKind::kBias: break;
  }
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(offset + bound * (2.0 * next_unit(rng) - 1.0));
}

// ---------------------------------------------------------------------------------------------------------------
// The vocabulary: the tokenizer folder as the engine's tokenizer reads it (tokenizer/tokenizer_files.h), spelled
// the way GGUF's tokenizer.ggml.* and a GPT-2 folder's files spell it.

struct Vocabulary {
  std::vector<std::string> tokens;  // dense by id, "[PAD<i>]" where the files name no token
  std::vector<int32_t> types;       // GGUF token types
  std::vector<std::string> merges;  // "a b"
  std::string pre;                  // tokenizer.ggml.pre
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  std::string chat_template;
  // Files for out_dir: name -> contents.
  std::map<std::string, std::string> files;
};

int32_t find_id(const Vocabulary& v, const std::string& token) {
  for (size_t i = v.tokens.size(); i-- > 0;) {  // added tokens sit at the end
    if (v.tokens[i] == token) return static_cast<int32_t>(i);
  }
  return -1;
}

// GGUF's token type (1 normal, 3 control, 4 user-defined, 5 unused) for a token the tokenizer read as `type`, as
// llama.cpp's convert_hf_to_gguf.py types a byte-level vocabulary: an added token is control when special or
// spelled <|...|>, else user-defined; the unknown token stays normal.
int32_t gguf_token_type(TokenType type, const std::string& piece) {
  const bool looks_special =
      piece.size() >= 4 && piece.compare(0, 2, "<|") == 0 && piece.compare(piece.size() - 2, 2, "|>") == 0;
  switch (type) {
    case TokenType::kControl: return 3;
    case TokenType::kUserDefined: return looks_special ? 3 : 4;
    case TokenType::kUnused: return 5;
    default: return 1;
  }
}

// tokenizer.ggml.pre: the GGUF name whose regexes are exactly the tokenizer's pre-tokenizer, so that the GGUF
// copy splits text as the folder does.
Result<std::string> gguf_pre_name(const TokenizerModel& m, const std::string& dir) {
  if (m.symbol_mode != SymbolMode::kByteLevel || !m.normalizer.empty())
    return unimplemented("the tokenizer in " + dir + " is not a byte-level BPE tokenizer (it has no ByteLevel "
                         "step, or a normalizer or Metaspace step rewrites the text first); make-model writes "
                         "GPT-2-style vocabularies only");
  if (m.prefix_space)
    return unimplemented("the tokenizer in " + dir + " adds a prefix space (ByteLevel add_prefix_space), which a "
                         "GGUF GPT-2-style vocabulary cannot say");
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2"}) {
    KV_ASSIGN_OR_RETURN(std::vector<std::string> patterns, gguf_pre_patterns(name));
    bool same = patterns.size() == m.pre_tokenizer.size();
    for (size_t i = 0; same && i < patterns.size(); ++i) {
      const RegexSplitter& s = m.pre_tokenizer[i];
      same = s.pattern() == patterns[i] && !s.literal() && s.behavior() == SplitBehavior::kIsolated && !s.inverted();
    }
    if (same) return std::string(name);
  }
  return unimplemented("the pre-tokenizer of the tokenizer in " + dir +
                       " is none that make-model can name for GGUF (known: gpt-2, llama-bpe, qwen2)");
}

Result<std::string> read_file(const std::string& path) {
  auto text = read_text_file(path);
  if (!text.ok()) return text.status().with_context("reading the tokenizer");
  return text;
}

// The files out_dir gets besides the weights: copies of the source's tokenizer files, and what a GPT-2 folder
// also has, written when the source lacks it: vocab.json + merges.txt as a slow GPT-2 tokenizer saves them (the
// BPE vocabulary in id order, the merges by rank), and a tokenizer_config.json.
Status add_tokenizer_files(const std::string& dir, const TokenizerModel& m, int64_t model_max_length,
                           Vocabulary& v) {
  auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };
  if (file_exists(path("tokenizer.json"))) {
    KV_ASSIGN_OR_RETURN(v.files["tokenizer.json"], read_file(path("tokenizer.json")));
    std::string vocab = "{";  // built by hand: an ordered_json object looks keys up linearly
    for (int32_t id = 0; id < m.bpe_vocab_end; ++id) {
      if (m.types[static_cast<size_t>(id)] == TokenType::kUnused) continue;
      if (vocab.size() > 1) vocab += ", ";
      vocab += Json(m.pieces[static_cast<size_t>(id)]).dump(-1, ' ', false, Json::error_handler_t::replace) + ": " +
               std::to_string(id);
    }
    v.files["vocab.json"] = vocab + "}";
    std::string merges = "#version: 0.2\n";
    for (const std::string& merge : v.merges) merges += merge + "\n";
    v.files["merges.txt"] = std::move(merges);
  } else {
    const bool gpt2_names = file_exists(path("vocab.json")) && file_exists(path("merges.txt"));
    KV_ASSIGN_OR_RETURN(v.files["vocab.json"], read_file(path(gpt2_names ? "vocab.json" : "encoder.json")));
    KV_ASSIGN_OR_RETURN(v.files["merges.txt"], read_file(path(gpt2_names ? "merges.txt" : "vocab.bpe")));
  }
  if (file_exists(path("tokenizer_config.json"))) {
    KV_ASSIGN_OR_RETURN(v.files["tokenizer_config.json"], read_file(path("tokenizer_config.json")));
    return {};
  }
  const int32_t end_of_text = find_id(v, kEndOfText);
  Json c = Json::object();
  c["add_bos_token"] = v.add_bos;
  c["add_prefix_space"] = false;
  if (v.bos_id >= 0) c["bos_token"] = v.tokens[static_cast<size_t>(v.bos_id)];
  if (v.eos_id >= 0) c["eos_token"] = v.tokens[static_cast<size_t>(v.eos_id)];
  if (end_of_text >= 0) c["unk_token"] = kEndOfText;
  c["clean_up_tokenization_spaces"] = false;
  c["errors"] = "replace";
  c["model_max_length"] = model_max_length;
  c["tokenizer_class"] = file_exists(path("tokenizer.json")) ? "PreTrainedTokenizerFast" : "GPT2Tokenizer";
  v.files["tokenizer_config.json"] = c.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  return {};
}

// Reads the vocabulary and decides the files out_dir gets.
Result<Vocabulary> read_vocabulary(const std::string& dir, int64_t model_max_length) {
  std::error_code ec;
  if (dir.empty()) return invalid_argument("no tokenizer folder was given (tokenizer_dir is empty)");
  if (!fs::is_directory(dir, ec))
    return not_found("tokenizer folder '" + dir + "' does not exist or is not a folder");
  KV_ASSIGN_OR_RETURN(std::unique_ptr<TokenizerModel> model, read_hf_tokenizer(dir));
  const TokenizerModel& m = *model;
  if (m.pieces.empty()) return invalid_argument("the tokenizer in " + dir + " has an empty vocabulary");
  Vocabulary v;
  KV_ASSIGN_OR_RETURN(v.pre, gguf_pre_name(m, dir));
  for (size_t id = 0; id < m.pieces.size(); ++id) {
    const bool unused = m.types[id] == TokenType::kUnused;
    v.tokens.push_back(unused ? "[PAD" + std::to_string(id) + "]" : m.pieces[id]);
    v.types.push_back(gguf_token_type(m.types[id], m.pieces[id]));
  }
  for (const auto& [a, b] : m.merge_list) {
    if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos)
      return unimplemented("the tokenizer in " + dir + " has the merge [\"" + a + "\", \"" + b +
                           "\"] with a space, which merges.txt and GGUF cannot spell");
    v.merges.push_back(a + " " + b);
  }
  // BOS/EOS as the tokenizer reads them; GPT-2 vocabularies without a say: <|endoftext|> begins and ends a text.
  v.bos_id = m.bos_id >= 0 ? m.bos_id : find_id(v, kEndOfText);
  v.eos_id = m.eos_id >= 0 ? m.eos_id : find_id(v, kEndOfText);
  v.add_bos = m.add_bos;
  v.add_eos = m.add_eos;
  auto chat = ChatTemplate::from_model(dir);
  if (chat.ok()) {
    v.chat_template = chat->source();
  } else if (chat.status().code() != StatusCode::kNotFound) {
    return chat.status();
  }
  KV_RETURN_IF_ERROR(add_tokenizer_files(dir, m, model_max_length, v));
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Tensors.

enum class GgufTransform { kNone, kTranspose, kPermuteHeads };

struct TensorSpec {
  std::string hf_name;
  std::vector<int64_t> shape;  // Hugging Face shape
  InitKind kind = InitKind::kMatrix;
  int64_t fan_in = 1;
  std::string gguf_name;
  GgufTransform transform = GgufTransform::kNone;
  int64_t heads = 0;  // for kPermuteHeads
  std::vector<uint8_t> data;  // generated, in the safetensors dtype
};

struct Plan {
  std::string arch;  // gpt2 | llama | qwen2
  ShapeSpec shape{};
  bool tied = true;
  int64_t vocab = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
  std::vector<TensorSpec> tensors;
};

void add_tensor(Plan& p, std::string hf, std::vector<int64_t> shape, InitKind kind, int64_t fan_in, std::string gguf,
                GgufTransform transform = GgufTransform::kNone, int64_t heads = 0) {
  TensorSpec t;
  t.hf_name = std::move(hf);
  t.shape = std::move(shape);
  t.kind = kind;
  t.fan_in = fan_in;
  t.gguf_name = std::move(gguf);
  t.transform = transform;
  t.heads = heads;
  p.tensors.push_back(std::move(t));
}

void plan_gpt2(Plan& p) {
  const int64_t d = p.shape.hidden, f = p.shape.ffn;
  const std::string t = "transformer.";
  add_tensor(p, t + "wte.weight", {p.vocab, d}, InitKind::kEmbedding, 0, "token_embd.weight");
  add_tensor(p, t + "wpe.weight", {p.shape.context, d}, InitKind::kEmbedding, 0, "position_embd.weight");
  for (int64_t i = 0; i < p.shape.layers; ++i) {
    const std::string h = t + "h." + std::to_string(i) + ".", g = "blk." + std::to_string(i) + ".";
    add_tensor(p, h + "ln_1.weight", {d}, InitKind::kNormWeight, 0, g + "attn_norm.weight");
    add_tensor(p, h + "ln_1.bias", {d}, InitKind::kBias, 0, g + "attn_norm.bias");
    add_tensor(p, h + "attn.c_attn.weight", {d, 3 * d}, InitKind::kMatrix, d, g + "attn_qkv.weight",
               GgufTransform::kTranspose);
    add_tensor(p, h + "attn.c_attn.bias", {3 * d}, InitKind::kBias, 0, g + "attn_qkv.bias");
    add_tensor(p, h + "attn.c_proj.weight", {d, d}, InitKind::kMatrix, d, g + "attn_output.weight",
               GgufTransform::kTranspose);
    add_tensor(p, h + "attn.c_proj.bias", {d}, InitKind::kBias, 0, g + "attn_output.bias");
    add_tensor(p, h + "ln_2.weight", {d}, InitKind::kNormWeight, 0, g + "ffn_norm.weight");
    add_tensor(p, h + "ln_2.bias", {d}, InitKind::kBias, 0, g + "ffn_norm.bias");
    add_tensor(p, h + "mlp.c_fc.weight", {d, f}, InitKind::kMatrix, d, g + "ffn_up.weight", GgufTransform::kTranspose);
    add_tensor(p, h + "mlp.c_fc.bias", {f}, InitKind::kBias, 0, g + "ffn_up.bias");
    add_tensor(p, h + "mlp.c_proj.weight", {f, d}, InitKind::kMatrix, f, g + "ffn_down.weight",
               GgufTransform::kTranspose);
    add_tensor(p, h + "mlp.c_proj.bias", {d}, InitKind::kBias, 0, g + "ffn_down.bias");
  }
  add_tensor(p, t + "ln_f.weight", {d}, InitKind::kNormWeight, 0, "output_norm.weight");
  add_tensor(p, t + "ln_f.bias", {d}, InitKind::kBias, 0, "output_norm.bias");
}

void plan_llama(Plan& p) {
  const int64_t d = p.shape.hidden, f = p.shape.ffn, hd = p.head_dim;
  const int64_t qd = p.shape.heads * hd, kvd = p.shape.kv_heads * hd;
  const bool bias = p.arch == "qwen2";
  // llama.cpp permutes Q/K for its "llama" architecture only; qwen2 runs NEOX-style RoPE on the HF rows.
  const GgufTransform qk = p.arch == "llama" ? GgufTransform::kPermuteHeads : GgufTransform::kNone;
  add_tensor(p, "model.embed_tokens.weight", {p.vocab, d}, InitKind::kEmbedding, 0, "token_embd.weight");
  for (int64_t i = 0; i < p.shape.layers; ++i) {
    const std::string h = "model.layers." + std::to_string(i) + ".", g = "blk." + std::to_string(i) + ".";
    add_tensor(p, h + "input_layernorm.weight", {d}, InitKind::kNormWeight, 0, g + "attn_norm.weight");
    add_tensor(p, h + "self_attn.q_proj.weight", {qd, d}, InitKind::kMatrix, d, g + "attn_q.weight", qk,
               p.shape.heads);
    if (bias) add_tensor(p, h + "self_attn.q_proj.bias", {qd}, InitKind::kBias, 0, g + "attn_q.bias", qk, p.shape.heads);
    add_tensor(p, h + "self_attn.k_proj.weight", {kvd, d}, InitKind::kMatrix, d, g + "attn_k.weight", qk,
               p.shape.kv_heads);
    if (bias)
      add_tensor(p, h + "self_attn.k_proj.bias", {kvd}, InitKind::kBias, 0, g + "attn_k.bias", qk, p.shape.kv_heads);
    add_tensor(p, h + "self_attn.v_proj.weight", {kvd, d}, InitKind::kMatrix, d, g + "attn_v.weight");
    if (bias) add_tensor(p, h + "self_attn.v_proj.bias", {kvd}, InitKind::kBias, 0, g + "attn_v.bias");
    add_tensor(p, h + "self_attn.o_proj.weight", {d, qd}, InitKind::kMatrix, qd, g + "attn_output.weight");
    add_tensor(p, h + "post_attention_layernorm.weight", {d}, InitKind::kNormWeight, 0, g + "ffn_norm.weight");
    add_tensor(p, h + "mlp.gate_proj.weight", {f, d}, InitKind::kMatrix, d, g + "ffn_gate.weight");
    add_tensor(p, h + "mlp.up_proj.weight", {f, d}, InitKind::kMatrix, d, g + "ffn_up.weight");
    add_tensor(p, h + "mlp.down_proj.weight", {d, f}, InitKind::kMatrix, f, g + "ffn_down.weight");
  }
  add_tensor(p, "model.norm.weight", {d}, InitKind::kNormWeight, 0, "output_norm.weight");
  if (!p.tied) add_tensor(p, "lm_head.weight", {p.vocab, d}, InitKind::kMatrix, d, "output.weight");
}

size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t s : shape) n *= static_cast<size_t>(s);
  return n;
}

// Generates every tensor's values, spread over a few threads (each tensor's values depend only on its name).
void generate(Plan& p, uint64_t seed) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    std::vector<float> scratch;
    for (size_t i = next++; i < p.tensors.size(); i = next++) {
      TensorSpec& t = p.tensors[i];
      const size_t n = element_count(t.shape);
      t.data.resize(dtype_bytes(p.dtype, n));
      if (p.dtype == DType::kF32) {
        fill_values(seed, t.hf_name, t.kind, t.fan_in, reinterpret_cast<float*>(t.data.data()), n);
      } else {
        scratch.resize(n);
        fill_values(seed, t.hf_name, t.kind, t.fan_in, scratch.data(), n);
        from_f32(p.dtype, scratch.data(), t.data.data(), n);
      }
    }
  };
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
}

// ---------------------------------------------------------------------------------------------------------------
// Files.

Status write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return internal_error("cannot create " + tmp + ": " + std::strerror(errno));
  const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int saved = errno;
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed) {
    std::remove(tmp.c_str());
    return internal_error("cannot write " + tmp + ": " + std::strerror(wrote ? errno : saved));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return internal_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
  }
  return {};
}

Status prepare_out_dir(const std::string& dir) {
  if (dir.empty()) return invalid_argument("no output folder was given (out_dir is empty)");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    return invalid_argument("output folder '" + dir + "' exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) return internal_error("cannot create output folder '" + dir + "': " + ec.message());
  const std::string probe = (fs::path(dir) / ".make_model_probe").string();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (f == nullptr) return internal_error("cannot write into output folder '" + dir + "': " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
  return {};
}

const char* torch_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    default: return "float32";
  }
}

Json optional_id(int32_t id) { return id >= 0 ? Json(id) : Json(nullptr); }

Json rope_scaling_json(const ShapeSpec& s) {
  if (!s.llama3_scaling) return nullptr;
  Json r = Json::object();
  r["factor"] = s.rope_factor;
  r["high_freq_factor"] = kHighFreqFactor;
  r["low_freq_factor"] = kLowFreqFactor;
  r["original_max_position_embeddings"] = static_cast<int64_t>(s.original_context);
  r["rope_type"] = "llama3";
  return r;
}

std::string hf_config(const Plan& p, const Vocabulary& v) {
  const ShapeSpec& s = p.shape;
  Json c = Json::object();
  if (p.arch == "gpt2") {
    c["activation_function"] = "gelu_new";
    c["architectures"] = Json::array({"GPT2LMHeadModel"});
    c["attn_pdrop"] = 0.1;
    c["embd_pdrop"] = 0.1;
    c["resid_pdrop"] = 0.1;
    c["initializer_range"] = 0.02;
    c["layer_norm_epsilon"] = kLayerNormEps;
    c["n_ctx"] = s.context;
    c["n_embd"] = s.hidden;
    c["n_head"] = s.heads;
    c["n_inner"] = s.ffn;
    c["n_layer"] = s.layers;
    c["n_positions"] = s.context;
    c["reorder_and_upcast_attn"] = false;
    c["scale_attn_by_inverse_layer_idx"] = false;
    c["scale_attn_weights"] = true;
    c["summary_activation"] = nullptr;
    c["summary_first_dropout"] = 0.1;
    c["summary_proj_to_labels"] = true;
    c["summary_type"] = "cls_index";
    c["summary_use_proj"] = true;
  } else {
    const bool llama = p.arch == "llama";
    c["architectures"] = Json::array({llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM"});
    c["attention_dropout"] = 0.0;
    c["hidden_act"] = "silu";
    c["hidden_size"] = s.hidden;
    c["initializer_range"] = 0.02;
    c["intermediate_size"] = s.ffn;
    c["max_position_embeddings"] = s.context;
    c["num_attention_heads"] = s.heads;
    c["num_hidden_layers"] = s.layers;
    c["num_key_value_heads"] = s.kv_heads;
    c["rms_norm_eps"] = kRmsNormEps;
    c["rope_scaling"] = rope_scaling_json(s);
    c["rope_theta"] = s.rope_theta;
    c["tie_word_embeddings"] = p.tied;
    if (llama) {
      c["attention_bias"] = false;
      c["head_dim"] = p.head_dim;
      c["mlp_bias"] = false;
      c["pretraining_tp"] = 1;
    } else {
      c["max_window_layers"] = s.layers;
      c["sliding_window"] = s.context;
      c["use_sliding_window"] = false;
    }
  }
  c["bos_token_id"] = optional_id(v.bos_id);
  c["eos_token_id"] = optional_id(v.eos_id);
  c["model_type"] = p.arch;
  c["torch_dtype"] = torch_dtype(p.dtype);
  c["transformers_version"] = kTransformersVersion;
  c["use_cache"] = true;
  c["vocab_size"] = p.vocab;
  return c.dump(2) + "\n";
}

std::string generation_config(const Vocabulary& v) {
  Json c = Json::object();
  c["_from_model_config"] = true;
  if (v.bos_id >= 0) c["bos_token_id"] = v.bos_id;
  if (v.eos_id >= 0) c["eos_token_id"] = v.eos_id;
  c["transformers_version"] = kTransformersVersion;
  return c.dump(2) + "\n";
}

// llama.cpp's rope_freqs.weight: per rotary pair, the divisor llama3 scaling applies to its frequency.
std::vector<float> llama3_rope_factors(const ShapeSpec& s, int64_t head_dim) {
  std::vector<float> factors;
  const double low_wavelen = s.original_context / kLowFreqFactor;
  const double high_wavelen = s.original_context / kHighFreqFactor;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const float freq = 1.0f / det::powf(static_cast<float>(s.rope_theta), static_cast<float>(i) / static_cast<float>(head_dim));
    const double wavelen = 2 * M_PI / freq;
    double factor = 1.0;
    if (wavelen > low_wavelen) {
      factor = s.rope_factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (s.original_context / wavelen - kLowFreqFactor) / (kHighFreqFactor - kLowFreqFactor);
      factor = 1.0 / ((1 - smooth) / s.rope_factor + smooth);
    }
    factors.push_back(static_cast<float>(factor));
  }
  return factors;
}

// The GGUF copy of one tensor's values: `src` (rows x cols, f32) rearranged as llama.cpp stores it.
std::vector<float> rearrange(const TensorSpec& t, const std::vector<float>& src, int64_t head_dim) {
  if (t.transform == GgufTransform::kNone) return src;
  std::vector<float> dst(src.size());
  const int64_t rows = t.shape[0], cols = t.shape.size() > 1 ? t.shape[1] : 1;
  if (t.transform == GgufTransform::kTranspose) {  // [rows, cols] -> [cols, rows]
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
    }
    return dst;
  }
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < t.heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const float* from = &src[(h * head_dim + j * half + i) * cols];
        std::copy(from, from + cols, &dst[(h * head_dim + 2 * i + j) * cols]);
      }
    }
  }
  return dst;
}

std::vector<int64_t> gguf_shape(const TensorSpec& t) {
  if (t.transform == GgufTransform::kTranspose) return {t.shape[1], t.shape[0]};
  return t.shape;
}

uint32_t gguf_file_type(DType dtype) {
  switch (dtype) {
    case DType::kF16: return 1;
    case DType::kBF16: return 32;
    default: return 0;
  }
}

Status write_gguf(const Plan& p, const Vocabulary& v, const std::string& path, const std::string& model_name) {
  const ShapeSpec& s = p.shape;
  const std::string a = p.arch;
  GgufWriter w;
  w.set_string("general.architecture", a);
  w.set_string("general.type", "model");
  w.set_string("general.name", model_name);
  w.set_u32(a + ".block_count", static_cast<uint32_t>(s.layers));
  w.set_u32(a + ".context_length", static_cast<uint32_t>(s.context));
  w.set_u32(a + ".embedding_length", static_cast<uint32_t>(s.hidden));
  w.set_u32(a + ".feed_forward_length", static_cast<uint32_t>(s.ffn));
  w.set_u32(a + ".attention.head_count", static_cast<uint32_t>(s.heads));
  w.set_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(s.kv_heads));
  if (a == "gpt2") {
    w.set_f32(a + ".attention.layer_norm_epsilon", static_cast<float>(kLayerNormEps));
  } else {
    w.set_f32(a + ".rope.freq_base", static_cast<float>(s.rope_theta));
    w.set_f32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(kRmsNormEps));
    w.set_u32(a + ".rope.dimension_count", static_cast<uint32_t>(p.head_dim));
    if (a == "llama") w.set_u32(a + ".vocab_size", static_cast<uint32_t>(p.vocab));
  }
  w.set_u32("general.file_type", gguf_file_type(p.dtype));
  w.set_u32("general.quantization_version", 2);
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", v.pre);
  w.set_string_array("tokenizer.ggml.tokens", v.tokens);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_string_array("tokenizer.ggml.merges", v.merges);
  if (v.bos_id >= 0) w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
  if (v.eos_id >= 0) w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
  w.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (!v.chat_template.empty()) w.set_string("tokenizer.chat_template", v.chat_template);

  std::deque<std::vector<uint8_t>> owned;  // stable addresses for the views
  if (a == "llama" && s.llama3_scaling) {
    const std::vector<float> factors = llama3_rope_factors(s, p.head_dim);
    owned.emplace_back(factors.size() * sizeof(float));
    std::memcpy(owned.back().data(), factors.data(), owned.back().size());
    w.add_tensor("rope_freqs.weight", TensorView{DType::kF32, {static_cast<int64_t>(factors.size())}, owned.back().data()});
  }
  for (const TensorSpec& t : p.tensors) {
    // llama.cpp keeps 1-D tensors (norms, biases) in F32; the values are the safetensors values either way.
    const DType out = t.shape.size() == 1 ? DType::kF32 : p.dtype;
    if (t.transform == GgufTransform::kNone && out == p.dtype) {
      w.add_tensor(t.gguf_name, TensorView{out, t.shape, t.data.data()});
      continue;
    }
    const size_t n = element_count(t.shape);
    std::vector<float> values(n);
    to_f32(p.dtype, t.data.data(), values.data(), n);
    values = rearrange(t, values, p.head_dim);
    owned.emplace_back(dtype_bytes(out, n));
    from_f32(out, values.data(), owned.back().data(), n);
    w.add_tensor(t.gguf_name, TensorView{out, gguf_shape(t), owned.back().data()});
  }
  return w.write(path);
}

}  // namespace

std::vector<std::string> model_arch_names() { return {"gpt2", "llama", "qwen2"}; }

std::vector<std::string> model_shape_names(const std::string& arch) {
  std::vector<std::string> names;
  if (arch == "gpt2") {
    for (const ShapeSpec& s : kGpt2Shapes) names.emplace_back(s.name);
  } else if (arch == "llama" || arch == "qwen2") {
    for (const ShapeSpec& s : kLlamaShapes) names.emplace_back(s.name);
  }
  return names;
}

Status make_model(const MakeModelOptions& options) {
  Plan p;
  p.arch = options.arch;
  const std::vector<std::string> archs = model_arch_names();
  if (std::find(archs.begin(), archs.end(), p.arch) == archs.end())
    return invalid_argument("unknown architecture '" + p.arch + "'; choose one of: " + join(archs));
  bool found = false;
  auto pick = [&](const auto& table) {
    for (const ShapeSpec& s : table) {
      if (options.shape == s.name) {
        p.shape = s;
        found = true;
      }
    }
  };
  if (p.arch == "gpt2") {
    pick(kGpt2Shapes);
  } else {
    pick(kLlamaShapes);
  }
  if (!found)
    return invalid_argument("unknown shape '" + options.shape + "' for architecture " + p.arch +
                            "; choose one of: " + join(model_shape_names(p.arch)));
  if (options.dtype == "f32") {
    p.dtype = DType::kF32;
  } else if (options.dtype == "f16") {
    p.dtype = DType::kF16;
  } else if (options.dtype == "bf16") {
    p.dtype = DType::kBF16;
  } else {
    return invalid_argument("unknown dtype '" + options.dtype + "'; choose one of: f32, f16, bf16");
  }
  p.tied = p.arch == "gpt2" || p.arch == "qwen2" || p.shape.tied;
  p.head_dim = p.shape.hidden / p.shape.heads;

  KV_ASSIGN_OR_RETURN(Vocabulary vocab, read_vocabulary(options.tokenizer_dir, p.shape.context));
  p.vocab = static_cast<int64_t>(vocab.tokens.size());
  KV_RETURN_IF_ERROR(prepare_out_dir(options.out_dir));

  if (p.arch == "gpt2") {
    plan_gpt2(p);
  } else {
    plan_llama(p);
  }
  generate(p, options.seed);

  const fs::path dir(options.out_dir);
  KV_RETURN_IF_ERROR(write_text((dir / "config.json").string(), hf_config(p, vocab)));
  KV_RETURN_IF_ERROR(write_text((dir / "generation_config.json").string(), generation_config(vocab)));
  for (const auto& [name, text] : vocab.files) KV_RETURN_IF_ERROR(write_text((dir / name).string(), text));

  std::vector<NamedTensor> named;
  named.reserve(p.tensors.size());
  for (const TensorSpec& t : p.tensors) named.push_back({t.hf_name, TensorView{p.dtype, t.shape, t.data.data()}});
  KV_RETURN_IF_ERROR(write_safetensors((dir / "model.safetensors").string(), named, {{"format", "pt"}}));
  named.clear();

  const std::string name = "kvshare-" + p.arch + "-" + p.shape.name;
  return write_gguf(p, vocab, (dir / "model.gguf").string(), name);
}

}  // namespace kvshare
