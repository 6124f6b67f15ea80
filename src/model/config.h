// ModelConfig: the architecture's hyper-parameters, read from a Hugging Face config.json or GGUF metadata.
// It holds no weights and no per-request state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "kernels/ops.h"

namespace kvshare {

class GgufFile;

enum class Arch {
  kGpt2,   // GPT2LMHeadModel: LayerNorm, learned positions, gelu_new, fused QKV with bias
  kLlama,  // LlamaForCausalLM (and Qwen2 with Q/K/V bias): RMSNorm, RoPE, GQA, SwiGLU
};

const char* arch_name(Arch arch);

// The `llama3` rope_scaling of Llama 3.1+: long wavelengths slowed by `factor`, short kept, smooth between.
struct Llama3RopeScaling {
  bool enabled = false;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

// The largest vocabulary a config may declare (the tokenizer's limit too: kMaxVocabSize in tokenizer.h).
constexpr int64_t kMaxConfigVocabSize = int64_t{1} << 24;

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string model_type;  // as the files name it: "gpt2", "llama", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_size = 0;
  int64_t max_context = 0;  // positions the model was trained for (n_positions / max_position_embeddings)
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  Llama3RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::kHalf;  // kInterleaved for GGUF Llama (llama.cpp permutes Q/K rows)
  // GGUF's rope_freqs.weight (llama.cpp's form of the llama3 scaling): inv_freq[i] /= factor[i]. Empty: none.
  std::vector<float> rope_freq_factors;
  bool tie_embeddings = true;
  bool qkv_bias = false;  // Qwen2, and Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias (Qwen2 has none)

  // Checks the numbers are positive and consistent (heads divide hidden, kv heads divide heads), and within the
  // limits of docs/limits.md (each error names the field and its limit).
  Status validate() const;
  // RoPE inverse frequencies, head_dim / 2 of them, with the llama3 scaling applied.
  std::vector<float> rope_inv_freq() const;
  // Parameters, for FLOP counts and memory estimates.
  int64_t num_parameters() const;
  // K and V bytes for one token in f32: 2 * layers * kv_heads * head_dim * 4.
  int64_t kv_bytes_per_token() const { return 2 * num_layers * num_kv_heads * head_dim * 4; }
};

// From the text of a Hugging Face config.json.
Result<ModelConfig> parse_hf_config(const std::string& json_text);
// From GGUF metadata (general.architecture "gpt2" or "llama"); vocab size from the stored vocabulary.
Result<ModelConfig> config_from_gguf(const GgufFile& gguf);

}  // namespace kvshare
