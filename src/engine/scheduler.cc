#include "engine/scheduler.h"

#include <algorithm>
#include <span>

namespace kvshare {

Scheduler::Scheduler(const SchedulerConfig& config, BlockManager& blocks) : config_(config), blocks_(blocks) {}

void Scheduler::add(Sequence* seq) {
  seq->state = SeqState::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::sort_waiting_by_prefix(size_t first) {
  if (first >= waiting_.size()) return;
  std::stable_sort(waiting_.begin() + static_cast<ptrdiff_t>(first), waiting_.end(), [](const Sequence* a, const Sequence* b) {
    if (a->salt != b->salt) return a->salt < b->salt;
    return a->tokens < b->tokens;
  });
}

std::vector<Sequence*> Scheduler::take_unschedulable() { return std::exchange(unschedulable_, {}); }

bool Scheduler::allocate_until(Sequence* seq, int64_t end) {
  const int64_t bs = blocks_.block_size();
  const int64_t needed = (end + bs - 1) / bs - static_cast<int64_t>(seq->block_table.size());
  if (needed <= 0) return true;
  if (needed > blocks_.num_free_blocks()) return false;
  for (int64_t i = 0; i < needed; ++i) {
    auto block = blocks_.allocate();
    KV_CHECK(block.has_value(), "a free block was counted but none could be allocated");
    seq->block_table.push_back(*block);
  }
  return true;
}

void Scheduler::publish_full_blocks(Sequence* seq, int64_t end) {
  if (!config_.enable_prefix_caching) return;
  const int64_t bs = blocks_.block_size();
  const int64_t full = end / bs;
  for (int64_t b = seq->num_published_blocks; b < full; ++b) {
    const int32_t parent = b == 0 ? -1 : seq->block_table[b - 1];
    std::span<const int32_t> tokens(seq->tokens.data() + b * bs, static_cast<size_t>(bs));
    // An identical block published by another sequence leaves ours unpublished (and every later one, as a
    // chain is findable only through published links). Ours is still computed, bitwise the same, in this
    // step; take_cached_blocks switches to the published copy before the next.
    if (blocks_.publish(seq->block_table[b], parent, tokens, seq->salt) != seq->block_table[b])
      seq->holds_duplicate = true;
  }
  seq->num_published_blocks = std::max(seq->num_published_blocks, full);
}

// A sequence computes blocks that another already published when it could not take them at admission: one
// that needs prompt logprobs computes its whole prompt (a cached block holds no logits). Its own copies stay
// unpublished, and so would every later block of it, a chain being findable only through published links: a
// later turn of its conversation would find nothing past the shared prefix. So once those blocks are computed,
// it swaps them for the published copies (bitwise the same K/V) and frees its own. Blocks past num_computed
// that the match finds were published by this step's plan so far and are written in this forward pass before
// any attention reads them, as for the hits of admit(); the run is capped as at admission (max_reusable_tokens).
void Scheduler::take_cached_blocks(Sequence* seq) {
  if (!config_.enable_prefix_caching || !seq->holds_duplicate) return;
  const int64_t bs = blocks_.block_size();
  const std::vector<int32_t> found =
      blocks_.match_prefix(seq->tokens, seq->salt, static_cast<int32_t>(seq->max_reusable_tokens() / bs));
  const auto k = static_cast<int64_t>(found.size());
  for (int64_t j = 0; j < k; ++j) {
    if (j < static_cast<int64_t>(seq->block_table.size())) {
      if (seq->block_table[j] == found[j]) continue;
      blocks_.acquire(std::span<const int32_t>(&found[j], 1));
      blocks_.release(std::span<const int32_t>(&seq->block_table[j], 1));  // unpublished: back to free
      seq->block_table[j] = found[j];
    } else {
      blocks_.acquire(std::span<const int32_t>(&found[j], 1));
      seq->block_table.push_back(found[j]);
    }
  }
  seq->num_computed = std::max(seq->num_computed, k * bs);
  // Its blocks from k on were offered with an unpublished parent, or as duplicates of copies that may since
  // have been evicted: offer them again (publish() returns a block already published as it is).
  seq->num_published_blocks = k;
  seq->holds_duplicate = false;
}

void Scheduler::release_blocks(Sequence* seq) {
  // Tail first, so a chain is evicted from its tail inward and its shared head stays cached longest.
  blocks_.release_chain(seq->block_table);
  seq->block_table.clear();
  seq->num_published_blocks = 0;
  seq->holds_duplicate = false;
  seq->num_computed = 0;
}

void Scheduler::preempt(Sequence* seq) {
  release_blocks(seq);
  seq->state = SeqState::kWaiting;
  waiting_.push_front(seq);
  ++stats_.preemptions;
}

void Scheduler::finish(Sequence* seq) {
  release_blocks(seq);
  seq->state = SeqState::kFinished;
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
}

// The blocks a sequence needs to hold all its tokens: if even an empty cache cannot give them, it never can.
bool Scheduler::fits_whole_cache(int64_t kv_tokens) const {
  const int64_t bs = blocks_.block_size();
  return (kv_tokens + bs - 1) / bs <= blocks_.num_blocks();
}

bool Scheduler::admit(Sequence* seq, int64_t& budget, StepPlan& plan) {
  const int64_t bs = blocks_.block_size();
  const int64_t len = seq->num_tokens();
  if (!fits_whole_cache(seq->max_kv_tokens())) {
    unschedulable_.push_back(seq);
    return true;  // handled: removed from the queue
  }
  std::vector<int32_t> hits;
  if (config_.enable_prefix_caching) {
    // At least one token is always computed, so that the step yields logits for the next token (and every
    // position whose logits the prompt logprobs need).
    hits = blocks_.match_prefix(seq->tokens, seq->salt, static_cast<int32_t>(seq->max_reusable_tokens() / bs));
  }
  const int64_t start = static_cast<int64_t>(hits.size()) * bs;
  const int64_t n = std::min(len - start, budget);
  int64_t evictable_hits = 0;
  for (int32_t b : hits) evictable_hits += blocks_.ref_count(b) == 0 ? 1 : 0;
  const int64_t new_blocks = (start + n + bs - 1) / bs - static_cast<int64_t>(hits.size());
  if (new_blocks > blocks_.num_free_blocks() - evictable_hits) return false;

  blocks_.acquire(hits);
  seq->block_table = hits;
  seq->num_published_blocks = static_cast<int64_t>(hits.size());
  seq->num_computed = start;
  KV_CHECK(allocate_until(seq, start + n));
  if (seq->num_cached_tokens < 0) {  // first admission: count the prompt against the prefix cache
    seq->num_cached_tokens = start;
    // An explicit prefix (Engine::cache_prefix) is not a request: like EngineMetrics::prompt_tokens, the hit
    // rate counts requests' prompts only (including what they find of pinned prefixes).
    if (!seq->prefill_only) {
      stats_.prefix_queried_tokens += seq->num_prompt_tokens;
      stats_.prefix_hit_tokens += start;
    }
  }
  publish_full_blocks(seq, start + n);
  seq->state = SeqState::kRunning;
  running_.push_back(seq);
  plan.seqs.push_back({seq, n});
  budget -= n;
  return true;
}

void Scheduler::abandon_step(const StepPlan& plan) {
  const int64_t bs = blocks_.block_size();
  for (const PlannedSeq& p : plan.seqs) {
    Sequence* seq = p.seq;
    // Only the blocks this step was to fill: from the one holding its first planned token to the one holding
    // its last. Blocks before them hold K/V computed in earlier steps or matched from the cache (shared
    // prefixes, pinned prefixes, another sequence's published blocks) and stay findable. Any other sequence
    // referencing one of these blocks matched it during this plan, so it is in the plan and fails as well.
    const auto first = static_cast<size_t>(seq->num_computed / bs);
    const size_t end = std::min(static_cast<size_t>((seq->num_computed + p.num_tokens + bs - 1) / bs),
                                seq->block_table.size());
    if (first < end) blocks_.unpublish(std::span<const int32_t>(seq->block_table).subspan(first, end - first));
    seq->num_published_blocks = std::min(seq->num_published_blocks, static_cast<int64_t>(first));
  }
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = config_.max_num_batched_tokens;
  bool& preempted = plan.preempted;
  // 1. Running sequences, oldest first: a decode token, or the next chunk of a prefill.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    take_cached_blocks(seq);
    const int64_t n = std::min(seq->num_tokens() - seq->num_computed, budget);
    bool scheduled = true;
    while (!allocate_until(seq, seq->num_computed + n)) {
      // Out of blocks: preempt the newest running sequence (never one already planned this step).
      Sequence* victim = running_.back();
      running_.pop_back();
      preempt(victim);
      preempted = true;
      if (victim == seq) {
        scheduled = false;
        break;
      }
    }
    if (!scheduled) break;
    publish_full_blocks(seq, seq->num_computed + n);
    plan.seqs.push_back({seq, n});
    budget -= n;
    ++i;
  }
  // 2. Waiting sequences, in queue order, while budgets and blocks allow (not after a preemption: the
  // cache is under pressure and the preempted sequence goes first next time).
  while (!preempted && !waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    if (!admit(seq, budget, plan)) break;
    waiting_.pop_front();
  }
  return plan;
}

}  // namespace kvshare
