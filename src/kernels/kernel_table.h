// The kernels each SIMD path provides (kernels_scalar.cc, kernels_avx2.cc, kernels_avx512.cc), as one table of
// functions. The drivers (matmul.cc, attention.cc, ops.cc) split the work and run it on the active path's table.
// Every entry computes the same bits on every path; only the speed differs.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/attention.h"
#include "kernels/isa.h"

namespace kvshare {

// B [K, N] packed in panels of 16 columns: element (k, n) at data + ((n / 16) * K + k) * 16 + n % 16, in `dtype`
// (F32, BF16 or F16; 16-bit values are widened inside the kernel). The last panel is padded with zeros.
constexpr int64_t kPanelWidth = 16;
struct PackedB {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t k = 0, n = 0;
  int64_t num_panels() const { return (n + kPanelWidth - 1) / kPanelWidth; }
};

// C [M, N] = A [M, K] · B (+ bias [N]). Each element is one FMA chain over k = 0 … K-1 in ascending order,
// acc = fma(a[i][k], b[k][j], acc) from acc = 0, then + bias[j]: so a row's bits depend on nothing but that
// row, the weights and the bias.
// A is packed first (pack_a), in the row blocks one gemm call runs (gemm_row_block_start), each block
// k-major, [K][rows]; the block starting at row i begins at a_packed + i · K.
struct GemmArgs {
  const float* a_packed = nullptr;
  PackedB b;
  const float* bias = nullptr;  // may be null
  float* c = nullptr;
  int64_t ldc = 0;
};

// Query vectors attended together: all read the KV head `kv_head`, each its own context through its own block
// table. The kernel only shares loads between them; each vector's arithmetic is what it would be alone.
constexpr int kMaxTileVectors = 64;
struct AttentionTile {
  int n = 0;
  int64_t kv_head = 0;
  const float* q[kMaxTileVectors];       // [head_dim]
  float* out[kMaxTileVectors];           // [head_dim]
  int64_t len[kMaxTileVectors];          // it attends to context positions 0 … len - 1
  const int32_t* table[kMaxTileVectors];  // its sequence's block table
};

// A gemm call over `rows` rows cuts them into gemm_row_blocks(rows, mr) blocks of nearly equal size, at most mr
// rows each (8 rows with mr = 6: 4 + 4, not 6 + 2, so that every microkernel call runs enough chains and the
// weights are read in one pass); block b covers [start(b), start(b + 1)).
inline int64_t gemm_row_blocks(int64_t rows, int64_t mr) { return (rows + mr - 1) / mr; }
inline int64_t gemm_row_block_start(int64_t rows, int64_t mr, int64_t b) { return b * rows / gemm_row_blocks(rows, mr); }

struct KernelTable {
  Isa isa;
  // Rows per GEMM microkernel call at most (the row blocks of gemm_row_block_start; the driver's M blocks start
  // at multiples of it).
  int gemm_rows;
  // Rows [m0, m1) of C, panels [p0, p1), k in [k0, k1): starts each chain when k0 == 0, else continues the
  // partial sums C holds; adds the bias when k1 == K. A was packed in this call's row blocks. Single-threaded.
  void (*gemm)(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1, int64_t k0, int64_t k1);
  // out[k · rows + r] = a[r · lda + k]: one block of packed A (rows <= gemm_rows).
  void (*pack_a)(const float* a, int64_t lda, int64_t rows, int64_t k, float* out);

  // softmax(q · K[0 … len-1]ᵀ · scale) · V[0 … len-1] for each vector of the tile, over a paged layer.
  // scratch: at least tile.n * stride floats, stride ≥ the longest len rounded up to whole blocks.
  // For each vector: score_j = (fma chain over d ascending of q[d] k_j[d]) * scale; m = max_j score_j;
  // p_j = exp(score_j - m); s = the 16-lane sum of p (lanes j % 16, then the fixed tree);
  // out = (fma chain over j ascending of p_j v_j) * (1 / s).
  void (*attend)(const AttentionTile& tile, const PagedKvLayer& cache, float scale, float* scratch, int64_t stride);
  // The same with plain per-element loops, for any head_dim and block_size (attend falls back to it where
  // head_dim or block_size is not a multiple of 16). Exposed so tests can hold the two to the same bits.
  void (*attend_any_shape)(const AttentionTile& tile, const PagedKvLayer& cache, float scale, float* scratch,
                           int64_t stride);

  // Row kernels: one row of `n` floats. Reductions use 16 lanes (element i in lane i % 16) and the fixed tree.
  void (*rms_norm_row)(const float* x, const float* weight, float eps, int64_t n, float* out);
  void (*layer_norm_row)(const float* x, const float* weight, const float* bias, float eps, int64_t n, float* out);
  void (*gelu_tanh_row)(float* x, int64_t n);
  void (*silu_mul_row)(const float* gate, const float* up, int64_t n, float* out);
  // out[i] = exp(x[i]), the exp every kernel uses (for tests).
  void (*exp_row)(const float* x, int64_t n, float* out);

  // For calibration (calibrate.h): `iters` rounds of independent fma chains, as many as keep the path's FMA
  // units busy; returns the FLOPs done. And a sum of n floats read sequentially (a memory-bandwidth probe).
  double (*fma_loop)(int64_t iters);
  float (*sum_floats)(const float* x, int64_t n);
};

const KernelTable& scalar_kernels();
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();
// The table of `isa` (which the CPU must support).
const KernelTable& kernels_for(Isa isa);
// The table of active_isa().
const KernelTable& kernels();

}  // namespace kvshare
