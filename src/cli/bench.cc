// kvshare bench: runs a workload of docs/workloads.md and reports throughput, prefix reuse and
// hardware efficiency; --compare runs it with reuse off and on in one process and reports the ratio.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench/workloads.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "core/number_text.h"
#include "kernels/calibrate.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace kvshare::cli {
namespace {

// Limits of a benchmark's workload flags: lengths up to the largest context kvshare accepts, and at most a
// million requests (all are built before the run).
constexpr int64_t kMaxBenchLength = int64_t{1} << 24;
constexpr int64_t kMaxBenchRequests = 1'000'000;

using nlohmann::json;

std::vector<FlagSpec> bench_specs() {
  std::vector<FlagSpec> specs = engine_flag_specs();
  const std::vector<FlagSpec> own = {
      {"workload", true, "gsp | prefix-repetition | long-doc-qa | multi-turn | control (gsp)"},
      {"compare", false, "run with prefix reuse off, then on, in one process, and report the ratio"},
      {"repeat", true, "run each mode this many times, interleaved, and report the fastest (1)"},
      {"json", false, "print one JSON object instead of the text report"},
      {"seed", true, "workload seed (0)"},
      {"output-len", true, "generated tokens per request (the workload's default)"},
      {"groups", true, "gsp: groups sharing a system prompt (4)"},
      {"prompts-per-group", true, "gsp: prompts per group (16)"},
      {"system-len", true, "gsp: system prompt tokens (1024)"},
      {"question-len", true, "gsp: question tokens (64)"},
      {"num-prompts", true, "prefix-repetition (64) / control (32): prompts"},
      {"num-prefixes", true, "prefix-repetition: distinct prefixes (4)"},
      {"prefix-len", true, "prefix-repetition: prefix tokens (512)"},
      {"suffix-len", true, "prefix-repetition: suffix tokens (128)"},
      {"num-docs", true, "long-doc-qa: documents (8)"},
      {"doc-len", true, "long-doc-qa: tokens per document (2048)"},
      {"repeats", true, "long-doc-qa: questions per document (2)"},
      {"order", true, "long-doc-qa: random | tile | interleave (random)"},
      {"conversations", true, "multi-turn: conversations (8)"},
      {"turns", true, "multi-turn: turns per conversation (6)"},
      {"user-len", true, "multi-turn: new tokens per turn (64)"},
      {"input-len", true, "control: prompt tokens (256)"},
      {"help", false, "show this help"},
  };
  specs.insert(specs.end(), own.begin(), own.end());
  return specs;
}

Result<WorkloadOptions> workload_options(const Args& a) {
  WorkloadOptions o;
  o.name = a.get_or("workload", "gsp");
  o.order = a.get_or("order", o.order);
  struct IntFlag {
    const char* name;
    int64_t* field;
  };
  int64_t seed = 0;
  const IntFlag flags[] = {
      {"seed", &seed},
      {"output-len", &o.output_len},
      {"groups", &o.groups},
      {"prompts-per-group", &o.prompts_per_group},
      {"system-len", &o.system_len},
      {"question-len", &o.question_len},
      {"num-prefixes", &o.num_prefixes},
      {"prefix-len", &o.prefix_len},
      {"suffix-len", &o.suffix_len},
      {"num-docs", &o.num_docs},
      {"doc-len", &o.doc_len},
      {"repeats", &o.repeats},
      {"conversations", &o.conversations},
      {"turns", &o.turns},
      {"user-len", &o.user_len},
      {"input-len", &o.input_len},
  };
  for (const IntFlag& f : flags) {
    KV_ASSIGN_OR_RETURN(*f.field, a.get_int(f.name, *f.field));
    // Counts and lengths: 0 ran nothing and reported success; a length past any context is no benchmark.
    if (f.field != &seed && a.has(f.name) && (*f.field < 1 || *f.field > kMaxBenchLength))
      return invalid_argument(std::string("--") + f.name + " must be from 1 to " + std::to_string(kMaxBenchLength) +
                              ", got " + std::to_string(*f.field));
  }
  KV_ASSIGN_OR_RETURN(int64_t n, a.get_int("num-prompts", -1));
  if (a.has("num-prompts") && (n < 1 || n > kMaxBenchRequests))
    return invalid_argument("--num-prompts must be from 1 to " + std::to_string(kMaxBenchRequests) + ", got " +
                            std::to_string(n));
  if (n >= 0) o.num_prompts = o.control_prompts = n;
  // Every request is built before the run: bound their number (100M x 100M groups grew to 2.4 GB in 15 s).
  const double requests = o.name == "gsp"           ? static_cast<double>(o.groups) * static_cast<double>(o.prompts_per_group)
                          : o.name == "long-doc-qa" ? static_cast<double>(o.num_docs) * static_cast<double>(o.repeats)
                          : o.name == "multi-turn"  ? static_cast<double>(o.conversations) * static_cast<double>(o.turns)
                          : o.name == "control"     ? static_cast<double>(o.control_prompts)
                                                    : static_cast<double>(o.num_prompts);
  if (requests > static_cast<double>(kMaxBenchRequests))
    return invalid_argument("the " + o.name + " workload would send " + number_text(requests) +
                            " requests, more than a benchmark's limit of " + std::to_string(kMaxBenchRequests));
  if (seed < 0) return invalid_argument("--seed must not be negative");
  o.seed = static_cast<uint64_t>(seed);
  if (a.has("output-len") && o.output_len < 1) return invalid_argument("--output-len must be at least 1");
  return o;
}

double peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024.0;
}

