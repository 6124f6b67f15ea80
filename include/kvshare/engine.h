// kvshare's public C++ API: an Engine runs many requests over one model, computing every shared prompt
// prefix once (paged KV cache indexed by prefix) and decoding all running requests together.
//
//   auto engine = kvshare::Engine::create({.model_path = "models/gpt2"}).value();
//   std::vector<kvshare::Request> reqs = {{.prompt = "Once upon a time"}};
//   for (const kvshare::Output& out : engine->generate(reqs)) std::cout << out.text << "\n";
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvshare/sampling_params.h"
#include "kvshare/status.h"
#include "kvshare/tokenizer.h"

namespace kvshare {

struct EngineConfig {
  std::string model_path;              // a Hugging Face folder or a .gguf file
  // KV cache budget: bytes when > 0, else this fraction of the memory available at start-up, in
  // (0, kMaxKvCacheFraction].
  int64_t kv_cache_bytes = 0;
  double kv_cache_fraction = 0.25;
  // Make the whole KV cache resident at start-up, as llama.cpp and vLLM do with theirs: start-up takes longer
  // (0.1-1 s per GiB on these 2-core virtual machines), a shortfall of memory is an error then rather than
  // later, and no step waits for the kernel to supply fresh pages (a cold 512-token prefill spent ~13% of its
  // time on them).
  bool kv_cache_prefault = false;
  int32_t block_size = 16;             // tokens per KV block
  int32_t max_num_seqs = 64;           // sequences in one step at most
  int32_t max_num_batched_tokens = 512;  // tokens computed in one step at most (chunked prefill)
  bool enable_prefix_caching = true;   // reuse the K/V of shared prompt prefixes
  int32_t max_model_len = 0;           // context length; 0 = the model's
  uint64_t seed = 0;                   // seeds requests that give no seed of their own
};

// The largest fraction of the available memory the KV cache may take: the rest is left for the process's other
// allocations (activations, the tokenizer, the server's buffers).
inline constexpr double kMaxKvCacheFraction = 0.95;

// The longest cache_salt a request may give. Every cached block keeps its salt, so a salt is best short: a
// tenant id or a hash.
inline constexpr size_t kMaxCacheSaltBytes = 1024;

struct Request {
  std::string prompt;                     // text; ignored when prompt_token_ids is given
  std::vector<int32_t> prompt_token_ids;  // tokens as they are (no BOS added)
  SamplingParams params;
  std::string cache_salt;                 // requests share cached blocks only when their salts are equal;
                                          // at most kMaxCacheSaltBytes
  // Keep the float32 logits each generated token was sampled from (vocab floats per token), for comparing
  // results bit for bit across machines. They come back in the finished Output only.
  bool keep_logits = false;
};

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "abort", "error"; "" for kNone

// A token's log-probability under the model's raw distribution (log-softmax of its logits).
struct TokenLogprob {
  int32_t token_id = -1;
  float logprob = 0;
};

// One token's log-probabilities: a generated token's (SamplingParams::logprobs = k) or a prompt token's
// (SamplingParams::prompt_logprobs = k), given the tokens before it.
struct GeneratedTokenLogprobs {
  TokenLogprob chosen;              // the token that was generated (or stands in the prompt)
  std::vector<TokenLogprob> top;    // the k most likely tokens, most likely first (ties: lower id first)
  int32_t chosen_rank = 0;          // tokens whose logit is >= chosen's, itself included (vLLM's rank; top[i] is i + 1)
};

// A request's progress. A request with SamplingParams::n = N yields N completions: each has its own Output
// with the request's id and its `index` (0..N-1).
//
// Streaming: while a request is unfinished, `text` and `token_ids` only grow (each Output's text is a prefix
// of every later one of the same completion), so a client may print the difference from the previous
// Output. To keep that true with stop strings, an unfinished `text` holds back its longest tail that could
// still become the start of a stop string; the finished Output has the whole text (cut at a stop string).
struct Output {
  int64_t request_id = -1;
  int32_t index = 0;                      // which of the request's n completions (0..n-1)
  std::string text;                       // the generated text so far
  std::vector<int32_t> token_ids;         // the generated tokens so far (stop strings never remove any)
  std::vector<int32_t> prompt_token_ids;
  int64_t num_cached_tokens = 0;          // prompt tokens served from the prefix cache
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  // What ended a kStop completion, as vLLM's stop_reason: the stop string that matched, or the token of
  // stop_token_ids that was generated; neither (empty, -1) for the model's end-of-sequence token.
  std::string stop_str;
  int32_t stop_token_id = -1;
  Status error;                           // why, when finish_reason is kError
  // When the request set SamplingParams::logprobs: the log-probabilities of generated tokens logprobs_begin,
  // logprobs_begin + 1, ... (of token_ids). generate()'s outputs and every finished Output hold them all
  // (logprobs_begin 0, token_ids.size() entries); step()'s unfinished outputs hold only the tokens generated
  // since the completion's previous Output, so following a stream costs O(new tokens) per step, not O(all).
  std::vector<GeneratedTokenLogprobs> logprobs;
  int64_t logprobs_begin = 0;
  // When the request set SamplingParams::prompt_logprobs: entry i is prompt token i + 1's log-probability given
  // the tokens before it (the first prompt token has none: prompt_token_ids.size() - 1 entries). They are the
  // request's, so completion 0 carries them (computed once, however large n is): in its finished Output (and so
  // in generate()'s), and in the first Output step() gives of it (the step its prompt was done). A request that
  // finished before its prompt was computed (aborted, failed) carries those computed so far.
  std::vector<GeneratedTokenLogprobs> prompt_logprobs;
  std::vector<float> logits;              // [token_ids.size(), vocab] when the request set keep_logits
};

struct EngineMetrics {
  int64_t prefix_queried_tokens = 0;  // prompt tokens looked up in the prefix cache, once per completion (n per
                                      // request; not cache_prefix's)
  int64_t prefix_hit_tokens = 0;      // of them, found
  int64_t computed_tokens = 0;        // tokens that went through the model
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  double step_seconds_total = 0;
  double last_step_seconds = 0;
  // For hardware-efficiency reports: steps that ran any token other than a sequence's newest generated one
  // (prompt tokens, generated tokens recomputed after a preemption) count as prefill, the rest as decode.
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double prefill_flops = 0;  // matrix multiplies and attention of prefill steps
  double decode_flops = 0;
  double decode_bytes = 0;   // weights read once per decode step plus the K/V each sequence reads
  int32_t peak_blocks_in_use = 0;  // most blocks holding K/V at once (referenced or cached), sampled after planning
  int64_t kv_cache_bytes_peak_used = 0;  // those blocks' bytes (kv_bytes_per_block each)
  int32_t blocks_total = 0;
  int32_t blocks_used = 0;       // referenced by a running sequence or a pinned prefix
  int32_t blocks_cached = 0;     // holding a published prefix, unreferenced, evictable
  int32_t blocks_free = 0;
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  // What the KV cache may take: blocks_total blocks of kv_bytes_per_block bytes, at most the budget. A block's
  // bytes are its K/V and its bookkeeping (engine/kv_budget.h); both become resident only as blocks are used.
  int64_t kv_cache_bytes = 0;
  int64_t kv_bytes_per_block = 0;
  int64_t kv_bytes_per_token = 0;  // K/V alone: 2 * layers * kv_heads * head_dim * sizeof(float)
};

struct ModelConfig;

class Engine {
 public:
  // Loads the model and sizes the KV cache. The load runs on a thread of its own, so any thread may then step
  // the engine at full speed (see engine.cc).
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Offline batch: runs every request to the end and returns their outputs in request order: a request with
  // n completions gives n adjacent outputs (index 0..n-1). Requests are reordered internally so that each
  // shared prefix is computed once. A bad request gets outputs with finish_reason kError and its message (n of
  // them, or one when n itself is out of range); the others run as usual.
  // `on_finished`, when given, is called as each completion finishes (for progress reports). Requests queued
  // earlier with add_request run to the end too; their outputs come from the next step().
  // `stop_requested`, when given, is called between steps (and before the first); once it returns true,
  // generate aborts the batch's unfinished requests (finish_reason kAbort, their blocks released, the engine
  // ready for more) and returns at once: how a caller interrupts a long batch (Ctrl-C from Python).
  // With `all_or_none`, one bad request stops the whole batch before any of it runs: the good requests'
  // outputs finish with kAbort (as vLLM's LLM.generate raises before generating anything).
  std::vector<Output> generate(const std::vector<Request>& requests,
                               const std::function<void(const Output&)>& on_finished = {},
                               const std::function<bool()>& stop_requested = {}, bool all_or_none = false);

