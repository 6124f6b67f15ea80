#include "model/weights.h"

#include "core/mapped_file.h"

namespace kvshare {

Result<const TensorView*> WeightLoader::find(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorView* t = store_.find(name);
  if (t == nullptr) return not_found("the model has no tensor '" + name + "'");
  if (t->shape != shape)
    return invalid_argument("tensor '" + name + "' has shape " + shape_to_string(t->shape) + " but the config implies " +
                            shape_to_string(shape));
  return t;
}

Result<const float*> WeightLoader::floats(const std::string& name, const std::vector<int64_t>& shape) {
  KV_ASSIGN_OR_RETURN(const TensorView* t, find(name, shape));
  if (t->dtype == DType::kF32) return static_cast<const float*>(t->data);
  if (t->dtype == DType::kQ8_0 && t->num_elements() % kQ8_0BlockSize != 0)
    return invalid_argument("Q8_0 tensor '" + name + "' has a size that is not a multiple of 32");
  std::vector<float>& buf = owned_.emplace_back(static_cast<size_t>(t->num_elements()));
  to_f32(t->dtype, t->data, buf.data(), buf.size());
  return static_cast<const float*>(buf.data());
}

Result<Linear> WeightLoader::linear(const std::string& name, const std::vector<int64_t>& shape, WeightLayout layout,
                                    const float* bias) {
  KV_ASSIGN_OR_RETURN(const float* data, floats(name, shape));
  KV_ASSIGN_OR_RETURN(Linear lin, Linear::create(TensorView{DType::kF32, shape, data}, layout, bias, repack_));
  // The packed copy is what runs from now on: let the stored bytes leave memory (a mapped file's pages are
  // read again only if something else, such as a tied embedding lookup, touches them).
  const TensorView* t = store_.find(name);
  if (lin.packed() && t->dtype == DType::kF32) release_pages(t->data, t->num_bytes());
  return lin;
}

Result<Linear> WeightLoader::linear_over(const float* data, const std::vector<int64_t>& shape,
                                         WeightLayout layout) const {
  return Linear::create(TensorView{DType::kF32, shape, data}, layout, nullptr, repack_);
}

}  // namespace kvshare
