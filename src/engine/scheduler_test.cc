// The scheduler without a model: plans are checked against what the design says (docs/architecture.md, "The
// life of a request" and "Preemption by recompute"), and each step is "run" by advancing num_computed and
// appending a made-up token, as Engine::Impl::step does after the forward pass.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <memory>
#include <numeric>

namespace kvshare {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void make(int32_t num_blocks, int32_t block_size, int32_t budget = 512, int32_t max_seqs = 64) {
    blocks_ = std::make_unique<BlockManager>(num_blocks, block_size, /*enable_prefix_caching=*/true);
    sched_ = std::make_unique<Scheduler>(SchedulerConfig{max_seqs, budget, true}, *blocks_);
  }

  // A sequence of `prompt`, allowed `max_tokens` generated tokens, queued at the back.
  Sequence* add(std::vector<int32_t> prompt, int64_t max_tokens, const std::string& salt = "") {
    auto seq = std::make_unique<Sequence>(static_cast<int64_t>(seqs_.size()), std::move(prompt), SamplingParams{},
                                          salt, 0);
    seq->max_total_tokens = seq->num_prompt_tokens + max_tokens;
    sched_->add(seq.get());
    seqs_.push_back(std::move(seq));
    return seqs_.back().get();
  }

  // Runs a planned step as the engine would after a successful forward pass; returns the finished sequences.
  std::vector<Sequence*> run(const StepPlan& plan) {
    std::vector<Sequence*> finished;
    for (const PlannedSeq& p : plan.seqs) {
      Sequence* s = p.seq;
      s->num_computed += p.num_tokens;
      if (s->num_computed < s->num_tokens()) continue;
      s->tokens.push_back(static_cast<int32_t>(1000 + s->num_tokens()));
      if (s->num_tokens() >= s->max_total_tokens) {
        sched_->finish(s);
        finished.push_back(s);
      }
    }
    EXPECT_TRUE(blocks_->check_invariants().ok()) << blocks_->check_invariants().to_string();
    return finished;
  }

  StepPlan schedule_and_check() {
    StepPlan plan = sched_->schedule();
    EXPECT_TRUE(blocks_->check_invariants().ok()) << blocks_->check_invariants().to_string();
    return plan;
  }

  static int64_t planned_tokens(const StepPlan& plan) {
    int64_t n = 0;
    for (const PlannedSeq& p : plan.seqs) n += p.num_tokens;
    return n;
  }

  static std::vector<int32_t> range(int32_t first, int32_t count) {
    std::vector<int32_t> v(count);
    std::iota(v.begin(), v.end(), first);
    return v;
  }

  std::unique_ptr<BlockManager> blocks_;
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
};

// ---- abandon_step --------------------------------------------------------------------------------------

// A failed step drops only the blocks it was to fill. A shared prefix the sequence found in the cache, a
// pinned prefix, and blocks computed in earlier steps stay findable.
TEST_F(SchedulerTest, AbandonStepKeepsPrefixesFoundInTheCacheAndEarlierBlocks) {
  make(/*num_blocks=*/32, /*block_size=*/4);
  // A computes and publishes blocks [0,4) [4,8), then finishes: they are cached.
  add(range(0, 9), 1);
  ASSERT_EQ(run(schedule_and_check()).size(), 1u);
  const std::vector<int32_t> prefix = range(0, 8);
  std::vector<int32_t> cached = blocks_->match_prefix(prefix, "", 2);
  ASSERT_EQ(cached.size(), 2u);
  // Pin them as Engine::cache_prefix does.
  blocks_->acquire(cached);

  // B shares the 8-token prefix and adds 6 tokens; C is a running sequence with a block from an earlier step.
  Sequence* c = add(range(100, 6), 10);
  run(schedule_and_check());  // C's prompt: block [100..103] published
  ASSERT_EQ(c->num_computed, 6);
  ASSERT_EQ(c->num_tokens(), 7);
  run(schedule_and_check());  // C decodes position 6 (its second block is still partial)
  std::vector<int32_t> b_prompt = prefix;
  for (int32_t t : range(200, 6)) b_prompt.push_back(t);
  Sequence* b = add(b_prompt, 4);
  const StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 2u);  // C's decode of position 7 (fills its second block), B's prompt after the hits
  EXPECT_EQ(b->num_computed, 8);
  EXPECT_EQ(b->block_table[0], cached[0]);
  EXPECT_EQ(b->block_table[1], cached[1]);
  EXPECT_TRUE(blocks_->is_published(b->block_table[2]));  // [200..203] published at planning
  EXPECT_TRUE(blocks_->is_published(c->block_table[1]));  // C's second block, full once position 7 is computed
  const std::vector<int32_t> c_tokens = c->tokens;

  // The forward pass fails.
  sched_->abandon_step(plan);
  EXPECT_TRUE(blocks_->check_invariants().ok()) << blocks_->check_invariants().to_string();
  EXPECT_EQ(blocks_->match_prefix(prefix, "", 2), cached) << "the pinned shared prefix was unpublished";
  EXPECT_FALSE(blocks_->is_published(b->block_table[2])) << "B's block of this step holds no K/V";
  EXPECT_FALSE(blocks_->is_published(c->block_table[1])) << "C's block of this step holds no K/V";
  EXPECT_TRUE(blocks_->is_published(c->block_table[0])) << "C's block of an earlier step was unpublished";
  EXPECT_EQ(blocks_->match_prefix(c_tokens, "", 2).size(), 1u);
  sched_->finish(b);
  sched_->finish(c);
  EXPECT_TRUE(blocks_->check_invariants().ok()) << blocks_->check_invariants().to_string();
  // What stays cached is found by the next request; the failed blocks are not.
  EXPECT_EQ(blocks_->match_prefix(b_prompt, "", 3), cached);
  blocks_->release_chain(cached);
  EXPECT_EQ(blocks_->num_used_blocks(), 0);
}

