#include "server/metrics.h"

#include <charconv>

namespace kvshare::server {

namespace {

// The shortest text that reads back as `v`.
std::string number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// Label values escape backslash, double quote and newline.
std::string label_value(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void metric(std::string& out, const std::string& name, const char* type, const std::string& help,
            const std::string& labels, double value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  out += name + "{" + labels + "} " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& help, std::string& out) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0}),
      tpot_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0}),
      e2e_({0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0}) {}

void ServerMetrics::observe(const RequestTimes& t) {
  std::lock_guard<std::mutex> lock(mu_);
  if (t.generated_tokens > 0) ttft_.observe(t.time_to_first_token);
  if (t.generated_tokens > 1) tpot_.observe(t.time_per_output_token);
  e2e_.observe(t.end_to_end);
  ++finished_[finish_reason_name(t.finish_reason)];
}

std::string ServerMetrics::render(const EngineMetrics& m, const std::string& model_name) const {
  const std::string model = "model_name=\"" + label_value(model_name) + "\"";
  std::string out;
  metric(out, "kvshare_num_requests_running", "gauge", "Requests in the running batch.", model, m.num_running);
  metric(out, "kvshare_num_requests_waiting", "gauge", "Requests waiting to be scheduled.", model, m.num_waiting);
  out += "# HELP kvshare_kv_blocks KV cache blocks by state: used (held by a request or a pinned prefix), "
         "cached (a prefix no request holds, evictable), free.\n# TYPE kvshare_kv_blocks gauge\n";
  out += "kvshare_kv_blocks{" + model + ",state=\"used\"} " + std::to_string(m.blocks_used) + "\n";
  out += "kvshare_kv_blocks{" + model + ",state=\"cached\"} " + std::to_string(m.blocks_cached) + "\n";
  out += "kvshare_kv_blocks{" + model + ",state=\"free\"} " + std::to_string(m.blocks_free) + "\n";
  metric(out, "kvshare_kv_blocks_total", "gauge", "KV cache blocks in all.", model, m.blocks_total);
  metric(out, "kvshare_kv_cache_usage_ratio", "gauge", "Fraction of KV blocks used by requests (1 = full).", model,
         m.blocks_total > 0 ? static_cast<double>(m.blocks_used) / m.blocks_total : 0.0);
  metric(out, "kvshare_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache.", model, static_cast<double>(m.prefix_queried_tokens));
  metric(out, "kvshare_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", model,
         static_cast<double>(m.prefix_hit_tokens));
  metric(out, "kvshare_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", model,
         static_cast<double>(m.prompt_tokens));
  metric(out, "kvshare_generation_tokens_total", "counter", "Generated tokens.", model,
         static_cast<double>(m.generated_tokens));
  metric(out, "kvshare_computed_tokens_total", "counter", "Tokens that went through the model.", model,
         static_cast<double>(m.computed_tokens));
  metric(out, "kvshare_num_preemptions_total", "counter", "Running requests preempted for lack of KV blocks.",
         model, static_cast<double>(m.preemptions));
  metric(out, "kvshare_engine_steps_total", "counter", "Engine steps run.", model, static_cast<double>(m.steps));
  std::lock_guard<std::mutex> lock(mu_);
  out += "# HELP kvshare_request_success_total Finished completions by finish reason.\n"
         "# TYPE kvshare_request_success_total counter\n";
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    auto it = finished_.find(reason);
    out += "kvshare_request_success_total{" + model + ",finished_reason=\"" + reason + "\"} " +
           std::to_string(it == finished_.end() ? 0 : it->second) + "\n";
  }
  ttft_.render("kvshare_time_to_first_token_seconds", "Time from a request's arrival to its first token.", out);
  tpot_.render("kvshare_time_per_output_token_seconds", "Mean time between a request's later tokens.", out);
  e2e_.render("kvshare_e2e_request_latency_seconds", "Time from a request's arrival to its end.", out);
  return out;
}

}  // namespace kvshare::server