struct RunReport {
  bool prefix_cache = true;
  double seconds = 0;
  int64_t requests = 0, prompt_tokens = 0, output_tokens = 0, cached_tokens = 0;
  EngineMetrics metrics;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> outputs;
  IdealFlops ideal;  // of the prompts this run sent (multi-turn prompts hold generated tokens)
};

Result<RunReport> run_once(EngineConfig config, const WorkloadOptions& base, bool prefix_cache) {
  config.enable_prefix_caching = prefix_cache;
  KV_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(config));
  WorkloadOptions o = base;
  const Tokenizer& tok = engine->tokenizer();
  o.vocab_size = std::min<int64_t>(tok.vocab_size(), engine->model_config().vocab_size);
  for (int32_t id = 0; id < o.vocab_size; ++id)
    if (tok.is_special(id)) o.avoid_tokens.push_back(id);
  KV_ASSIGN_OR_RETURN(Workload w, make_workload(o));
  const auto t0 = std::chrono::steady_clock::now();
  KV_ASSIGN_OR_RETURN(std::vector<Output> outs, run_workload(*engine, w));
  RunReport r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.prefix_cache = prefix_cache;
  r.metrics = engine->metrics();
  for (const Output& out : outs) {
    r.requests++;
    r.prompt_tokens += static_cast<int64_t>(out.prompt_token_ids.size());
    r.output_tokens += static_cast<int64_t>(out.token_ids.size());
    r.cached_tokens += out.num_cached_tokens;
    r.prompts.push_back(out.prompt_token_ids);
    r.outputs.push_back(out.token_ids);
  }
  r.ideal = ideal_flops(*engine, r.prompts, w.output_len, config.block_size);
  return r;
}