// Another sequence that matched a block published in the failed step is in the same plan (publication is at
// planning time); the block is dropped for both.
TEST_F(SchedulerTest, AbandonStepDropsBlocksSharedWithinTheFailedStep) {
  make(32, 4);
  Sequence* a = add(range(0, 9), 2);
  Sequence* b = add(range(0, 9), 2);  // the same prompt: admitted after A, it hits A's two fresh blocks
  const StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(b->num_computed, 8);
  EXPECT_EQ(b->block_table[0], a->block_table[0]);
  sched_->abandon_step(plan);
  EXPECT_TRUE(blocks_->match_prefix(range(0, 9), "", 2).empty());
  sched_->finish(a);
  sched_->finish(b);
  EXPECT_EQ(blocks_->num_used_blocks(), 0);
  EXPECT_EQ(blocks_->num_evictable_blocks(), 0);
  EXPECT_TRUE(blocks_->check_invariants().ok()) << blocks_->check_invariants().to_string();
}

// ---- chunking, the (len - 1) / block_size cap, budgets -----------------------------------------------

TEST_F(SchedulerTest, PrefillIsChunkedUnderTheTokenBudget) {
  make(32, 4, /*budget=*/5);
  Sequence* a = add(range(0, 12), 3);
  std::vector<int64_t> chunks;
  for (int step = 0; step < 3; ++step) {
    const StepPlan plan = schedule_and_check();
    ASSERT_EQ(plan.seqs.size(), 1u);
    chunks.push_back(plan.seqs[0].num_tokens);
    run(plan);
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{5, 5, 2}));
  EXPECT_EQ(a->num_computed, 12);
  EXPECT_EQ(a->num_tokens(), 13);
  // A second sequence shares the budget with A's decode token: 1 + 4.
  Sequence* b = add(range(50, 10), 1);
  StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(plan.seqs[0].seq, a);
  EXPECT_EQ(plan.seqs[0].num_tokens, 1);
  EXPECT_EQ(plan.seqs[1].seq, b);
  EXPECT_EQ(plan.seqs[1].num_tokens, 4);
  EXPECT_LE(planned_tokens(plan), 5);
}

TEST_F(SchedulerTest, AtLeastOnePromptTokenIsComputedEvenWhenAllIsCached) {
  make(32, 4);
  add(range(0, 8), 1);  // two full blocks, both published
  run(schedule_and_check());
  ASSERT_EQ(blocks_->match_prefix(range(0, 8), "", 2).size(), 2u);
  // The same 8 tokens: only (8 - 1) / 4 = 1 block may come from the cache.
  Sequence* same = add(range(0, 8), 1);
  StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(same->num_cached_tokens, 4);
  EXPECT_EQ(plan.seqs[0].num_tokens, 4);
  run(plan);
  // 9 tokens starting with them: both blocks, one token computed.
  Sequence* longer = add(range(0, 9), 1);
  plan = schedule_and_check();
  EXPECT_EQ(longer->num_cached_tokens, 8);
  EXPECT_EQ(plan.seqs[0].num_tokens, 1);
  EXPECT_EQ(sched_->stats().prefix_queried_tokens, 8 + 8 + 9);
  EXPECT_EQ(sched_->stats().prefix_hit_tokens, 4 + 8);
}

