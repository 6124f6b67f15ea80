#include "cli/engine_flags.h"

#include <cstdio>

#include "core/mapped_file.h"

namespace kvshare::cli {

std::vector<FlagSpec> engine_flag_specs() {
  return {
      {"model", true, "model: a Hugging Face folder or a .gguf file (required)"},
      {"kv-cache-memory", true, "KV cache budget: a size (2GiB, 512MiB) or a fraction of free memory (0.25)"},
      {"kv-cache-prefault", false, "make the whole KV cache resident at start-up (slower start, no page faults later)"},
      {"block-size", true, "tokens per KV block (16)"},
      {"max-num-seqs", true, "sequences in one step at most (64)"},
      {"max-num-batched-tokens", true, "tokens computed in one step at most (512)"},
      {"max-model-len", true, "context length (the model's)"},
      {"no-prefix-cache", false, "switch prefix reuse off"},
  };
}

Result<EngineConfig> engine_config_from(const Args& a) {
  EngineConfig c;
  auto model = a.get("model");
  if (!model || model->empty()) return invalid_argument("--model is required (a Hugging Face folder or a .gguf file)");
  c.model_path = *model;
  if (auto mem = a.get("kv-cache-memory")) {
    KV_ASSIGN_OR_RETURN(MemorySize size, parse_memory_size(*mem));
    c.kv_cache_bytes = size.bytes;
    if (size.fraction > 0) c.kv_cache_fraction = size.fraction;
  }
  KV_ASSIGN_OR_RETURN(int64_t bs, a.get_int("block-size", c.block_size));
  KV_ASSIGN_OR_RETURN(int64_t seqs, a.get_int("max-num-seqs", c.max_num_seqs));
  KV_ASSIGN_OR_RETURN(int64_t tokens, a.get_int("max-num-batched-tokens", c.max_num_batched_tokens));
  KV_ASSIGN_OR_RETURN(int64_t len, a.get_int("max-model-len", 0));
  if (bs < 1 || bs > 1024) return invalid_argument("--block-size must be between 1 and 1024");
  if (seqs < 1 || seqs > 100000) return invalid_argument("--max-num-seqs must be between 1 and 100000");
  if (tokens < 1 || tokens > 1000000) return invalid_argument("--max-num-batched-tokens must be between 1 and 1000000");
  if (len < 0 || len > (int64_t{1} << 24) || (len == 0 && a.has("max-model-len")))
    return invalid_argument("--max-model-len must be from 1 to " + std::to_string(int64_t{1} << 24) + ", got " +
                            a.get_or("max-model-len", ""));
  c.block_size = static_cast<int32_t>(bs);
  c.max_num_seqs = static_cast<int32_t>(seqs);
  c.max_num_batched_tokens = static_cast<int32_t>(tokens);
  c.max_model_len = static_cast<int32_t>(len);
  c.enable_prefix_caching = !a.has("no-prefix-cache");
  c.kv_cache_prefault = a.has("kv-cache-prefault");
  return c;
}

std::vector<FlagSpec> sampling_flag_specs() {
  return {
      {"max-tokens", true, "tokens to generate at most (16)"},
      {"temperature", true, "sampling temperature; 0 = greedy (1.0)"},
      {"top-k", true, "sample among the k most likely tokens; 0 = off"},
      {"top-p", true, "sample within this probability mass; 1 = off"},
      {"seed", true, "random seed for sampling"},
      {"ignore-eos", false, "keep generating past end-of-sequence tokens"},
      {"min-p", true, "drop tokens less likely than this fraction of the likeliest; 0 = off"},
      {"presence-penalty", true, "OpenAI presence penalty in [-2, 2] over generated tokens; 0 = off"},
      {"frequency-penalty", true, "OpenAI frequency penalty in [-2, 2] over generated tokens; 0 = off"},
      {"repetition-penalty", true, "penalty > 0 over prompt and generated tokens; 1 = off"},
      {"min-tokens", true, "no end-of-sequence, stop token or stop string before this many tokens (0)"},
      {"stop", true, "a stop string: generation ends where it appears; the text ends before it (give it again for more)",
       true},
      {"choice", true, "the text is one of these strings, as vLLM's guided_choice (give it once for each)", true},
      {"json-object", false, "the text is one JSON object, as OpenAI's response_format {\"type\": \"json_object\"}"},
      {"json-schema", true, "the text is JSON that follows the JSON Schema in this file, as OpenAI's response_format "
                            "{\"type\": \"json_schema\"} (docs/limits.md: what a schema may say)"},
      {"disable-any-whitespace", false, "with --json-object or --json-schema: compact JSON, no whitespace between its "
                                        "tokens"},
  };
}

Result<SamplingParams> sampling_params_from(const Args& a) {
  SamplingParams p;
  KV_ASSIGN_OR_RETURN(int64_t max_tokens, a.get_int("max-tokens", p.max_tokens));
  KV_ASSIGN_OR_RETURN(double temperature, a.get_double("temperature", p.temperature));
  KV_ASSIGN_OR_RETURN(int64_t top_k, a.get_int("top-k", p.top_k));
  KV_ASSIGN_OR_RETURN(double top_p, a.get_double("top-p", p.top_p));
  if (max_tokens < 1 || max_tokens > (int64_t{1} << 24))
    return invalid_argument("--max-tokens must be from 1 to " + std::to_string(int64_t{1} << 24) + ", got " +
                            std::to_string(max_tokens));
  if (top_k < -1 || top_k > (int64_t{1} << 30))
    return invalid_argument("--top-k must be -1, 0 or positive, at most " + std::to_string(int64_t{1} << 30) +
                            ", got " + std::to_string(top_k));
  p.max_tokens = static_cast<int32_t>(max_tokens);
  p.temperature = static_cast<float>(temperature);
  p.top_k = static_cast<int32_t>(top_k);
  p.top_p = static_cast<float>(top_p);
  if (a.has("seed")) {
    KV_ASSIGN_OR_RETURN(int64_t seed, a.get_int("seed", 0));
    p.seed = static_cast<uint64_t>(seed);
  }
  p.ignore_eos = a.has("ignore-eos");
  for (auto [flag, field] : {std::pair<const char*, float*>{"min-p", &p.min_p}, {"presence-penalty", &p.presence_penalty},
                             {"frequency-penalty", &p.frequency_penalty}, {"repetition-penalty", &p.repetition_penalty}}) {
    KV_ASSIGN_OR_RETURN(double v, a.get_double(flag, *field));
    *field = static_cast<float>(v);
  }
  KV_ASSIGN_OR_RETURN(int64_t min_tokens, a.get_int("min-tokens", 0));
  if (min_tokens < 0 || min_tokens > max_tokens)
    return invalid_argument("--min-tokens must be from 0 to --max-tokens (" + std::to_string(max_tokens) + ")");
  p.min_tokens = static_cast<int32_t>(min_tokens);
  for (const std::string& stop : a.get_all("stop")) {
    if (stop.empty()) return invalid_argument("--stop needs a non-empty string");
    p.stop.push_back(stop);
  }
  if (a.has("choice")) p.choice = a.get_all("choice");
  p.json_object = a.has("json-object");
  if (a.has("json-schema")) {
    Result<std::string> schema = read_text_file(*a.get("json-schema"), SamplingParams::kMaxJsonSchemaBytes);
    if (!schema.ok()) return invalid_argument("--json-schema: " + schema.status().message());
    p.json_schema = std::move(schema).value();
  }
  p.disable_any_whitespace = a.has("disable-any-whitespace");
  if (p.disable_any_whitespace && !p.json_object && !p.json_schema.has_value())
    return invalid_argument("--disable-any-whitespace applies to JSON: give --json-object or --json-schema too");
  KV_RETURN_IF_ERROR(p.validate());
  return p;
}

std::string printable(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (u == 0) {
      out += "\\0";
    } else if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", u);
      out += esc;
    } else {
      out += c;
    }
  }
  return out;
}

int fail(const std::string& command, const Status& status) {
  std::fprintf(stderr, "kvshare %s: %s\n", command.c_str(), printable(status.message()).c_str());
  return 1;
}

int usage_error(const std::string& command, const Status& status) {
  fail(command, status);
  return 2;
}

}  // namespace kvshare::cli