json report_json(const RunReport& r, double peak_fp32_gflops, double peak_gbps) {
  const EngineMetrics& m = r.metrics;
  json j;
  j["prefix_cache"] = r.prefix_cache;
  j["wall_seconds"] = r.seconds;
  j["requests"] = r.requests;
  j["requests_per_second"] = static_cast<double>(r.requests) / r.seconds;
  j["output_tokens_per_second"] = static_cast<double>(r.output_tokens) / r.seconds;
  j["total_tokens_per_second"] = static_cast<double>(r.prompt_tokens + r.output_tokens) / r.seconds;
  j["prompt_tokens"] = r.prompt_tokens;
  j["output_tokens"] = r.output_tokens;
  j["cached_prompt_tokens"] = r.cached_tokens;
  j["prefix_hit_fraction"] = r.prompt_tokens > 0 ? static_cast<double>(r.cached_tokens) / static_cast<double>(r.prompt_tokens) : 0.0;
  j["computed_tokens"] = m.computed_tokens;
  j["preemptions"] = m.preemptions;
  j["prefill_seconds"] = m.prefill_seconds;
  j["decode_seconds"] = m.decode_seconds;
  const double prefill_gflops = m.prefill_seconds > 0 ? m.prefill_flops / m.prefill_seconds / 1e9 : 0.0;
  const double decode_gbps = m.decode_seconds > 0 ? m.decode_bytes / m.decode_seconds / 1e9 : 0.0;
  j["prefill_gflops"] = prefill_gflops;
  j["prefill_fraction_of_peak"] = prefill_gflops / peak_fp32_gflops;
  j["decode_gbps"] = decode_gbps;
  j["decode_fraction_of_peak"] = decode_gbps / peak_gbps;
  j["kv_cache_bytes_budget"] = m.kv_cache_bytes;
  j["kv_cache_bytes_peak_used"] = m.kv_cache_bytes_peak_used;
  j["peak_rss_bytes"] = peak_rss_bytes();
  return j;
}

void print_run(const json& j) {
  std::printf("  %-16s %.2f s  %.2f req/s  %.1f output tok/s  %.1f total tok/s\n",
              j["prefix_cache"].get<bool>() ? "prefix cache on" : "prefix cache off", j["wall_seconds"].get<double>(),
              j["requests_per_second"].get<double>(), j["output_tokens_per_second"].get<double>(),
              j["total_tokens_per_second"].get<double>());
  std::printf("    prompt tokens %ld, from the prefix cache %ld (%.1f%%), computed %ld, preemptions %ld\n",
              j["prompt_tokens"].get<long>(), j["cached_prompt_tokens"].get<long>(),
              100.0 * j["prefix_hit_fraction"].get<double>(), j["computed_tokens"].get<long>(),
              j["preemptions"].get<long>());
  std::printf("    prefill %.1f GFLOP/s (%.0f%% of fp32 peak), decode %.1f GB/s logical (%.0f%% of bandwidth); "
              "KV peak %.1f MiB of %.1f MiB; peak RSS %.0f MiB\n",
              j["prefill_gflops"].get<double>(), 100 * j["prefill_fraction_of_peak"].get<double>(),
              j["decode_gbps"].get<double>(), 100 * j["decode_fraction_of_peak"].get<double>(),
              j["kv_cache_bytes_peak_used"].get<double>() / 1048576.0,
              j["kv_cache_bytes_budget"].get<double>() / 1048576.0, j["peak_rss_bytes"].get<double>() / 1048576.0);
}

}  // namespace