// A sequence that needs prompt logprobs computes its whole prompt even where another published it: its copies
// were left unpublished, and so was every block after them, so nothing of its own (a later turn of its
// conversation) could ever be found. It now swaps in the published copies, and its later blocks publish.
TEST_F(SchedulerTest, ASequenceThatComputedPublishedBlocksTakesThemAndPublishesItsOwnLaterBlocks) {
  make(32, 4);
  std::vector<int32_t> shared = range(0, 16);  // four full blocks
  Sequence* first = add(shared, 1);
  run(schedule_and_check());
  const std::vector<int32_t> published(first->block_table.begin(), first->block_table.begin() + 4);
  ASSERT_EQ(blocks_->match_prefix(shared, "", 4), published);
  run(schedule_and_check());  // it finishes; its blocks stay cached

  std::vector<int32_t> prompt = shared;
  prompt.push_back(99);
  Sequence* logprobs = add(prompt, 8);
  logprobs->wants_prompt_logprobs = true;  // so nothing may come from the cache
  StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].num_tokens, 17) << "the whole prompt is computed";
  EXPECT_TRUE(logprobs->holds_duplicate);
  run(plan);
  logprobs->prompt_logprobs.resize(16);  // as the engine records them
  const std::vector<int32_t> copies(logprobs->block_table.begin(), logprobs->block_table.begin() + 4);
  for (int32_t c : copies) EXPECT_FALSE(blocks_->is_published(c));
  // Decode steps until its fifth block (tokens 16..19) is full and offered to the index.
  while (logprobs->num_computed < 20) run(schedule_and_check());
  EXPECT_FALSE(logprobs->holds_duplicate);
  EXPECT_EQ(std::vector<int32_t>(logprobs->block_table.begin(), logprobs->block_table.begin() + 4), published)
      << "its copies are swapped for the published ones";
  for (int32_t c : copies) EXPECT_EQ(blocks_->ref_count(c), 0) << "its copy " << c << " is released";
  EXPECT_EQ(blocks_->num_used_blocks(), 5) << "the four shared blocks and its own of tokens 16..19";
  const std::vector<int32_t> own(logprobs->tokens.begin(), logprobs->tokens.begin() + 20);
  const std::vector<int32_t> found = blocks_->match_prefix(own, "", 5);
  ASSERT_EQ(found.size(), 5u) << "its fifth block is findable after the shared four";
  EXPECT_EQ(found[4], logprobs->block_table[4]);
  while (sched_->has_work()) run(schedule_and_check());
  EXPECT_EQ(blocks_->num_used_blocks(), 0);
}

// The same, but the published copies are dropped (reset_prefix_cache, or evicted) before its next step: its own
// copies are then the only ones, and they publish, with the blocks after them.
TEST_F(SchedulerTest, ASequenceWhosePublishedTwinsWereDroppedPublishesItsOwnBlocks) {
  make(32, 4);
  std::vector<int32_t> shared = range(0, 16);
  add(shared, 1);
  run(schedule_and_check());
  run(schedule_and_check());  // finished; its four blocks stay cached
  std::vector<int32_t> prompt = shared;
  prompt.push_back(99);
  Sequence* logprobs = add(prompt, 8);
  logprobs->wants_prompt_logprobs = true;
  run(schedule_and_check());
  ASSERT_TRUE(logprobs->holds_duplicate);
  logprobs->prompt_logprobs.resize(16);
  EXPECT_EQ(blocks_->drop_evictable(), 4);
  EXPECT_TRUE(blocks_->match_prefix(shared, "", 4).empty());
  while (logprobs->num_computed < 20) run(schedule_and_check());
  const std::vector<int32_t> own(logprobs->tokens.begin(), logprobs->tokens.begin() + 20);
  const std::vector<int32_t> table(logprobs->block_table.begin(), logprobs->block_table.begin() + 5);
  EXPECT_EQ(blocks_->match_prefix(own, "", 5), table) << "its own five blocks are found";
}

TEST_F(SchedulerTest, MaxNumSeqsLimitsAdmission) {
  make(32, 4, 512, /*max_seqs=*/2);
  add(range(0, 3), 5);
  add(range(10, 3), 5);
  Sequence* third = add(range(20, 3), 5);
  const StepPlan plan = schedule_and_check();
  EXPECT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(sched_->first_waiting(), third);
}

// ---- requests that can never fit ------------------------------------------------------------------------

