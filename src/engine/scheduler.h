// Scheduler: decides which tokens of which sequences run in the next step, within a token budget and a
// sequence budget, and gives them KV blocks (reusing cached prefix blocks). Continuous batching: waiting
// sequences join running ones at every step; long prompts are prefilled in chunks.
//
// Order of work in a step (as vLLM's): running sequences first, oldest first (decode tokens and prefill
// continuations); when blocks run out the newest running sequence is preempted (its blocks released, to
// be recomputed later, mostly from the prefix cache). Then waiting sequences are admitted in queue order
// while the budgets and free blocks allow. Full blocks are published to the prefix index when planned,
// so a sequence admitted later in the same step already shares them: within a layer the forward pass
// writes every token's K/V before any attention reads them.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "engine/sequence.h"
#include "kv/block_manager.h"

namespace kvshare {

struct SchedulerConfig {
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 512;
  bool enable_prefix_caching = true;
};

struct PlannedSeq {
  Sequence* seq;
  int64_t num_tokens;  // tokens [seq->num_computed, seq->num_computed + num_tokens) run this step
};

struct StepPlan {
  std::vector<PlannedSeq> seqs;
  bool preempted = false;  // a running sequence was preempted while planning
  bool empty() const { return seqs.empty(); }
};

struct SchedulerStats {
  int64_t prefix_queried_tokens = 0;  // requests' prompt tokens at first admission (not cache_prefix's)
  int64_t prefix_hit_tokens = 0;
  int64_t preemptions = 0;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, BlockManager& blocks);

  // Queues a sequence at the back (sort_waiting_by_prefix may reorder the queue for an offline batch).
  void add(Sequence* seq);
  // Plans the next step; sequences in the plan have blocks for their planned tokens.
  StepPlan schedule();
  // Releases a finished (or aborted) sequence's blocks and forgets it.
  void finish(Sequence* seq);
  // The step planned by `plan` did not run (the forward pass failed): the blocks it was to fill hold no
  // K/V, so their cache entries are dropped before the sequences are finished. Only those: blocks holding
  // tokens computed before the step (cached prefixes, pinned prefixes, earlier steps) stay published.
  // Call it before advancing num_computed; every sequence in the plan must then be finished.
  void abandon_step(const StepPlan& plan);
  // The sequence at the head of the waiting queue, or nullptr.
  Sequence* first_waiting() const { return waiting_.empty() ? nullptr : waiting_.front(); }
  // Sorts the waiting queue from position `first` on (an offline batch just queued behind it) so that
  // sequences sharing a prefix are adjacent (lexicographic order of (salt, tokens): a depth-first walk of the
  // prefix tree), so each shared prefix is computed once and stays cached while its group runs. Stable: equal
  // prompts keep their order. The first `first` sequences (queued earlier, preempted ones at the very front)
  // keep their places.
  void sort_waiting_by_prefix(size_t first);

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  const SchedulerStats& stats() const { return stats_; }
  // Whether the K/V of up to `kv_tokens` tokens (Sequence::max_kv_tokens) fits the whole cache, empty. The one
  // place of this rule: the engine refuses requests that fail it when they are added, and admission skips such
  // sequences.
  bool fits_whole_cache(int64_t kv_tokens) const;
  // Sequences that can never run (they need more blocks than the cache can give even alone); the engine
  // finishes them with an error. Cleared by the call.
  std::vector<Sequence*> take_unschedulable();

 private:
  // Gives `seq` blocks for positions up to `end` (exclusive). False when not enough free blocks.
  bool allocate_until(Sequence* seq, int64_t end);
  // Publishes the blocks of `seq` that are full once its first `end` tokens are computed.
  void publish_full_blocks(Sequence* seq, int64_t end);
  // Before a running sequence's next step: when it computed a block that another sequence published first,
  // takes the published copies of its leading blocks (and any further cached ones) in place of its own.
  void take_cached_blocks(Sequence* seq);
  void preempt(Sequence* seq);
  void release_blocks(Sequence* seq);
  bool admit(Sequence* seq, int64_t& budget, StepPlan& plan);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  std::vector<Sequence*> unschedulable_;
  SchedulerStats stats_;
};

}  // namespace kvshare
