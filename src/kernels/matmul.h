// Matrix multiply for the linear layers: our own GEMM (kernels_impl.inc) over weights packed once, at load,
// into 16-column panels in their stored dtype (F32, BF16 or F16; 16-bit weights are widened inside the kernel,
// so they take half the memory and half the bytes per decode step).
//
// Exactness by design: y[i][j] is one FMA chain over k = 0 … K-1 in ascending order, then + bias[j]. A row's
// bits therefore depend on nothing but that row and the weights: not on how many rows are multiplied together,
// the blocking, the thread count or the SIMD path (scalar, AVX2 and AVX-512 give the same bits). The engine
// relies on this for "reuse on = reuse off" bitwise, and for the same logits on every CPU.
#pragma once

#include <cstdint>
#include <memory>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/kernel_table.h"

namespace kvshare {

enum class WeightLayout {
  kOutIn,  // [out_features, in_features]: PyTorch nn.Linear, GGUF
  kInOut,  // [in_features, out_features]: GPT-2's Conv1D
};

// With more rows than a few microkernels' worth, K is run in slices this deep (matmul.cc): each element's
// chain stops at a slice's end and continues in the next, so the bits are the same whatever the depth.
constexpr int64_t kGemmKSlice = 1024;

// y[m, out] = x[m, in] · W (+ bias).
class Linear {
 public:
  // Packs `weight` (2-D; F32, BF16 or F16) into panels; the stored tensor is not read again.
  // Precondition: `bias` ([out], may be null) outlives this. `k_slice` (> 0) is the K slice depth for calls
  // with many rows; only speed depends on it (kernel_bench --k-slice compares depths on a machine).
  static Result<Linear> create(const TensorView& weight, WeightLayout layout, const float* bias,
                               int64_t k_slice = kGemmKSlice);
  Linear() = default;  // empty, for members filled in later from create()

  // Multithreaded (OpenMP) over column panel ranges and blocks of rows. x: [m, in], y: [m, out]; they must not
  // overlap.
  void forward(const float* x, int64_t m, float* y) const;

  int64_t in_features() const { return packed_.k; }
  int64_t out_features() const { return packed_.n; }
  DType weight_dtype() const { return packed_.dtype; }
  int64_t packed_bytes() const;

 private:
  struct FreeAligned {
    void operator()(void* p) const;
  };
  std::unique_ptr<uint8_t, FreeAligned> storage_;
  PackedB packed_;
  const float* bias_ = nullptr;
  int64_t k_slice_ = kGemmKSlice;
};

// The definition, element by element: y[i][j] = (fma chain over k ascending of x[i][k] · w[k][j]) + bias[j],
// with std::fma. Linear::forward must equal it bit for bit on every path.
void linear_reference(const TensorView& weight, WeightLayout layout, const float* bias, const float* x, int64_t m,
                      float* y);

}  // namespace kvshare
