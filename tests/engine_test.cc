// The engine end to end on tiny generated models: prefix reuse, batching, chunking, preemption and
// sampling never change a request's tokens.
#include <gtest/gtest.h>

#include <map>

#include "bench/workloads.h"
#include "kvshare/engine.h"
#include "model/config.h"
#include "make_model/make_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {
namespace {

// One tiny model per architecture, made once for the whole test binary.
const std::string& tiny_model(const std::string& arch) {
  static std::map<std::string, std::string> made;
  auto it = made.find(arch);
  if (it != made.end()) return it->second;
  MakeModelOptions o;
  o.arch = arch;
  o.shape = "tiny";
  o.seed = 11;
  o.tokenizer_dir = testing::gpt2_tokenizer_dir();
  o.out_dir = testing::temp_dir("engine-" + arch);
  Status st = make_model(o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return made[arch] = o.out_dir;
}

std::unique_ptr<Engine> make_engine(const std::string& model, bool prefix_cache, int64_t kv_bytes = int64_t{64} << 20,
                                    int32_t max_batched_tokens = 512, int32_t block_size = 16) {
  EngineConfig c;
  c.model_path = model;
  c.enable_prefix_caching = prefix_cache;
  c.kv_cache_bytes = kv_bytes;
  c.max_num_batched_tokens = max_batched_tokens;
  c.block_size = block_size;
  auto e = Engine::create(c);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<std::vector<int32_t>> tokens_of(const std::vector<Output>& outs) {
  std::vector<std::vector<int32_t>> t;
  for (const Output& o : outs) {
    EXPECT_NE(o.finish_reason, FinishReason::kError) << o.error.to_string();
    t.push_back(o.token_ids);
  }
  return t;
}

Workload small_workload(const std::string& name, const Engine& engine) {
  WorkloadOptions o;
  o.name = name;
  o.seed = 3;
  o.vocab_size = engine.model_config().vocab_size;
  o.first_token = 0;
  o.avoid_tokens = {50256};
  o.groups = 2;
  o.prompts_per_group = 4;
  o.system_len = 70;  // not a multiple of the block size: the shared part ends inside a block
  o.question_len = 9;
  o.conversations = 3;
  o.turns = 3;
  o.user_len = 11;
  o.output_len = 8;
  return make_workload(o).value();
}

class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (testing::gpt2_tokenizer_dir().empty()) GTEST_SKIP() << "skipped: needs GPT-2's tokenizer (scripts/install.sh)";
  }
};

// gsp: reuse on = reuse off = each prompt alone, token for token, and the shared prefixes are hit.
TEST_P(EngineTest, GspReuseOnEqualsReuseOffEqualsAlone) {
  const std::string model = tiny_model(GetParam());
  auto on = make_engine(model, true);
  auto off = make_engine(model, false);
  const Workload w = small_workload("gsp", *on);
  const auto with_reuse = tokens_of(run_workload(*on, w).value());
  const auto without = tokens_of(run_workload(*off, w).value());
  EXPECT_EQ(with_reuse, without);
  for (size_t i = 0; i < w.requests.size(); i += 3) {
    auto alone = make_engine(model, true);
    EXPECT_EQ(tokens_of(alone->generate({w.requests[i]}))[0], with_reuse[i]) << "request " << i;
  }
  const EngineMetrics m = on->metrics();
  // 8 prompts of 79 tokens in 2 groups sharing 70: each group's 4 full blocks computed once, hit 3 times.
  EXPECT_EQ(m.prefix_hit_tokens, 2 * 3 * 64);
  EXPECT_EQ(off->metrics().prefix_hit_tokens, 0);
  EXPECT_LT(m.computed_tokens, off->metrics().computed_tokens);
}

// multi-turn: each turn's history is served from the cache, and the tokens are those of a cold run.
TEST_P(EngineTest, MultiTurnReusesHistoryAndMatchesReuseOff) {
  const std::string model = tiny_model(GetParam());
  auto on = make_engine(model, true);
  auto off = make_engine(model, false);
  const Workload w = small_workload("multi-turn", *on);
  const auto a = run_workload(*on, w).value();
  const auto b = run_workload(*off, w).value();
  EXPECT_EQ(tokens_of(a), tokens_of(b));
  // Turns after the first find their history cached (all full blocks of the previous prompt + output).
  int64_t later_turn_cached = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (i % 3 != 0) later_turn_cached += a[i].num_cached_tokens;
  EXPECT_GT(later_turn_cached, 0);
  EXPECT_EQ(on->metrics().prefix_hit_tokens, later_turn_cached);
}

// Chunked prefill (a token budget smaller than a prompt) and a small block size change nothing.
TEST_P(EngineTest, ChunkingAndBlockSizeDoNotChangeTokens) {
  const std::string model = tiny_model(GetParam());
  auto ref = make_engine(model, false);
  const Workload w = small_workload("gsp", *ref);
  const auto want = tokens_of(run_workload(*ref, w).value());
  auto chunked = make_engine(model, true, int64_t{64} << 20, /*max_batched_tokens=*/13, /*block_size=*/4);
  EXPECT_EQ(tokens_of(run_workload(*chunked, w).value()), want);
}

// A KV budget so small that the engine must evict and preempt: every request still finishes correctly.
TEST_P(EngineTest, TinyKvBudgetPreemptsAndStillFinishesEverything) {
  const std::string model = tiny_model(GetParam());
  auto ref = make_engine(model, false);
  const Workload w = small_workload("gsp", *ref);
  const auto want = tokens_of(run_workload(*ref, w).value());
  // Room for 8 blocks of 16 tokens: one 87-token sequence needs 6, so two cannot run together.
  const int64_t per_token = ref->metrics().kv_bytes_per_token;
  auto tight = make_engine(model, true, per_token * 16 * 8);
  EXPECT_EQ(tokens_of(run_workload(*tight, w).value()), want);
  const EngineMetrics m = tight->metrics();
  EXPECT_GT(m.preemptions, 0);
  EXPECT_LE(m.peak_blocks_in_use, 8);
}

INSTANTIATE_TEST_SUITE_P(Arch, EngineTest, ::testing::Values("llama", "gpt2"));

class EngineBehaviour : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::gpt2_tokenizer_dir().empty()) GTEST_SKIP() << "skipped: needs GPT-2's tokenizer (scripts/install.sh)";
  }
};

