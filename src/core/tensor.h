// A non-owning view of a stored tensor: dtype, shape (outermost first, as safetensors and PyTorch
// write it) and a pointer into a mapped file or an owned buffer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kvshare {

struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major, outermost first: a [out, in] weight has shape {out, in}
  const void* data = nullptr;

  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t num_bytes() const { return dtype_bytes(dtype, static_cast<size_t>(num_elements())); }
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace kvshare
