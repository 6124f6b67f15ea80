#include "kernels/matmul.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace kvshare {
namespace {

// Blocking (BLIS's loops): a kGemmKSlice-deep slice of a panel group (AVX-512: 2 panels × 1024 F32 values,
// 128 KiB) stays in L2 while the microkernel runs over an MC-row block of A (96 × 1024 values, 384 KiB), which
// stays in L2 too. The work is cut into items (a panel range × an M block) that threads take as they come free:
// on a shared machine one core may run slower than the other. The slices were 256 deep (a group's slice in L1),
// but every slice stores and reloads the sums and starts cold: on AMD EPYC Zen 5, 2 threads, M 64-512 of
// GPT-2-small's GEMMs, slices of 1024 ran at 87-93% of the FMA peak against 76-88% (qkv, fc; proj 73-80%
// against 67-77%; AVX-512, and likewise on AVX2), and the 512-token prefill 7% faster (kernel_bench --only gemm
// and bench control 4 × 512, three interleaved rounds each; bench/README.md). On Zen 3, whose L2 is half as large,
// slices of 1024 held 89-93% at the median and 512 no more (AVX2, 2026-12-07; bench/README.md).
constexpr int64_t kMcRows = 96;
// Below this many multiply-adds a call runs on one thread (a parallel region costs a few microseconds).
constexpr int64_t kParallelMinFmas = int64_t{1} << 18;
constexpr size_t kHugePage = size_t{2} << 20;

// The stored element (k, n) of a [K, N] matrix kept as [N, K] (kOutIn) or [K, N] (kInOut).
template <class T>
void pack_panels(const T* w, WeightLayout layout, int64_t k_dim, int64_t n_dim, T* out) {
  const int64_t panels = (n_dim + kPanelWidth - 1) / kPanelWidth;
#pragma omp parallel for if (k_dim * n_dim > (1 << 20))
  for (int64_t p = 0; p < panels; ++p) {
    T* dst = out + p * k_dim * kPanelWidth;  // [K][16]
    for (int64_t l = 0; l < kPanelWidth; ++l) {
      const int64_t n = p * kPanelWidth + l;
      for (int64_t k = 0; k < k_dim; ++k) {
        T v{};
        if (n < n_dim) v = layout == WeightLayout::kOutIn ? w[n * k_dim + k] : w[k * n_dim + n];
        dst[k * kPanelWidth + l] = v;
      }
    }
  }
}

}  // namespace

void Linear::FreeAligned::operator()(void* p) const { std::free(p); }

int64_t Linear::packed_bytes() const {
  return static_cast<int64_t>(dtype_bytes(packed_.dtype, static_cast<size_t>(packed_.num_panels() * kPanelWidth * packed_.k)));
}

Result<Linear> Linear::create(const TensorView& weight, WeightLayout layout, const float* bias, int64_t k_slice) {
  if (weight.shape.size() != 2) return invalid_argument("a linear weight must be 2-D, got " + shape_to_string(weight.shape));
  if (k_slice <= 0) return invalid_argument("the K slice depth must be positive, got " + std::to_string(k_slice));
  if (weight.dtype != DType::kF32 && weight.dtype != DType::kBF16 && weight.dtype != DType::kF16)
    return unimplemented(std::string("linear weights must be F32, BF16 or F16 here, got ") + dtype_name(weight.dtype));
  const int64_t rows = weight.shape[0], cols = weight.shape[1];
  if (rows <= 0 || cols <= 0) return invalid_argument("a linear weight must not be empty, got " + shape_to_string(weight.shape));
  Linear lin;
  lin.bias_ = bias;
  lin.k_slice_ = k_slice;
  lin.packed_.dtype = weight.dtype;
  lin.packed_.k = layout == WeightLayout::kOutIn ? cols : rows;
  lin.packed_.n = layout == WeightLayout::kOutIn ? rows : cols;
  const size_t bytes = (static_cast<size_t>(lin.packed_bytes()) + 63) / 64 * 64;
  // Weights of 2 MiB or more start on a 2 MiB boundary, so that madvise (which needs a page-aligned start)
  // can give them transparent huge pages: decode streams them from memory, and with 4 KiB pages every page
  // costs a TLB miss and the hardware prefetcher stops at its end. The space before the boundary is never
  // touched, so it takes no memory.
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  void* mem = nullptr;
  if (posix_memalign(&mem, align, bytes) != 0) mem = nullptr;
  if (mem == nullptr)
    return resource_exhausted("cannot allocate " + std::to_string(bytes >> 20) + " MiB for a " + shape_to_string(weight.shape) +
                              " weight");
  lin.storage_.reset(static_cast<uint8_t*>(mem));
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) madvise(mem, bytes, MADV_HUGEPAGE);  // a hint only
#endif
  if (weight.dtype == DType::kF32) {
    pack_panels(static_cast<const float*>(weight.data), layout, lin.packed_.k, lin.packed_.n, static_cast<float*>(mem));
  } else {
    pack_panels(static_cast<const uint16_t*>(weight.data), layout, lin.packed_.k, lin.packed_.n,
                static_cast<uint16_t*>(mem));
  }
  lin.packed_.data = mem;
  return lin;
}

