// Matrix multiply for the linear layers, through oneDNN (see ../shared/docs/machine.md: ~8x OpenBLAS's
// default kernels here, and AMX for bf16 where the CPU has it).
//
// Batch invariance: row i of the output depends only on row i of the input and the weights, never on how
// many rows are multiplied together. oneDNN's matmul keeps each row's reduction order for every M
// for F32 (checked by matmul_test); the engine relies on this for "reuse on = reuse off" bitwise. With BF16
// weights the same holds only where oneDNN runs its brgemm kernels (AVX512-BF16 or AMX CPUs), so the models
// compute in F32 (BF16 weights are converted at load).
#pragma once

#include <cstdint>
#include <memory>

#include "core/status.h"
#include "core/tensor.h"

namespace kvshare {

enum class WeightLayout {
  kOutIn,  // [out_features, in_features]: PyTorch nn.Linear, GGUF
  kInOut,  // [in_features, out_features]: GPT-2's Conv1D
};

// y[m, out] = x[m, in] · W (+ bias). W is F32 or BF16. It is reordered once into oneDNN's blocked layout
// (a copy, about twice as fast as the stored layout for prefill) unless that is the stored layout already.
// With BF16 weights the input rows are rounded to bf16 and products accumulate in f32.
class Linear {
 public:
  // Preconditions: `weight` is 2-D, F32 or BF16; its memory (in case it is used in place) and `bias`
  // ([out], may be null) outlive this.
  // `repack`: reorder the weights into oneDNN's blocked layout (see above); false uses them in place.
  static Result<Linear> create(const TensorView& weight, WeightLayout layout, const float* bias, bool repack = true);
  Linear();  // empty, for members filled in later from create()
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;
  ~Linear();

  void forward(const float* x, int64_t m, float* y) const;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  DType weight_dtype() const { return dtype_; }
  // Whether the weights were reordered into a copy (then the stored tensor is not read again).
  bool packed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t in_ = 0, out_ = 0;
  DType dtype_ = DType::kF32;
};

// The oracle: plain loops, double accumulation. Same contract as Linear::forward.
void linear_reference(const TensorView& weight, WeightLayout layout, const float* bias, const float* x, int64_t m,
                      float* y);

}  // namespace kvshare