TEST_F(SchedulerTest, RequestsThatCanNeverFitAreHandedBackAndOthersStillRun) {
  make(/*num_blocks=*/4, /*block_size=*/4);  // 16 token slots in all
  Sequence* huge = add(range(0, 10), 10);    // 20 tokens: 5 blocks
  Sequence* fits = add(range(50, 10), 7);    // 17 tokens, the last never stored: exactly the cache
  const StepPlan plan = schedule_and_check();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].seq, fits);
  EXPECT_EQ(sched_->take_unschedulable(), std::vector<Sequence*>{huge});
  EXPECT_TRUE(sched_->take_unschedulable().empty());
  EXPECT_EQ(sched_->num_waiting(), 0);
  EXPECT_TRUE(huge->block_table.empty());
  sched_->finish(huge);  // the engine finishes it with an error
  while (sched_->has_work()) run(schedule_and_check());
  EXPECT_EQ(fits->num_tokens(), 17);
  EXPECT_EQ(blocks_->num_used_blocks(), 0);
}

// ---- preemption -----------------------------------------------------------------------------------------

// When blocks run out the newest running sequence is preempted (blocks released, recomputed later), it goes
// to the front of the queue, nothing is admitted in that step, and it is admitted again before anything
// queued after it, with its generated tokens kept.
TEST_F(SchedulerTest, PreemptionTakesTheNewestAndItRunsFirstAfterwards) {
  make(/*num_blocks=*/6, /*block_size=*/4);
  Sequence* a = add(range(0, 4), 8);
  Sequence* b = add(range(10, 4), 8);
  Sequence* c = add(range(20, 4), 8);
  // Each needs a block per 4 tokens; together they fill the 6 blocks with positions 0..7.
  for (int step = 0; step < 5; ++step) {
    const StepPlan plan = schedule_and_check();
    ASSERT_EQ(plan.seqs.size(), 3u) << "step " << step;
    EXPECT_FALSE(plan.preempted);
    run(plan);
  }
  ASSERT_EQ(a->num_computed, 8);
  ASSERT_EQ(a->num_tokens(), 9);
  ASSERT_EQ(blocks_->num_free_blocks(), 0);
  Sequence* d = add(range(30, 2), 1);  // queued while the cache is full
  const std::vector<int32_t> c_tokens = c->tokens;

  // Position 8 needs a third block each: C, the newest, makes room for A and B.
  StepPlan plan = schedule_and_check();
  EXPECT_TRUE(plan.preempted);
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(plan.seqs[0].seq, a);
  EXPECT_EQ(plan.seqs[1].seq, b);
  EXPECT_EQ(sched_->stats().preemptions, 1);
  EXPECT_EQ(c->state, SeqState::kWaiting);
  EXPECT_EQ(c->num_computed, 0);
  EXPECT_TRUE(c->block_table.empty());
  EXPECT_EQ(c->tokens, c_tokens) << "generated tokens are kept for recompute";
  EXPECT_EQ(sched_->first_waiting(), c) << "the preempted sequence goes to the front, before D";
  EXPECT_EQ(sched_->num_waiting(), 2);
  run(plan);

  // Run until C is admitted again: D, queued earlier than C's preemption but behind it, must not go first.
  while (c->state != SeqState::kRunning) {
    EXPECT_NE(d->state, SeqState::kRunning) << "D was admitted before the preempted C";
    run(schedule_and_check());
  }
  EXPECT_EQ(c->num_cached_tokens, 0) << "num_cached_tokens is recorded at the first admission only";
  while (sched_->has_work()) run(schedule_and_check());
  for (Sequence* s : {a, b, c}) EXPECT_EQ(s->num_tokens(), 12);
  EXPECT_EQ(d->num_tokens(), 3);
  EXPECT_EQ(blocks_->num_used_blocks(), 0);
}

// generate() sorts only the batch it queued: the head of the queue (earlier requests, preempted ones) stays.
TEST_F(SchedulerTest, SortingTheWaitingQueueLeavesTheHeadInPlace) {
  make(32, 4);
  Sequence* early = add({900, 1}, 1);
  Sequence* z = add({300}, 1);
  Sequence* x = add({100}, 1);
  Sequence* y = add({200}, 1);
  sched_->sort_waiting_by_prefix(1);
  std::vector<Sequence*> order;
  while (Sequence* s = sched_->first_waiting()) {
    order.push_back(s);
    sched_->finish(s);
  }
  EXPECT_EQ(order, (std::vector<Sequence*>{early, x, y, z}));
}

}  // namespace
}  // namespace kvshare
