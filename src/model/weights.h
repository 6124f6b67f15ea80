// Helpers the architecture files use to take tensors out of a TensorStore with their shapes checked.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "formats/tensor_store.h"
#include "kernels/matmul.h"

namespace kvshare {

class WeightLoader {
 public:
  explicit WeightLoader(const TensorStore& store) : store_(store) {}

  // A tensor of exactly `shape` as F32 floats: the stored bytes when F32, else a converted copy kept here.
  Result<const float*> floats(const std::string& name, const std::vector<int64_t>& shape);
  // A linear layer over `name`, whose stored shape must be `shape` ([out, in] for kOutIn, [in, out] for kInOut).
  // F32, BF16 and F16 weights are packed in their own dtype, Q8_0 ones as F32; the stored bytes are then
  // released from memory, unless `keep_stored` (a tied LM head whose matrix is also the embedding table).
  Result<Linear> linear(const std::string& name, const std::vector<int64_t>& shape, WeightLayout layout,
                        const float* bias = nullptr, bool keep_stored = false);
  bool has(const std::string& name) const { return store_.find(name) != nullptr; }

  // Refuses a store holding a tensor that no floats() or linear() call took: a tensor the model would ignore
  // means the file was written for another architecture or variant (llama.cpp refuses such files too). Buffers
  // that checkpoints carry but no model reads (GPT-2's attn.bias / attn.masked_bias masks, Llama's
  // rotary_emb.inv_freq, GGUF's rope_freqs.weight, which the config reads) are not counted.
  Status check_every_tensor_used(const std::string& model_type) const;

  // Moves the converted buffers out, for the model to keep.
  std::vector<std::vector<float>> take_owned() { return std::move(owned_); }

 private:
  Result<const TensorView*> find(const std::string& name, const std::vector<int64_t>& shape);
  const TensorStore& store_;
  std::set<std::string> used_;
  std::vector<std::vector<float>> owned_;
};

}  // namespace kvshare