namespace {

// x packed (kernel_table.h: GemmArgs) by each thread for itself, into its own buffer, in the M blocks it runs,
// each at most once per forward call (`tag`: the call that last packed each block). Reading rows that the
// other core had just packed cost 5-15 points of the FMA peak (proj, K = 3072, at 16-512 rows; AMD EPYC Zen 5,
// two threads; bench/README.md). The buffers belong to the calling thread, one per team member, and are
// allocated before the parallel region (an allocation failure throws there, not inside it), uninitialized: a
// thread's buffer only has pages where it packs.
struct PackedX {
  std::unique_ptr<float[]> data;
  int64_t capacity = 0;
  std::vector<uint64_t> tag;
  void reserve(int64_t floats, int64_t blocks) {
    if (capacity < floats) {
      data.reset(new float[static_cast<size_t>(floats)]);
      capacity = floats;
    }
    if (tag.size() < static_cast<size_t>(blocks)) tag.resize(static_cast<size_t>(blocks), 0);
  }
};

}  // namespace

void Linear::forward(const float* x, int64_t m, float* y) const {
  if (m <= 0) return;
  static std::atomic<uint64_t> calls{0};
  const uint64_t call = calls.fetch_add(1, std::memory_order_relaxed) + 1;  // > 0, the tags' initial value
  const KernelTable& kt = kernels();
  const int64_t num_panels = packed_.num_panels(), k_dim = packed_.k;
  // M in blocks of at most kMcRows rows, one gemm call each: as equal as whole microkernels allow (block b
  // starts at microkernel b · units / m_blocks).
  const int64_t mr = kt.gemm_rows;
  static_assert(kMcRows % 8 == 0 && kMcRows % 6 == 0, "whole microkernels of every path (8 or 6 rows)");
  const int64_t m_blocks = (m + kMcRows - 1) / kMcRows, units = (m + mr - 1) / mr;
  auto block_start = [&](int64_t b) { return std::min(m, b * units / m_blocks * mr); };
  // A few row blocks (decode, alone or batched): every block runs the whole K of a panel while its chains stay
  // in registers, the panel read from L1 or L2 (single thread, Zen 3, 8 and 16 rows from cache: 65-92% of the
  // FMA peak in K slices of 256, 84-98% in one; from memory the same). Many rows: K slices of k_slice_ (kGemmKSlice
  // by default, above).
  const int64_t kc = m <= 3 * mr ? k_dim : k_slice_;
  const bool parallel = m * k_dim * packed_.n >= kParallelMinFmas;
  // Work items are (panel range, M block) pairs that threads take as they come free: ranges of a multiple of 8
  // panels (the microkernel's panel groups, up to 8 at once, stay whole), about four per thread. With at least
  // two M blocks per thread, a thread takes all the ranges of an M block at once, so that each block is packed
  // by one thread and stays in its cache, except in the last `threads` blocks, whose ranges go one at a time: a
  // thread that falls behind (on a shared machine one core may run slower) then leaves a tail of one range, not
  // of a whole block. With fewer blocks, one item at a time, so that the threads finish together (with one M
  // block, every thread packs all of x, as one thread alone did before). Each item runs its K slices in
  // ascending order: every chain continues where it stopped.
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  const int64_t range = (std::max<int64_t>(1, num_panels / (4 * threads)) + 7) / 8 * 8;
  const int64_t num_ranges = (num_panels + range - 1) / range;
  const int64_t whole_blocks = m_blocks >= 2 * threads ? m_blocks - threads : 0;  // taken with all their ranges
  const int64_t num_items = whole_blocks + (m_blocks - whole_blocks) * num_ranges;
  thread_local std::vector<PackedX> packed_x;
  if (packed_x.size() < static_cast<size_t>(threads)) packed_x.resize(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) packed_x[t].reserve(m * k_dim, m_blocks);
  PackedX* const bufs = packed_x.data();  // (inside the region, packed_x would name each thread's own)
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (int64_t item = 0; item < num_items; ++item) {
    // The item's M block mb and its ranges [r0, r1).
    const int64_t split = item - whole_blocks;  // >= 0: one range of a block of the tail
    const int64_t mb = split < 0 ? item : whole_blocks + split / num_ranges;
    const int64_t r0 = split < 0 ? 0 : split % num_ranges, r1 = split < 0 ? num_ranges : r0 + 1;
    const int64_t i0 = block_start(mb), i1 = block_start(mb + 1), rows = i1 - i0;
    PackedX& own = bufs[omp_get_thread_num()];
    if (own.tag[mb] != call) {
      for (int64_t b = 0; b < gemm_row_blocks(rows, mr); ++b) {
        const int64_t i = i0 + gemm_row_block_start(rows, mr, b), end = i0 + gemm_row_block_start(rows, mr, b + 1);
        kt.pack_a(x + i * k_dim, k_dim, end - i, k_dim, own.data.get() + i * k_dim);
      }
      own.tag[mb] = call;
    }
    const GemmArgs g{own.data.get(), packed_, bias_, y, packed_.n};
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p0 = r * range, p1 = std::min(num_panels, p0 + range);
      for (int64_t k0 = 0; k0 < k_dim; k0 += kc) kt.gemm(g, i0, i1, p0, p1, k0, std::min(k_dim, k0 + kc));
    }
  }
}

void linear_reference(const TensorView& weight, WeightLayout layout, const float* bias, const float* x, int64_t m,
                      float* y) {
  const int64_t rows = weight.shape[0], cols = weight.shape[1];
  const int64_t in = layout == WeightLayout::kOutIn ? cols : rows;
  const int64_t out = layout == WeightLayout::kOutIn ? rows : cols;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  to_f32(weight.dtype, weight.data, w.data(), w.size());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < out; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < in; ++k)
        acc = std::fma(x[i * in + k], layout == WeightLayout::kOutIn ? w[j * in + k] : w[k * out + j], acc);
      y[i * out + j] = bias != nullptr ? acc + bias[j] : acc;
    }
  }
}

}  // namespace kvshare
