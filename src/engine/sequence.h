// Sequence: one request's mutable state while the engine runs it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "kvshare/engine.h"
#include "sampling/output_guide.h"
#include "sampling/sampler.h"

namespace kvshare {

enum class SeqState { kWaiting, kRunning, kFinished };

struct Sequence {
  Sequence(int64_t id, std::vector<int32_t> prompt, SamplingParams params, std::string salt, uint64_t seed)
      : id(id), tokens(std::move(prompt)), num_prompt_tokens(static_cast<int64_t>(tokens.size())),
        params(std::move(params)), salt(std::move(salt)), rng(seed) {}

  int64_t id;                   // the engine's own id for this sequence
  int64_t request_id = -1;      // the request it belongs to (its n completions share it)
  int32_t index = 0;            // which completion of the request (0..n-1)
  std::vector<int32_t> tokens;  // the prompt, then every generated token
  int64_t num_prompt_tokens;
  SamplingParams params;
  std::vector<std::vector<int32_t>> bad_words;  // params.bad_words as token sequences (bad_word_tokens)
  std::unique_ptr<OutputGuide> guide;  // params.choice, json_object or json_schema: the tokens its draws may take
  std::string salt;             // cache_salt: blocks are shared only between equal salts
  Rng rng;                      // advances only with this sequence's own samples

  SeqState state = SeqState::kWaiting;
  int64_t num_computed = 0;         // leading tokens whose K/V are in the cache (or written this step)
  int64_t num_cached_tokens = -1;   // prompt tokens served by the prefix cache at first admission (-1: not yet)
  std::vector<int32_t> block_table; // the blocks holding its K/V, in order
  int64_t num_published_blocks = 0; // leading blocks already offered to the prefix index (hit or published)
  bool holds_duplicate = false;     // one of its blocks was computed by another sequence too, which published it
  int64_t max_total_tokens = 0;     // prompt + max_tokens, capped by the context length
  bool prefill_only = false;        // an explicit prefix: stops once the prompt is computed, samples nothing
  // The most tokens whose K/V the sequence stores: the last sampled token ends it and is never computed; an
  // explicit prefix computes all of its tokens.
  static int64_t max_kv_tokens(int64_t max_total_tokens, bool prefill_only) {
    return prefill_only ? max_total_tokens : max_total_tokens - 1;
  }
  int64_t max_kv_tokens() const { return max_kv_tokens(max_total_tokens, prefill_only); }
  FinishReason finish_reason = FinishReason::kNone;
  std::string text;                 // detokenized output so far (cut at a stop string when one matched)
  std::string stop_str;             // the stop string that finished it
  int32_t stop_token_id = -1;       // the stop_token_ids token that finished it
  std::vector<GeneratedTokenLogprobs> logprobs;  // per generated token, when params.logprobs is set
  int64_t logprobs_sent = 0;        // entries of `logprobs` already given in a step()'s Output
  // Prompt logprobs (params.prompt_logprobs, completion 0 only): entry p is token p + 1's, from the logits at
  // position p; computed as prefill reaches each position.
  bool wants_prompt_logprobs = false;
  std::vector<GeneratedTokenLogprobs> prompt_logprobs;
  bool prompt_logprobs_sent = false;
  bool keep_logits = false;         // Request::keep_logits
  std::vector<float> logits;        // [generated tokens, vocab] when keep_logits

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  bool needs_prompt_logprobs() const {
    return wants_prompt_logprobs && static_cast<int64_t>(prompt_logprobs.size()) < num_prompt_tokens - 1;
  }
  // Leading tokens whose K/V may come from the prefix cache: all but the last (its logits pick the next
  // token), and none whose logits the sequence still needs for its prompt logprobs (a cached block holds K/V,
  // not logits). After a preemption, the positions it already has logprobs for may come from the cache.
  int64_t max_reusable_tokens() const {
    const int64_t all_but_last = num_tokens() - 1;
    if (!needs_prompt_logprobs()) return all_but_last;
    return std::min<int64_t>(all_but_last, static_cast<int64_t>(prompt_logprobs.size()));
  }
  // The positions of the chunk [num_computed, num_computed + chunk) whose logits give prompt logprobs.
  std::pair<int64_t, int64_t> prompt_logprob_positions(int64_t chunk) const {
    if (!needs_prompt_logprobs()) return {0, 0};
    const int64_t begin = std::max<int64_t>(num_computed, static_cast<int64_t>(prompt_logprobs.size()));
    const int64_t end = std::min<int64_t>(num_computed + chunk, num_prompt_tokens - 1);
    return {begin, std::max(begin, end)};
  }
  int64_t num_generated() const { return num_tokens() - num_prompt_tokens; }
  // Whether computing the next `chunk` tokens is a decode: exactly the newest generated token. Anything else
  // (prompt tokens, or generated tokens recomputed after a preemption) is prefill work.
  bool decodes(int64_t chunk) const {
    return chunk == 1 && num_computed == num_tokens() - 1 && num_generated() >= 1;
  }
};

}  // namespace kvshare
