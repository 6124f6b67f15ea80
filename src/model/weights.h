// Helpers the architecture files use to take tensors out of a TensorStore with their shapes checked.
#pragma once

#include <memory>
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

  // Moves the converted buffers out, for the model to keep.
  std::vector<std::vector<float>> take_owned() { return std::move(owned_); }

 private:
  Result<const TensorView*> find(const std::string& name, const std::vector<int64_t>& shape) const;
  const TensorStore& store_;
  std::vector<std::vector<float>> owned_;
};

}  // namespace kvshare
