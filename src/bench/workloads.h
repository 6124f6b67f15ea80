// The benchmark workloads of docs/workloads.md, as deterministic request lists of token ids.
// Every request generates exactly its max_tokens (EOS ignored, greedy), so runs with and without prefix
// reuse do the same work and must produce the same tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvshare/engine.h"

namespace kvshare {

struct WorkloadOptions {
  std::string name;  // gsp | prefix-repetition | long-doc-qa | multi-turn | control
  uint64_t seed = 0;
  int64_t vocab_size = 0;             // random tokens are drawn from [first_token, vocab_size)
  int64_t first_token = 0;
  std::vector<int32_t> avoid_tokens;  // never drawn (special tokens)
  // gsp
  int64_t groups = 4, prompts_per_group = 16, system_len = 1024, question_len = 64;
  // prefix-repetition
  int64_t num_prompts = 64, num_prefixes = 4, prefix_len = 512, suffix_len = 128;
  // long-doc-qa
  int64_t num_docs = 8, doc_len = 2048, repeats = 2;
  std::string order = "random";  // random | tile | interleave
  // multi-turn
  int64_t conversations = 8, turns = 6, user_len = 64;
  // control
  int64_t control_prompts = 32, input_len = 256;
  // every workload
  int64_t output_len = -1;  // -1: the workload's default (gsp 32, prefix-repetition 32, long-doc-qa 16, multi-turn 32, control 64)
};

// The names, for help texts and errors.
const std::vector<std::string>& workload_names();

// A workload whose requests are all known up front (every one but multi-turn).
struct StaticWorkload {
  std::vector<Request> requests;
};

// multi-turn: each conversation's turn t sends the whole history (earlier prompts and generated tokens)
// plus user_len new tokens; the next turn waits for this one's output.
struct Conversation {
  std::vector<std::vector<int32_t>> user_turns;  // the new tokens of each turn
};

struct Workload {
  std::string name;
  int64_t output_len = 0;
  std::vector<Request> requests;            // static workloads
  std::vector<Conversation> conversations;  // multi-turn
  bool is_multi_turn() const { return !conversations.empty(); }
};

// The workload's name, order and sizes, checked without drawing a token (make_workload checks them first).
Status check_workload_options(const WorkloadOptions& options);
Result<Workload> make_workload(const WorkloadOptions& options);

// Runs a workload on an engine: static ones through Engine::generate, multi-turn through the online API
// with every conversation in flight at once. Returns the outputs in request order (turns in
// conversation-major order for multi-turn): one per request, as every workload request has n = 1.
Result<std::vector<Output>> run_workload(Engine& engine, const Workload& workload);

// FLOPs of the whole workload without reuse and with ideal reuse (every block-aligned shared prefix
// computed once, at least one prompt token computed per request), given its prompts.
struct IdealFlops {
  double without_reuse = 0;
  double with_reuse = 0;
};
IdealFlops ideal_flops(const Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int64_t output_len,
                       int64_t block_size);

}  // namespace kvshare