int run_bench(const std::vector<std::string>& argv) {
  const auto specs = bench_specs();
  auto args = Args::parse("bench", specs, argv);
  if (!args.ok()) return usage_error("bench", args.status());
  if (args->has("help")) {
    std::fputs(usage("bench", "Run a benchmark workload (docs/workloads.md).", specs).c_str(), stdout);
    return 0;
  }
  if (!args->positional().empty())
    return fail("bench", invalid_argument("unexpected argument '" + args->positional()[0] +
                                          "'; choose the workload with --workload NAME"));
  auto config = engine_config_from(*args);
  if (!config.ok()) return fail("bench", config.status());
  auto wopts = workload_options(*args);
  if (!wopts.ok()) return fail("bench", wopts.status());
  if (Status st = check_workload_options(*wopts); !st.ok()) return fail("bench", st);
  auto repeat = args->get_int("repeat", 1);
  if (!repeat.ok()) return fail("bench", repeat.status());
  if (*repeat < 1 || *repeat > 100) return fail("bench", invalid_argument("--repeat must be between 1 and 100"));

  // Each mode runs `repeat` times, the modes interleaved (off, on, off, on, ...) so that drift in the
  // machine's speed hits both alike; the fastest run of each mode is reported.
  std::vector<bool> modes = args->has("compare") ? std::vector<bool>{false, true}
                                                 : std::vector<bool>{config->enable_prefix_caching};
  std::vector<RunReport> runs(modes.size());
  std::vector<std::vector<double>> all_seconds(modes.size());
  bool outputs_identical = true;
  std::vector<std::vector<int32_t>> first_outputs;
  for (int64_t rep = 0; rep < *repeat; ++rep) {
    for (size_t m = 0; m < modes.size(); ++m) {
      auto r = run_once(*config, *wopts, modes[m]);
      if (!r.ok()) return fail("bench", r.status());
      if (first_outputs.empty()) first_outputs = r->outputs;
      outputs_identical = outputs_identical && r->outputs == first_outputs;
      all_seconds[m].push_back(r->seconds);
      if (rep == 0 || r->seconds < runs[m].seconds) runs[m] = std::move(r).value();
    }
  }
  const IdealFlops& ideal = runs.back().ideal;
  // This machine's limits, measured after the runs (a bad model or workload fails before this second is spent):
  // the report gives fractions of them.
  const MachinePeaks peaks = measure_machine_peaks();
  const double kPeakFp32Gflops = peaks.fma_gflops, kPeakGbps = peaks.read_gbps;
  if (!args->has("json"))
    std::printf("calibration (%.1f s): %s, %s kernels, %d threads: FMA peak %.1f GFLOP/s, read bandwidth %.1f GB/s\n",
                peaks.seconds, cpu_model_name().c_str(), peaks.isa.c_str(), peaks.threads, peaks.fma_gflops,
                peaks.read_gbps);

  json j;
  j["workload"] = wopts->name;
  j["model"] = config->model_path;
  j["kv_cache_prefault"] = config->kv_cache_prefault;  // KV memory resident before the clock starts
  j["runs"] = json::array();
  for (size_t m = 0; m < runs.size(); ++m) {
    json r = report_json(runs[m], kPeakFp32Gflops, kPeakGbps);
    r["all_wall_seconds"] = all_seconds[m];
    j["runs"].push_back(r);
  }
  j["ideal_speedup"] = ideal.without_reuse / ideal.with_reuse;
  j["flops_without_reuse"] = ideal.without_reuse;
  j["flops_with_reuse"] = ideal.with_reuse;
  j["machine_peak_fp32_gflops"] = kPeakFp32Gflops;
  j["machine_peak_gbps"] = kPeakGbps;
  j["machine"] = {{"cpu", cpu_model_name()}, {"isa", peaks.isa}, {"threads", peaks.threads},
                  {"calibration_seconds", peaks.seconds}};
  if (runs.size() == 2) {
    const double speedup = runs[0].seconds / runs[1].seconds;
    j["speedup"] = speedup;
    j["fraction_of_ideal"] = speedup / (ideal.without_reuse / ideal.with_reuse);
    j["outputs_identical"] = outputs_identical;
  }
  if (args->has("json")) {
    std::cout << j.dump(1) << "\n";
  } else {
    std::printf("kvshare bench %s on %s\n", wopts->name.c_str(), config->model_path.c_str());
    for (const auto& r : j["runs"]) print_run(r);
    if (*repeat > 1) std::printf("  (fastest of %ld interleaved runs per mode)\n", static_cast<long>(*repeat));
    std::printf("  ideal speedup of reuse (FLOPs without / with): %.2fx\n", j["ideal_speedup"].get<double>());
    if (runs.size() == 2)
      std::printf("  measured speedup (reuse off time / on time): %.2fx = %.0f%% of ideal; outputs identical: %s\n",
                  j["speedup"].get<double>(), 100 * j["fraction_of_ideal"].get<double>(),
                  j["outputs_identical"].get<bool>() ? "yes" : "NO");
  }
  if (runs.size() == 2 && !j["outputs_identical"].get<bool>()) {
    std::fprintf(stderr, "kvshare bench: outputs differ with prefix reuse on and off: this is a bug\n");
    return 1;
  }
  return 0;
}

}  // namespace kvshare::cli
