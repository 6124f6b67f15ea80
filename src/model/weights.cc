#include "model/weights.h"

#include <algorithm>
#include <cstring>

#include "core/mapped_file.h"

namespace kvshare {

namespace {

// Tensors that checkpoints carry but that are not weights of the model: attention masks and RoPE tables saved
// as buffers by older transformers versions, and GGUF's llama3 RoPE factors (read by config_from_gguf).
bool is_known_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") ||
         name.ends_with(".rotary_emb.inv_freq") || name == "rope_freqs.weight";
}

// The index of the first element of `t` that is NaN or infinite, or -1. Only the exponent bits are read, so
// one pass at memory speed: F32 0x7f800000, BF16 0x7f80, F16 0x7c00 all ones; Q8_0 holds int8 values and an
// F16 scale per block of 32, and only the scale can be non-finite.
template <typename Word, int64_t kStride = sizeof(Word)>
int64_t first_all_ones(const uint8_t* bytes, int64_t count, Word mask) {
  constexpr int64_t kChunk = 4096;  // branch-free within a chunk, so that the loop vectorizes
  for (int64_t begin = 0; begin < count; begin += kChunk) {
    const int64_t end = std::min(count, begin + kChunk);
    Word hits = 0;  // lanes of all-ones exponents, OR-ed (not counted: a count could wrap to 0)
    for (int64_t i = begin; i < end; ++i) {
      Word w;
      std::memcpy(&w, bytes + i * kStride, sizeof(Word));
      hits |= static_cast<Word>((w & mask) == mask);
    }
    if (hits == 0) continue;
    for (int64_t i = begin; i < end; ++i) {
      Word w;
      std::memcpy(&w, bytes + i * kStride, sizeof(Word));
      if ((w & mask) == mask) return i;
    }
  }
  return -1;
}

int64_t first_non_finite(const TensorView& t) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  const int64_t n = t.num_elements();
  switch (t.dtype) {
    case DType::kF32: return first_all_ones<uint32_t>(bytes, n, 0x7f800000u);
    case DType::kBF16: return first_all_ones<uint16_t>(bytes, n, 0x7f80);
    case DType::kF16: return first_all_ones<uint16_t>(bytes, n, 0x7c00);
    case DType::kQ8_0: {
      const int64_t block = first_all_ones<uint16_t, kQ8_0BlockBytes>(bytes, n / kQ8_0BlockSize, 0x7c00);
      return block < 0 ? -1 : block * kQ8_0BlockSize;
    }
  }
  return -1;
}

}  // namespace

Status WeightLoader::check_every_tensor_used(const std::string& model_type) const {
  std::vector<std::string> unused;
  for (const auto& [name, view] : store_.tensors())
    if (used_.count(name) == 0 && !is_known_buffer(name)) unused.push_back(name);
  if (unused.empty()) return {};
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 5; ++i) list += (i ? ", '" : "'") + unused[i] + "'";
  if (unused.size() > 5) list += " and " + std::to_string(unused.size() - 5) + " more";
  return invalid_argument("the weights hold " + std::to_string(unused.size()) + " tensor" +
                          (unused.size() == 1 ? "" : "s") + " that a " + model_type + " model does not use (" + list +
                          "): the file was written for another architecture or variant than its config names, "
                          "and running without " + (unused.size() == 1 ? "it" : "them") + " would give wrong results");
}

Result<const TensorView*> WeightLoader::find(const std::string& name, const std::vector<int64_t>& shape) {
  const TensorView* t = store_.find(name);
  if (t == nullptr) return not_found("the model has no tensor '" + name + "'");
  const bool first_use = used_.insert(name).second;
  if (t->shape != shape)
    return invalid_argument("tensor '" + name + "' has shape " + shape_to_string(t->shape) + " but the config implies " +
                            shape_to_string(shape));
  if (t->dtype == DType::kQ8_0 && t->num_elements() % kQ8_0BlockSize != 0)
    return invalid_argument("Q8_0 tensor '" + name + "' has a size that is not a multiple of 32");
  // A NaN or infinite weight makes every result garbage or NaN; PyTorch and llama.cpp run such a file anyway.
  // Checked once per tensor (a tied embedding is taken twice: as the table and as the LM head).
  if (const int64_t bad = first_use ? first_non_finite(*t) : -1; bad >= 0)
    return data_loss("tensor '" + name + "' holds a NaN or infinite value (element " + std::to_string(bad) +
                     (t->dtype == DType::kQ8_0 ? ", a block scale" : "") +
                     "): the file is corrupt, or was saved after training diverged");
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