  // Online use: queue a request (its id, or why it cannot run), then call step() until has_unfinished()
  // is false. step() returns an Output for every completion that made progress this step; the n completions
  // of a request share its id and differ by Output::index.
  Result<int64_t> add_request(const Request& request);
  std::vector<Output> step();
  bool has_unfinished() const;
  // Stops a request (all its completions); their blocks are released and their outputs finish with kAbort.
  // Unknown ids are ignored.
  void abort(int64_t request_id);

  // Explicit prefix: computes the prefix's K/V once and pins its full blocks until release_prefix(), so
  // requests that start with it (and the same cache_salt) reuse them. Returns a handle. `stop_requested`, as
  // generate's, is called between steps: once it returns true the prefix's computation is aborted (its blocks
  // released, nothing pinned) and the result is kCancelled. release_prefix of an unknown handle is kNotFound.
  Result<int64_t> cache_prefix(const std::vector<int32_t>& tokens, const std::string& cache_salt = "",
                               const std::function<bool()>& stop_requested = {});
  Result<int64_t> cache_prefix(const std::string& text, const std::string& cache_salt = "",
                               const std::function<bool()>& stop_requested = {});
  Status release_prefix(int64_t handle);
  // Forgets every cached prefix block that no request holds, so later requests compute their prompts anew
  // (for benchmarks, and for clients that want a cold cache); blocks of running requests and pinned prefixes
  // stay findable. Returns the number of blocks it dropped.
  int64_t reset_prefix_cache();

  // The model's tokenizer and chat template (include/kvshare/tokenizer.h); it lives as long as the engine.
  const Tokenizer& tokenizer() const;
  const ModelConfig& model_config() const;
  const EngineConfig& config() const;
  // The longest sequence (prompt + generated tokens) a request may reach: EngineConfig::max_model_len, or the
  // model's context where that is 0.
  int64_t max_model_len() const;
  EngineMetrics metrics() const;
  // FLOPs of the model's forward pass for `tokens` tokens at mean context `context` (for benchmark reports).
  double forward_flops(int64_t tokens, double context) const;

 private:
  Engine();
  static Result<std::unique_ptr<Engine>> create_on_this_thread(const EngineConfig& config);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvshare
