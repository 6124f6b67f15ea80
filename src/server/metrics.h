// /metrics: the engine's counters and the server's latency histograms in Prometheus' text format (0.0.4).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kvshare/engine.h"
#include "server/engine_loop.h"

namespace kvshare::server {

// A Prometheus histogram: cumulative counts of observations ≤ each upper bound, their sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends `# HELP`, `# TYPE` and the _bucket/_sum/_count lines of `name`.
  void render(const std::string& name, const std::string& help, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();
  // A request (one completion) finished: its latencies and why it ended. Thread-safe.
  void observe(const RequestTimes& times);
  // The whole exposition: engine counters and gauges (from `engine`) and the histograms.
  std::string render(const EngineMetrics& engine, const std::string& model_name) const;

 private:
  mutable std::mutex mu_;
  Histogram ttft_, tpot_, e2e_;
  std::map<std::string, int64_t> finished_;  // by finish reason
};

}  // namespace kvshare::server
