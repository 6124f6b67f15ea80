// Measures what this machine can do, so that benchmarks report fractions of this machine's limits rather
// than of figures from another one: the FMA peak of the active kernel path on every thread, and the
// sequential read bandwidth of memory with every thread reading.
#pragma once

#include <string>

namespace kvshare {

struct MachinePeaks {
  double fma_gflops = 0;  // fp32, all threads, the active path
  double read_gbps = 0;   // sequential reads of a buffer far larger than the caches, all threads
  int threads = 0;
  std::string isa;
  double seconds = 0;  // what the measurement took
};

// Takes about half a second: a few short runs of each probe, keeping the best.
MachinePeaks measure_machine_peaks();

// The CPU's model name as /proc/cpuinfo gives it ("AMD EPYC", "Intel(R) Xeon(R) ..."), for reports.
std::string cpu_model_name();

}  // namespace kvshare
