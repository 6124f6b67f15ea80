#include "kernels/calibrate.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "kernels/kernel_table.h"

namespace kvshare {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

MachinePeaks measure_machine_peaks() {
  const auto start = std::chrono::steady_clock::now();
  const KernelTable& kt = kernels();
  MachinePeaks p;
  p.isa = isa_name(kt.isa);
  p.threads = omp_get_max_threads();
  // FMA: every thread runs its chains for the same number of rounds; the slowest thread sets the time. The
  // rounds double from a short first try until an attempt takes 20 ms, the size of every attempt after it, on
  // any kernel path (about 10^7 rounds with AVX2 on Zen 3; the scalar path, or a sanitizer build, is 30-100x
  // slower). The first attempts also wake the threads and the clocks up: the best of several counts.
  auto fma_attempt = [&](int64_t rounds) {
    double flops = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : flops)
    flops += kt.fma_loop(rounds);
    const double secs = seconds_since(t0);
    p.fma_gflops = std::max(p.fma_gflops, flops / secs / 1e9);
    return secs;
  };
  int64_t rounds = 100'000;
  while (fma_attempt(rounds) < 0.02 && rounds < (int64_t{1} << 30)) rounds *= 2;
  for (int attempt = 0; attempt < 8; ++attempt) fma_attempt(rounds);
  // Read bandwidth: 512 MiB, first written (so its pages exist), then read by all threads in equal parts.
  const int64_t n = int64_t{128} << 20;
  std::unique_ptr<float[]> buf(new float[static_cast<size_t>(n)]);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) buf[i] = 1.0f;
  for (int attempt = 0; attempt < 3; ++attempt) {
    float total = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : total)
    {
      const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
      total += kt.sum_floats(buf.get() + begin, end - begin);
    }
    const double secs = seconds_since(t0);
    p.read_gbps = std::max(p.read_gbps, static_cast<double>(n) * 4 / secs / 1e9);
  }
  p.seconds = seconds_since(start);
  return p;
}

std::string cpu_model_name() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (f == nullptr) return "unknown CPU";
  char line[512];
  std::string name = "unknown CPU";
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "model name", 10) != 0) continue;
    const char* colon = std::strchr(line, ':');
    if (colon == nullptr) continue;
    name = colon + 1;
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t\n") + 1);
    break;
  }
  std::fclose(f);
  return name;
}

}  // namespace kvshare