TEST_F(EngineBehaviour, SeededSamplingIsTheSameAloneAndInABatch) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "The weather today is";
  r.params.temperature = 1.0f;
  r.params.top_p = 0.9f;
  r.params.seed = 1234;
  r.params.max_tokens = 12;
  r.params.ignore_eos = true;
  const auto alone = tokens_of(engine->generate({r}))[0];
  std::vector<Request> batch;
  for (int i = 0; i < 5; ++i) {
    Request other = r;
    other.params.seed = 100 + i;
    other.prompt = "Another prompt number " + std::to_string(i);
    batch.push_back(other);
  }
  batch.insert(batch.begin() + 2, r);
  const auto together = tokens_of(make_engine(model, true)->generate(batch));
  EXPECT_EQ(together[2], alone);
  EXPECT_NE(together[0], alone);
}

TEST_F(EngineBehaviour, DifferentCacheSaltsNeverShareBlocks) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request a;
  a.prompt_token_ids.assign(50, 0);
  for (int i = 0; i < 50; ++i) a.prompt_token_ids[i] = 100 + i;
  a.params.max_tokens = 2;
  a.params.temperature = 0;
  a.cache_salt = "tenant-a";
  Request b = a;
  b.cache_salt = "tenant-b";
  Request a2 = a;
  auto outs = engine->generate({a, b});
  EXPECT_EQ(outs[0].num_cached_tokens + outs[1].num_cached_tokens, 0);
  EXPECT_EQ(outs[0].token_ids, outs[1].token_ids);
  auto again = engine->generate({a2});
  EXPECT_EQ(again[0].num_cached_tokens, 48);  // the same salt hits its 3 full blocks
}

TEST_F(EngineBehaviour, ExplicitPrefixIsComputedOnceAndPinned) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true, /*kv_bytes=*/int64_t{64} << 20);
  std::vector<int32_t> prefix;
  for (int i = 0; i < 40; ++i) prefix.push_back(500 + i);
  auto handle = engine->cache_prefix(prefix);
  ASSERT_TRUE(handle.ok()) << handle.status().to_string();
  Request r;
  r.prompt_token_ids = prefix;
  r.prompt_token_ids.push_back(7);
  r.params.max_tokens = 3;
  r.params.temperature = 0;
  auto outs = engine->generate({r});
  EXPECT_EQ(outs[0].num_cached_tokens, 32);
  EXPECT_GE(engine->metrics().blocks_used, 2);  // still pinned after the request finished
  EXPECT_TRUE(engine->release_prefix(*handle).ok());
  EXPECT_FALSE(engine->release_prefix(*handle).ok());
  EXPECT_EQ(engine->metrics().blocks_used, 0);
}

