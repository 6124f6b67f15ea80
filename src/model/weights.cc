#include "model/weights.h"

#include "core/mapped_file.h"

namespace kvshare {

Result<const TensorView*> WeightLoader::find(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* t = store_.find(name);
  if (t == nullptr) return not_found("the model has no tensor '" + name + "'");
  if (t->shape != shape)
    return invalid_argument("tensor '" + name + "' has shape " + shape_to_string(t->shape) + " but the config implies " +
                            shape_to_string(shape));
  if (t->dtype == DType::kQ8_0 && t->num_elements() % kQ8_0BlockSize != 0)
    return invalid_argument("Q8_0 tensor '" + name + "' has a size that is not a multiple of 32");
  return t;
}

Result<const float*> WeightLoader::floats(const std::string& name, const std::vector<int64_t>& shape) {
  KV_ASSIGN_OR_RETURN(const TensorView* t, find(name, shape));
  if (t->dtype == DType::kF32) return static_cast<const float*>(t->data);
  std::vector<float>& buf = owned_.emplace_back(static_cast<size_t>(t->num_elements()));
  to_f32(t->dtype, t->data, buf.data(), buf.size());
  return static_cast<const float*>(buf.data());
}

Result<Linear> WeightLoader::linear(const std::string& name, const std::vector<int64_t>& shape, WeightLayout layout,
                                    const float* bias, bool keep_stored) {
  KV_ASSIGN_OR_RETURN(const TensorView* t, find(name, shape));
  Result<Linear> lin = unimplemented("");
  if (t->dtype == DType::kQ8_0) {  // no Q8_0 kernel: dequantized (exactly) to F32 for packing
    std::vector<float> f32(static_cast<size_t>(t->num_elements()));
    to_f32(t->dtype, t->data, f32.data(), f32.size());
    lin = Linear::create(TensorView{DType::kF32, shape, f32.data()}, layout, bias);
  } else {
    lin = Linear::create(*t, layout, bias);
  }
  if (!lin.ok()) return lin.status().with_context("tensor '" + name + "'");
  // The packed copy is what runs from now on: let the stored bytes leave memory (a mapped file's pages are
  // read again only if something else touches them).
  if (!keep_stored) release_pages(t->data, t->num_bytes());
  return lin;
}

}  // namespace kvshare
