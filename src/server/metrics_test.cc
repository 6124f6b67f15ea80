#include "server/metrics.h"

#include <gtest/gtest.h>

namespace kvshare::server {
namespace {

TEST(Metrics, HistogramIsCumulative) {
  Histogram h({0.1, 1.0});
  h.observe(0.0625);
  h.observe(0.5);
  h.observe(0.5);
  h.observe(5);
  std::string out;
  h.render("x_seconds", "help", out);
  EXPECT_NE(out.find("# TYPE x_seconds histogram\n"), std::string::npos);
  EXPECT_NE(out.find("x_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{le=\"1\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_sum 6.0625\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_seconds_count 4\n"), std::string::npos) << out;
}

TEST(Metrics, RendersEngineCountersAndLatencies) {
  ServerMetrics m;
  RequestTimes t;
  t.time_to_first_token = 0.02;
  t.time_per_output_token = 0.01;
  t.end_to_end = 0.2;
  t.generated_tokens = 5;
  t.finish_reason = FinishReason::kStop;
  m.observe(t);
  EngineMetrics e;
  e.prefix_queried_tokens = 100;
  e.prefix_hit_tokens = 64;
  e.blocks_total = 10;
  e.blocks_used = 2;
  e.blocks_cached = 3;
  e.blocks_free = 5;
  e.num_waiting = 4;
  e.num_running = 6;
  e.prompt_tokens = 700;
  e.generated_tokens = 80;
  e.computed_tokens = 636;
  e.preemptions = 9;
  e.steps = 11;
  const std::string out = m.render(e, "my\"model");
  // Every engine counter and gauge, each with its own value.
  for (const char* line : {"kvshare_num_requests_running{model_name=\"my\\\"model\"} 6\n",
                           "kvshare_kv_blocks{model_name=\"my\\\"model\",state=\"used\"} 2\n",
                           "kvshare_kv_blocks{model_name=\"my\\\"model\",state=\"free\"} 5\n",
                           "kvshare_kv_blocks_total{model_name=\"my\\\"model\"} 10\n",
                           "kvshare_kv_cache_usage_ratio{model_name=\"my\\\"model\"} 0.2\n",
                           "kvshare_prompt_tokens_total{model_name=\"my\\\"model\"} 700\n",
                           "kvshare_generation_tokens_total{model_name=\"my\\\"model\"} 80\n",
                           "kvshare_computed_tokens_total{model_name=\"my\\\"model\"} 636\n",
                           "kvshare_num_preemptions_total{model_name=\"my\\\"model\"} 9\n",
                           "kvshare_engine_steps_total{model_name=\"my\\\"model\"} 11\n",
                           "kvshare_time_per_output_token_seconds_bucket{le=\"0.01\"} 1\n",
                           "kvshare_time_per_output_token_seconds_sum 0.01\n",
                           "kvshare_time_per_output_token_seconds_count 1\n"})
    EXPECT_NE(out.find(line), std::string::npos) << line << "\nnot in\n" << out;
  EXPECT_NE(out.find("kvshare_prefix_cache_queries_total{model_name=\"my\\\"model\"} 100\n"), std::string::npos) << out;
  EXPECT_NE(out.find("kvshare_prefix_cache_hits_total{model_name=\"my\\\"model\"} 64\n"), std::string::npos);
  EXPECT_NE(out.find("kvshare_kv_blocks{model_name=\"my\\\"model\",state=\"cached\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("kvshare_num_requests_waiting{model_name=\"my\\\"model\"} 4\n"), std::string::npos);
  EXPECT_NE(out.find("finished_reason=\"stop\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("kvshare_time_to_first_token_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(out.find("kvshare_e2e_request_latency_seconds_bucket{le=\"0.3\"} 1\n"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace kvshare::server
