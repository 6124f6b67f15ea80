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
  // `repack_weights`: the Linear layers reorder their weights into oneDNN's blocked layout (LoadOptions).
  WeightLoader(const TensorStore& store, bool repack_weights) : store_(store), repack_(repack_weights) {}

  // A tensor of exactly `shape` as F32 floats: the stored bytes when F32, else a converted copy kept here.
  Result<const float*> floats(const std::string& name, const std::vector<int64_t>& shape);
  // A linear layer over `name`, whose stored shape must be `shape` ([out, in] for kOutIn, [in, out] for kInOut).
  Result<Linear> linear(const std::string& name, const std::vector<int64_t>& shape, WeightLayout layout,
                        const float* bias = nullptr);
  // A linear layer over floats another tensor also uses (a tied LM head over the embedding).
  Result<Linear> linear_over(const float* data, const std::vector<int64_t>& shape, WeightLayout layout) const;
  bool has(const std::string& name) const { return store_.find(name) != nullptr; }

  // Moves the converted buffers out, for the model to keep.
  std::vector<std::vector<float>> take_owned() { return std::move(owned_); }

 private:
  Result<const TensorView*> find(const std::string& name, const std::vector<int64_t>& shape) const;
  const TensorStore& store_;
  bool repack_;
  std::vector<std::vector<float>> owned_;
};

}  // namespace kvshare