TEST_F(EngineBehaviour, ResetPrefixCacheForgetsCachedBlocksButNotPinnedOnes) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true, /*kv_bytes=*/int64_t{64} << 20);
  std::vector<int32_t> shared, pinned;
  for (int i = 0; i < 40; ++i) shared.push_back(300 + i), pinned.push_back(700 + i);
  auto handle = engine->cache_prefix(pinned);
  ASSERT_TRUE(handle.ok()) << handle.status().to_string();
  auto request = [](std::vector<int32_t> prompt) {
    Request r;
    r.prompt_token_ids = std::move(prompt);
    r.prompt_token_ids.push_back(7);
    r.params.max_tokens = 3;
    r.params.temperature = 0;
    return r;
  };
  const auto first = engine->generate({request(shared)});
  const auto again = engine->generate({request(shared)});
  EXPECT_EQ(again[0].num_cached_tokens, 32);
  EXPECT_GT(engine->reset_prefix_cache(), 0);
  const auto after = engine->generate({request(shared), request(pinned)});
  EXPECT_EQ(after[0].num_cached_tokens, 0);   // computed anew
  EXPECT_EQ(after[0].token_ids, first[0].token_ids);
  EXPECT_EQ(after[1].num_cached_tokens, 32);  // the pinned prefix is still there
  EXPECT_TRUE(engine->release_prefix(*handle).ok());
}

TEST_F(EngineBehaviour, BadRequestsFailAloneWithClearErrors) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request good;
  good.prompt = "Hello";
  good.params.max_tokens = 3;
  Request too_long;
  too_long.prompt_token_ids.assign(600, 5);  // the tiny model's context is 512
  Request bad_token;
  bad_token.prompt_token_ids = {1, 999999};
  Request bad_param = good;
  bad_param.params.top_p = 0;
  auto outs = engine->generate({too_long, good, bad_token, bad_param});
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kError);
  EXPECT_NE(outs[0].error.message().find("context"), std::string::npos) << outs[0].error.message();
  EXPECT_EQ(outs[1].finish_reason, FinishReason::kLength);
  EXPECT_EQ(outs[1].token_ids.size(), 3u);
  EXPECT_NE(outs[2].error.message().find("vocabulary"), std::string::npos);
  EXPECT_NE(outs[3].error.message().find("top_p"), std::string::npos);
}

TEST_F(EngineBehaviour, GenerateKeepsTheOutputsOfEarlierOnlineRequests) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "Online first";
  r.params.max_tokens = 4;
  r.params.temperature = 0;
  const int64_t online = engine->add_request(r).value();
  Request b = r;
  b.prompt = "Offline batch";
  auto outs = engine->generate({b});
  EXPECT_EQ(outs[0].token_ids.size(), 4u);
  bool seen = false;
  for (const Output& o : engine->step())
    if (o.request_id == online && o.finished) seen = o.token_ids.size() == 4;
  EXPECT_TRUE(seen);
  EXPECT_FALSE(engine->has_unfinished());
}

// generate() orders its own batch by prefix, but requests queued before it keep their places: with one
// sequence at a time, an earlier add_request runs first even though its prompt sorts after the batch's.
TEST_F(EngineBehaviour, GenerateDoesNotReorderRequestsQueuedBeforeIt) {
  EngineConfig c;
  c.model_path = tiny_model("llama");
  c.kv_cache_bytes = int64_t{64} << 20;
  c.max_num_seqs = 1;
  auto engine = Engine::create(c).value();
  Request early;
  early.prompt_token_ids = {900, 901, 902};
  early.params.max_tokens = 3;
  early.params.temperature = 0;
  early.params.ignore_eos = true;
  const int64_t early_id = engine->add_request(early).value();
  std::vector<Request> batch(3, early);
  batch[0].prompt_token_ids = {300, 1};
  batch[1].prompt_token_ids = {100, 1};  // sorts first in the batch
  batch[2].prompt_token_ids = {200, 1};
  std::vector<int> finish_order;
  std::vector<int32_t> waiting_at_finish;
  const std::vector<Output> outs = engine->generate(batch, [&](const Output& o) {
    finish_order.push_back(static_cast<int>(o.prompt_token_ids[0]));
    waiting_at_finish.push_back(engine->metrics().num_waiting);
  });
  for (const Output& o : outs) EXPECT_EQ(o.finish_reason, FinishReason::kLength) << o.error.to_string();
  // The batch ran in prefix order, each after the earlier request had finished (none waiting behind the last).
  EXPECT_EQ(finish_order, (std::vector<int>{100, 200, 300}));
  EXPECT_EQ(waiting_at_finish, (std::vector<int32_t>{2, 1, 0}));
  bool early_finished = false;
  for (const Output& o : engine->step())
    if (o.request_id == early_id && o.finished) early_finished = o.token_ids.size() == 3;
  EXPECT_TRUE(early_finished);
}

