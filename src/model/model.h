// Model: read-only weights plus the forward pass of one architecture. Per-step scratch lives in
// Activations and per-sequence K/V in KvStorage, both passed in, so one Model serves many sequences
// and many caches.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "formats/tensor_store.h"
#include "kernels/attention.h"
#include "kv/kv_storage.h"
#include "model/config.h"

namespace kvshare {

// Everything one forward pass computes, flattened over the sequences of a step.
struct ForwardBatch {
  std::vector<int32_t> tokens;         // [num_tokens] token ids of every sequence's planned tokens, in order
  std::vector<int32_t> positions;      // [num_tokens] each token's position in its sequence
  std::vector<int32_t> slots;          // [num_tokens] where its K/V go: block * block_size + offset
  std::vector<AttentionSeq> seqs;      // per sequence: its rows, context length and block table
  std::vector<int64_t> logit_rows;     // rows (indexes into tokens) whose next-token logits are wanted

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
};

// Scratch for one step, grown to the largest batch seen; owned by the caller, reused across steps.
struct Activations {
  std::vector<float> x;         // [tokens, hidden] the residual stream
  std::vector<float> xn;        // [tokens, hidden] normalized input of a sub-layer
  std::vector<float> q;         // [tokens, heads * head_dim]
  std::vector<float> k;         // [tokens, kv_heads * head_dim]
  std::vector<float> v;         // [tokens, kv_heads * head_dim]
  std::vector<float> qkv;       // [tokens, 3 * hidden] GPT-2's fused projection
  std::vector<float> attn;      // [tokens, heads * head_dim]
  std::vector<float> proj;      // [tokens, hidden] output of a projection back to the residual
  std::vector<float> ffn_a;     // [tokens, ffn] up (and GELU) / gate
  std::vector<float> ffn_b;     // [tokens, ffn] up for SwiGLU
  std::vector<float> rope_cos;  // [tokens, head_dim / 2]
  std::vector<float> rope_sin;  // [tokens, head_dim / 2]
  std::vector<float> last;      // [logit rows, hidden]
};

class Model {
 public:
  virtual ~Model() = default;
  const ModelConfig& config() const { return config_; }

  // Runs all layers over every token of the batch: writes their K/V into `kv` at batch.slots, attends over
  // each sequence's cached context through its block table, and writes logits [logit_rows, vocab].
  // Preconditions: kv's shape matches this model; each sequence's earlier context is already in kv.
  virtual Status forward(const ForwardBatch& batch, KvStorage& kv, Activations& act, float* logits) const = 0;

  // FLOPs of a forward pass over `tokens` new tokens attending to `context` tokens on average
  // (matrix multiplies and attention), for benchmark reports.
  double forward_flops(int64_t tokens, double mean_context) const;
  // Bytes of matrix weights one forward pass reads (as packed: 2 per parameter for BF16/F16, else 4).
  double weight_bytes() const { return static_cast<double>(matmul_weight_bytes_); }

 protected:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  ModelConfig config_;
  int64_t matmul_weight_bytes_ = 0;  // set by the architecture once its Linear layers are packed
};

// Where the weights come from: their names differ between Hugging Face folders and GGUF files.
enum class WeightSource { kHuggingFace, kGguf };

// Builds the architecture's model over `store` (kept alive by the model). Matrix weights are packed once for
// the GEMM in their stored dtype (F32, BF16, F16; Q8_0 as F32) and their stored bytes released; embeddings,
// norms and biases are used in place when F32, else converted to F32 once. A store holding tensors of layers
// past config.num_layers is refused (the config's layer count disagrees with the file).
Result<std::unique_ptr<Model>> build_model(const ModelConfig& config, TensorStore store, WeightSource source);

// Loads a model from a Hugging Face folder (config.json + safetensors) or a .gguf file.
Result<std::unique_ptr<Model>> load_model(const std::string& path);

}  // namespace kvshare
