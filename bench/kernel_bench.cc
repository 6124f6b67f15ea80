// kernel_bench: the kernels' speed against this machine's measured FMA peak and read bandwidth.
//   build/bench/kernel_bench [--isa scalar|avx2|avx512] [--seconds S] [--only gemm|memory|decode-step|attention]
//                            [--shape qkv|fc|proj] [--rows N] [--k-slice D]
// GEMM at GPT-2-small's shapes for row counts from decode (1) to prefill (512), in GFLOP/s and as a
// fraction of the FMA peak (GB/s of weights for few rows, against the read bandwidth); a whole decode step's
// GEMMs (GPT-2 small's 494 MB of weights, from memory) for batches of 1 to 32 rows; attention of a 512-token
// prefill, of a decode step's 8 sequences from memory (no shared prefix, one, four), and of decode rows over a
// 512-token context.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/calibrate.h"
#include "kernels/isa.h"
#include "kernels/matmul.h"

namespace {

using namespace kvshare;
using Clock = std::chrono::steady_clock;

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// Runs f repeatedly for about `seconds` and returns the best time of one call.
template <class F>
double best_seconds(double seconds, F f) {
  f();  // warm up
  double best = 1e30, total = 0;
  int runs = 0;
  while (total < seconds || runs < 3) {
    const auto t0 = Clock::now();
    f();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
    ++runs;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0.5;
  std::string only;  // one section, or all
  std::string shape;  // one GEMM shape, or all
  int64_t only_rows = 0;  // one GEMM row count, or all
  int64_t k_slice = kGemmKSlice;  // the GEMM section's K slice depth
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--isa" && i + 1 < argc) {
      const std::string name = argv[++i];
      bool ok = false;
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
        if (name == isa_name(isa)) ok = set_isa(isa).ok();
      if (!ok) {
        std::fprintf(stderr, "kernel_bench: cannot run the %s path here\n", name.c_str());
        return 2;
      }
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--shape" && i + 1 < argc && (std::string(argv[i + 1]) == "qkv" || std::string(argv[i + 1]) == "fc" ||
                                                 std::string(argv[i + 1]) == "proj")) {
      shape = argv[++i];
    } else if (a == "--rows" && i + 1 < argc && std::atoll(argv[i + 1]) > 0) {
      only_rows = std::atoll(argv[++i]);
    } else if (a == "--k-slice" && i + 1 < argc && std::atoll(argv[i + 1]) > 0) {
      k_slice = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: kernel_bench [--isa scalar|avx2|avx512] [--seconds S] [--only gemm|memory|decode-step|attention]\n"
                           "                    [--shape qkv|fc|proj] [--rows N] [--k-slice D]   (the GEMM section: one shape,\n"
                           "                    one row count, K slices D deep instead of the engine's)\n");
      return 2;
    }
  }
  const MachinePeaks peaks = measure_machine_peaks();
  std::printf("%s, %s kernels, %d threads: FMA peak %.1f GFLOP/s, read bandwidth %.1f GB/s\n", cpu_model_name().c_str(),
              peaks.isa.c_str(), peaks.threads, peaks.fma_gflops, peaks.read_gbps);

  auto want = [&](const char* section) { return only.empty() || only == section; };
  if (want("gemm")) {
    struct Shape {
      const char* name;
      int64_t k, n;
    };
    const Shape shapes[] = {{"qkv 768->2304", 768, 2304}, {"fc 768->3072", 768, 3072}, {"proj 3072->768", 3072, 768}};
    std::printf("\nGEMM (F32 weights, K slices of %ld)      rows:   GFLOP/s   of peak   weight GB/s\n",
                static_cast<long>(k_slice));
    for (const Shape& s : shapes) {
      if (!shape.empty() && std::string(s.name).rfind(shape + " ", 0) != 0) continue;
      auto w = random_floats(s.k * s.n, 1);
      Linear lin =
          Linear::create(TensorView{DType::kF32, {s.n, s.k}, w.data()}, WeightLayout::kOutIn, nullptr, k_slice).value();
      const std::vector<int64_t> row_counts =
          only_rows != 0 ? std::vector<int64_t>{only_rows} : std::vector<int64_t>{1, 4, 8, 16, 64, 128, 512};
      for (int64_t m : row_counts) {
        auto x = random_floats(m * s.k, 2);
        std::vector<float> y(m * s.n);
        const double t = best_seconds(seconds, [&] { lin.forward(x.data(), m, y.data()); });
        const double gflops = 2.0 * m * s.k * s.n / t / 1e9;
        std::printf("  %-16s %4ld   %8.1f   %6.0f%%   %8.1f\n", s.name, static_cast<long>(m), gflops,
                    100 * gflops / peaks.fma_gflops, lin.packed_bytes() / t / 1e9);
      }
    }
  }

  // Decode as it runs: one row through many matrices whose weights (226 MB) do not fit in any cache.
  if (want("memory")) {
    const int64_t k = 768, n = 3072, count = 24;
    auto w = random_floats(k * n, 6);
    std::vector<Linear> layers;
    for (int64_t i = 0; i < count; ++i)
      layers.push_back(Linear::create(TensorView{DType::kF32, {n, k}, w.data()}, WeightLayout::kOutIn, nullptr).value());
    auto x = random_floats(16 * k, 7);
    std::vector<float> y(16 * n);
    for (int64_t m : {1, 4, 8, 16}) {
      const double t = best_seconds(seconds, [&] {
        for (const Linear& l : layers) l.forward(x.data(), m, y.data());
      });
      const double gbps = static_cast<double>(count) * layers[0].packed_bytes() / t / 1e9;
      std::printf("  24 x fc, from memory %4ld   %8.1f   %6.0f%%   %8.1f (%.0f%% of read bandwidth)\n",
                  static_cast<long>(m), 2.0 * m * k * n * count / t / 1e9,
                  100 * 2.0 * m * k * n * count / t / 1e9 / peaks.fma_gflops, gbps, 100 * gbps / peaks.read_gbps);
    }
  }

  // A whole decode step's GEMMs as the engine runs them: GPT-2 small's 12 layers (qkv, attention output, fc,
  // proj) and its LM head, 494 MB of F32 weights read from memory once per step, for batches of decode rows.
  if (want("decode-step")) {
    const int64_t d = 768, f = 3072, vocab = 50257;
    struct Mat {
      int64_t k, n;
    };
    std::vector<Mat> mats;
    for (int l = 0; l < 12; ++l) mats.insert(mats.end(), {{d, 3 * d}, {d, d}, {d, f}, {f, d}});
    mats.push_back({d, vocab});
    std::vector<Linear> lins;
    double bytes = 0, flops_per_row = 0;
    for (const Mat& mt : mats) {
      auto w = random_floats(mt.k * mt.n, 8);
      lins.push_back(Linear::create(TensorView{DType::kF32, {mt.n, mt.k}, w.data()}, WeightLayout::kOutIn, nullptr).value());
      bytes += static_cast<double>(lins.back().packed_bytes());
      flops_per_row += 2.0 * mt.k * mt.n;
    }
    auto x = random_floats(32 * f, 9);
    std::vector<float> y(32 * vocab);
    std::printf("\ndecode step, GPT-2 small (12 layers + LM head, %.0f MB), rows: ms   GFLOP/s   of peak   weight GB/s\n",
                bytes / 1e6);
    for (int64_t m : {1, 4, 8, 12, 16, 32}) {
      const double t = best_seconds(seconds, [&] {
        for (const Linear& l : lins) l.forward(x.data(), m, y.data());
      });
      std::printf("  %4ld   %8.2f   %8.1f   %6.0f%%   %8.1f (%.0f%% of read bandwidth)\n", static_cast<long>(m), t * 1e3,
                  flops_per_row * m / t / 1e9, 100 * flops_per_row * m / t / 1e9 / peaks.fma_gflops, bytes / t / 1e9,
                  100 * bytes / t / 1e9 / peaks.read_gbps);
    }
  }

  if (want("attention")) {
    // Attention, GPT-2 small: 12 heads of 64, block 16.
    const int64_t heads = 12, hd = 64, bs = 16, ctx = 512;
    const int64_t blocks = ctx / bs;
    std::vector<float> k(blocks * heads * hd * bs), v(k.size());
    PagedKvLayer cache{k.data(), v.data(), bs, heads, hd};
    auto kin = random_floats(ctx * heads * hd, 3), vin = random_floats(kin.size(), 4);
    std::vector<int32_t> table(blocks), slots(ctx);
    for (int64_t b = 0; b < blocks; ++b) table[b] = static_cast<int32_t>(b);
    for (int64_t i = 0; i < ctx; ++i) slots[i] = static_cast<int32_t>(i);
    write_kv(cache, kin.data(), vin.data(), slots.data(), ctx);
    auto q = random_floats(ctx * heads * hd, 5);
    std::vector<float> out(q.size());
    std::vector<AttentionSeq> prefill = {{0, ctx, ctx, table.data()}};
    const double tp = best_seconds(seconds, [&] { paged_attention(q.data(), cache, prefill, heads, 0.125f, out.data()); });
    const double flops = 4.0 * heads * hd * (ctx * (ctx + 1) / 2.0);
    std::printf("\nattention, 512-token prefill (12 heads of 64): %.2f ms, %.1f GFLOP/s (%.0f%% of peak)\n", tp * 1e3,
                flops / tp / 1e9, 100 * flops / tp / 1e9 / peaks.fma_gflops);
    // A decode step's attention as the engine runs it: 12 layers, 8 sequences, K/V read from memory (each layer
    // its own cache). Each sequence has 128 tokens of its own after a 512-token prefix that is its own (no
    // sharing), one prefix shared by all 8 (a batch job sorted by prefix), or one of 4 (arrivals interleaved).
    {
      const int64_t layers = 12, seqs = 8, prefix_blocks = 512 / bs, own_blocks = 128 / bs;
      const int64_t pool = seqs * (prefix_blocks + own_blocks);
      std::vector<std::vector<float>> kpool(layers), vpool(layers);
      std::vector<PagedKvLayer> caches;
      for (int64_t l = 0; l < layers; ++l) {
        kpool[l] = random_floats(pool * heads * hd * bs, 10 + l);
        vpool[l] = random_floats(pool * heads * hd * bs, 30 + l);
        caches.push_back({kpool[l].data(), vpool[l].data(), bs, heads, hd});
      }
      auto qd = random_floats(seqs * heads * hd, 11);
      std::vector<float> od(qd.size());
      std::printf("\ndecode step's attention, 12 layers, 8 sequences of 640 tokens (512 prefix + 128 own), from memory:\n");
      for (int64_t groups : {8, 1, 4}) {  // 8: every prefix its own
        std::vector<std::vector<int32_t>> tables(seqs);
        for (int64_t i = 0; i < seqs; ++i) {
          const int64_t g = i % groups;
          for (int64_t b = 0; b < prefix_blocks; ++b) tables[i].push_back(static_cast<int32_t>(g * prefix_blocks + b));
          for (int64_t b = 0; b < own_blocks; ++b)
            tables[i].push_back(static_cast<int32_t>(seqs * prefix_blocks + i * own_blocks + b));
        }
        std::vector<AttentionSeq> step;
        for (int64_t i = 0; i < seqs; ++i) step.push_back({i, 1, (prefix_blocks + own_blocks) * bs, tables[i].data()});
        const double t = best_seconds(seconds, [&] {
          for (const PagedKvLayer& cl : caches) paged_attention(qd.data(), cl, step, heads, 0.125f, od.data());
        });
        const double bytes = 2.0 * layers * heads * hd * bs * 4 * (groups * prefix_blocks + seqs * own_blocks);
        std::printf("  %s: %.2f ms, %.1f GB/s of K/V (%.0f%% of read bandwidth)\n",
                    groups == 8 ? "no shared prefix     " : groups == 1 ? "one prefix for all 8 " : "4 prefixes, 2 seqs each",
                    t * 1e3, bytes / t / 1e9, 100 * bytes / t / 1e9 / peaks.read_gbps);
      }
    }
    std::vector<AttentionSeq> decode;
    for (int i = 0; i < 16; ++i) decode.push_back({i, 1, ctx, table.data()});
    const double td = best_seconds(seconds, [&] { paged_attention(q.data(), cache, decode, heads, 0.125f, out.data()); });
    std::printf("attention, 16 decode rows sharing a 512-token context: %.3f ms\n", td * 1e3);
  }
  return 0;
}