// peak_blocks_in_use counts a finished sequence's blocks at their peak, also the ones it frees (unpublished)
// when it finishes in the same step.
TEST_F(EngineBehaviour, PeakBlocksCountBlocksReleasedAtFinish) {
  auto engine = make_engine(tiny_model("llama"), /*prefix_cache=*/false, int64_t{64} << 20, 512, /*block_size=*/4);
  Request r;
  r.prompt_token_ids = {10, 11, 12, 13, 14};  // 5 tokens: 2 blocks of 4
  r.params.max_tokens = 1;
  r.params.temperature = 0;
  const auto outs = engine->generate({r});
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kLength);
  const EngineMetrics m = engine->metrics();
  EXPECT_EQ(m.blocks_used + m.blocks_cached, 0);  // everything was freed
  EXPECT_EQ(m.peak_blocks_in_use, 2);
  EXPECT_EQ(m.kv_cache_bytes_peak_used, 2 * 4 * m.kv_bytes_per_token);
}

// An explicit prefix is not a request: neither its tokens nor its lookup count in the hit rate, so queried
// tokens are exactly the requests' prompt tokens, and what requests find of the pinned prefix counts as hits.
TEST_F(EngineBehaviour, CachePrefixIsNotCountedAsARequestInTheHitRate) {
  auto engine = make_engine(tiny_model("llama"), true);
  std::vector<int32_t> prefix;
  for (int i = 0; i < 40; ++i) prefix.push_back(500 + i);
  auto handle = engine->cache_prefix(prefix);
  ASSERT_TRUE(handle.ok()) << handle.status().to_string();
  EngineMetrics m = engine->metrics();
  EXPECT_EQ(m.prompt_tokens, 0);
  EXPECT_EQ(m.prefix_queried_tokens, 0);
  EXPECT_EQ(m.prefix_hit_tokens, 0);
  EXPECT_EQ(m.computed_tokens, 40);  // it did run through the model
  Request r;
  r.prompt_token_ids = prefix;
  r.prompt_token_ids.push_back(7);
  r.params.max_tokens = 2;
  r.params.temperature = 0;
  const auto outs = engine->generate({r, r});
  m = engine->metrics();
  EXPECT_EQ(m.prompt_tokens, 2 * 41);
  EXPECT_EQ(m.prefix_queried_tokens, m.prompt_tokens);
  EXPECT_EQ(m.prefix_hit_tokens, outs[0].num_cached_tokens + outs[1].num_cached_tokens);
  EXPECT_EQ(m.prefix_hit_tokens, 2 * 32);
  EXPECT_TRUE(engine->release_prefix(*handle).ok());
}

TEST_F(EngineBehaviour, OnlineStepAndAbort) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "Streaming test";
  r.params.max_tokens = 50;
  r.params.ignore_eos = true;
  auto id1 = engine->add_request(r).value();
  auto id2 = engine->add_request(r).value();
  int steps = 0;
  std::map<int64_t, Output> last;
  while (engine->has_unfinished()) {
    for (Output& o : engine->step()) last[o.request_id] = o;
    if (++steps == 5) engine->abort(id1);
  }
  EXPECT_EQ(last[id1].finish_reason, FinishReason::kAbort);
  EXPECT_LT(last[id1].token_ids.size(), 50u);
  EXPECT_EQ(last[id2].finish_reason, FinishReason::kLength);
  EXPECT_EQ(last[id2].token_ids.size(), 50u);
  EXPECT_EQ(engine->metrics().blocks_used, 0);
}

}  // namespace
}  // namespace kvshare
