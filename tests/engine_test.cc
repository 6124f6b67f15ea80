// The engine end to end on tiny generated models: prefix reuse, batching, chunking, preemption and
// sampling never change a request's tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "bench/workloads.h"
#include "core/mapped_file.h"
#include "engine/context_limit.h"
#include "kvshare/engine.h"
#include "model/config.h"
#include "make_model/make_model.h"
#include "sampling/json_guide.h"
#include "sampling/sampler.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {
namespace {

// One model per architecture and shape (make_model's), made once for the whole test binary.
const std::string& tiny_model(const std::string& arch, const std::string& shape = "tiny") {
  static std::map<std::string, std::string> made;
  const std::string name = shape == "tiny" ? arch : arch + "-" + shape;
  auto it = made.find(name);
  if (it != made.end()) return it->second;
  MakeModelOptions o;
  o.arch = arch;
  o.shape = shape;
  o.seed = 11;
  o.tokenizer_dir = testing::gpt2_tokenizer_dir();
  o.out_dir = testing::temp_dir("engine-" + name);
  Status st = make_model(o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return made[name] = o.out_dir;
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
  auto tight = make_engine(model, true, ref->metrics().kv_bytes_per_block * 8);
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

// Every cached block keeps its salt: a megabyte of salt cost a megabyte per block, counted nowhere.
TEST_F(EngineBehaviour, LongCacheSaltsAreRefused) {
  auto engine = make_engine(tiny_model("llama"), true);
  Request r;
  r.prompt_token_ids = {100, 101, 102};
  r.params.max_tokens = 1;
  r.cache_salt.assign(kMaxCacheSaltBytes, 's');
  EXPECT_TRUE(engine->add_request(r).ok());
  r.cache_salt.push_back('s');
  const Status st = engine->add_request(r).status();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cache_salt is 1025 bytes; at most 1024"), std::string::npos) << st.to_string();
  EXPECT_FALSE(engine->cache_prefix(r.prompt_token_ids, r.cache_salt).ok());
  while (engine->has_unfinished()) engine->step();
}

// all_or_none (Python's LLM.generate): one bad request and nothing runs; without it the good ones run, as a
// batch job wants. Python ran the whole batch, then raised and dropped every result.
TEST_F(EngineBehaviour, AllOrNoneRunsNothingWhenOneRequestIsBad) {
  auto engine = make_engine(tiny_model("llama"), true);
  Request good;
  good.prompt_token_ids = {100, 101, 102};
  good.params.max_tokens = 4;
  good.params.n = 2;
  Request bad = good;
  bad.prompt_token_ids = {100, -5};
  const std::vector<Request> batch = {good, bad, good};
  const int64_t steps_before = engine->metrics().steps;
  std::vector<Output> out = engine->generate(batch, {}, {}, /*all_or_none=*/true);
  ASSERT_EQ(out.size(), 6u);
  for (size_t k : {0u, 1u, 4u, 5u}) {
    EXPECT_EQ(out[k].finish_reason, FinishReason::kAbort) << k;
    EXPECT_TRUE(out[k].token_ids.empty()) << k;
  }
  EXPECT_EQ(out[2].finish_reason, FinishReason::kError);
  EXPECT_EQ(engine->metrics().steps, steps_before) << "no step ran";
  EXPECT_FALSE(engine->has_unfinished());
  EXPECT_EQ(engine->metrics().blocks_used, 0);
  out = engine->generate(batch);
  for (size_t k : {0u, 1u, 4u, 5u}) EXPECT_EQ(out[k].token_ids.size(), 4u) << k;
  EXPECT_EQ(out[2].finish_reason, FinishReason::kError);
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

TEST_F(EngineBehaviour, AStoppedCachePrefixPinsNothingAndLeavesTheEngineAsItWas) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true, int64_t{64} << 20, /*max_batched_tokens=*/16);  // 64 tokens: four steps
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> prefix;
  for (int i = 0; i < 64; ++i) prefix.push_back(500 + i);
  int calls = 0;
  auto stopped = engine->cache_prefix(prefix, "", [&] { return ++calls > 2; });  // stop after two steps
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.status().code(), StatusCode::kCancelled) << stopped.status().to_string();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(engine->metrics().blocks_used, 0) << "nothing pinned, nothing held";
  EXPECT_FALSE(engine->has_unfinished());
  EXPECT_TRUE(engine->step().empty()) << "no output of the stopped prefix is left for step()";
  // The engine goes on as before: the same prefix is cached in full and pinned.
  auto handle = engine->cache_prefix(prefix, "", [] { return false; });
  ASSERT_TRUE(handle.ok()) << handle.status().to_string();
  EXPECT_EQ(engine->metrics().blocks_used, 4);
  EXPECT_TRUE(engine->release_prefix(*handle).ok());
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
  // 16 MiB of text: refused from its length, before BPE (which would take many seconds).
  Request far_too_long;
  for (int i = 0; i < (1 << 20); ++i) far_too_long.prompt += "hello world, hi ";
  auto outs = engine->generate({too_long, good, bad_token, bad_param, far_too_long});
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kError);
  EXPECT_NE(outs[0].error.message().find("context"), std::string::npos) << outs[0].error.message();
  EXPECT_EQ(outs[1].finish_reason, FinishReason::kLength);
  EXPECT_EQ(outs[1].token_ids.size(), 3u);
  EXPECT_NE(outs[2].error.message().find("vocabulary"), std::string::npos);
  EXPECT_NE(outs[3].error.message().find("top_p"), std::string::npos);
  EXPECT_EQ(outs[4].finish_reason, FinishReason::kError);
  EXPECT_NE(outs[4].error.message().find("the prompt is 16777216 bytes, at least "), std::string::npos)
      << outs[4].error.message();
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

// generate() stops when stop_requested says so: the batch's finished requests keep their outputs, the others
// come back aborted, nothing stays queued or holds blocks, and the engine then runs the same batch exactly as a
// fresh engine does.
TEST_F(EngineBehaviour, GenerateStopsWhenAskedAndTheEngineStaysUsable) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  std::vector<Request> batch(3);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].prompt_token_ids = {400, 401, 402, static_cast<int32_t>(10 + i)};
    batch[i].params.temperature = 0;
    batch[i].params.ignore_eos = true;
    batch[i].params.max_tokens = i == 0 ? 2 : 50;  // the first finishes before the stop, the others do not
  }
  int calls = 0;
  const std::vector<Output> stopped = engine->generate(batch, {}, [&] { return ++calls > 10; });
  EXPECT_EQ(calls, 11);
  ASSERT_EQ(stopped.size(), 3u);
  EXPECT_EQ(stopped[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ(stopped[0].token_ids.size(), 2u);
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(stopped[i].finished);
    EXPECT_EQ(stopped[i].finish_reason, FinishReason::kAbort);
    EXPECT_LT(stopped[i].token_ids.size(), 50u);
  }
  const EngineMetrics m = engine->metrics();
  EXPECT_EQ(m.num_running + m.num_waiting, 0);
  EXPECT_EQ(m.blocks_used, 0);
  EXPECT_FALSE(engine->has_unfinished());
  EXPECT_EQ(tokens_of(engine->generate(batch)), tokens_of(make_engine(model, true)->generate(batch)));
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
  EXPECT_EQ(m.kv_cache_bytes_peak_used, 2 * m.kv_bytes_per_block);
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

// ---- Sampling features end to end (stop strings, min_tokens, n > 1, logprobs) ----

Request greedy_request(const std::string& prompt, int32_t max_tokens) {
  Request r;
  r.prompt = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

// A stop string made of the end of one generated token's text and the start of the next one's: the request
// stops at the token that completes it, its text ends before it (or with it), its tokens stay as generated,
// and a streaming client never sees text that is later taken back.
TEST_F(EngineBehaviour, StopStringAcrossTokensCutsTheTextAndStreamsNothingThatIsCut) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  const Request base = greedy_request("The story begins", 40);
  const Output full = engine->generate({base})[0];
  ASSERT_EQ(full.token_ids.size(), 40u);
  // Find a boundary after token k with two plain characters on each side, whose 4 characters occur first there.
  const Tokenizer& tok = engine->tokenizer();
  std::string stop;
  size_t boundary = 0, k = 0;
  for (k = 1; k + 1 < full.token_ids.size() && stop.empty(); ++k) {
    const std::vector<int32_t> head(full.token_ids.begin(), full.token_ids.begin() + static_cast<ptrdiff_t>(k));
    const std::string text = tok.decode(head, true);
    if (!full.text.starts_with(text) || text.size() < 2) continue;
    const std::string cand = full.text.substr(text.size() - 2, 4);
    bool plain = cand.size() == 4;
    for (char c : cand) plain = plain && c > ' ' && c < 127;
    if (plain && full.text.find(cand) == text.size() - 2) {
      stop = cand;
      boundary = text.size();
    }
  }
  ASSERT_FALSE(stop.empty()) << "no boundary to test in " << full.text;
  --k;  // the loop stepped past it: tokens [0, k) make the text before the boundary
  const size_t completing = [&] {  // the first token count whose text holds all of the stop string
    for (size_t n = k + 1; n <= full.token_ids.size(); ++n) {
      const std::vector<int32_t> head(full.token_ids.begin(), full.token_ids.begin() + static_cast<ptrdiff_t>(n));
      if (tok.decode(head, true).size() >= boundary + 2) return n;
    }
    return full.token_ids.size();
  }();
  SCOPED_TRACE("stop string '" + stop + "' in: " + full.text);

  Request r = base;
  r.params.stop = {"never appears \x01", stop};
  const int64_t id = engine->add_request(r).value();
  std::string streamed;
  Output last;
  while (engine->has_unfinished()) {
    for (Output& o : engine->step()) {
      ASSERT_EQ(o.request_id, id);
      ASSERT_TRUE(o.text.starts_with(streamed)) << "streamed text was taken back: '" << streamed << "' -> '" << o.text << "'";
      streamed = o.text;
      last = o;
    }
  }
  EXPECT_EQ(last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(last.stop_str, stop);
  EXPECT_EQ(last.stop_token_id, -1);
  EXPECT_EQ(last.text, full.text.substr(0, boundary - 2));
  EXPECT_EQ(last.token_ids, std::vector<int32_t>(full.token_ids.begin(), full.token_ids.begin() + static_cast<ptrdiff_t>(completing)));

  r.params.include_stop_str_in_output = true;
  const Output with = engine->generate({r})[0];
  EXPECT_EQ(with.text, full.text.substr(0, boundary + 2));
  EXPECT_EQ(with.token_ids, last.token_ids);
}

// A token that completes a stop string and ends inside a character (GPT-2 has " \xe2", a space and the start of
// a dash or a quote):
// the bytes the decoder held were flushed after the cut text, as U+FFFD. And EOS or a stop token that also
// completes a stop string ends as a stop token (vLLM's order), not as the string.
TEST_F(EngineBehaviour, StopStringCutDropsAPartialCharacterAndYieldsToStopTokens) {
  auto engine = make_engine(tiny_model("gpt2"), true);
  const Tokenizer& tok = engine->tokenizer();
  int32_t forced = -1;
  for (int32_t id = 0; id < tok.vocab_size() && forced < 0; ++id) {
    const std::string p = tok.token_piece(id);
    const auto lead = p.size() >= 2 ? static_cast<unsigned char>(p[1]) : 0;
    const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 ? 2 : 0;  // bytes of that character
    if (p[0] >= ' ' && p[0] < 127 && need > 0 && p.size() - 1 < need) forced = id;
  }
  ASSERT_GE(forced, 0) << "no token of an ASCII character and part of another";
  const std::string first(1, tok.token_piece(forced)[0]);
  SCOPED_TRACE("token " + std::to_string(forced) + ", stop string '" + first + "'");
  Request r = greedy_request("The story", 3);
  r.params.logit_bias = {{forced, 100.0f}};  // every step picks it
  r.params.stop = {first};
  Output o = engine->generate({r})[0];
  EXPECT_EQ(o.finish_reason, FinishReason::kStop);
  EXPECT_EQ(o.stop_str, first);
  EXPECT_EQ(o.text, "");
  EXPECT_EQ(o.token_ids, std::vector<int32_t>{forced});
  r.params.include_stop_str_in_output = true;
  EXPECT_EQ(engine->generate({r})[0].text, first);

  r.params.stop_token_ids = {forced};
  o = engine->generate({r})[0];
  EXPECT_EQ(o.finish_reason, FinishReason::kStop);
  EXPECT_EQ(o.stop_token_id, forced);
  EXPECT_EQ(o.stop_str, "");
}

TEST_F(EngineBehaviour, MinTokensMasksStopTokensUntilReached) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r = greedy_request("Once there was", 12);
  const Output full = engine->generate({r})[0];
  // Stop at the first token that differs from the first one (greedy: the same run up to there).
  size_t at = 1;
  while (at < full.token_ids.size() && full.token_ids[at] == full.token_ids[0]) ++at;
  ASSERT_LT(at, full.token_ids.size());
  const int32_t stop_token = full.token_ids[at];
  r.params.stop_token_ids = {stop_token};
  const Output early = engine->generate({r})[0];
  EXPECT_EQ(early.finish_reason, FinishReason::kStop);
  EXPECT_EQ(early.stop_token_id, stop_token);
  EXPECT_LE(early.token_ids.size(), at + 1);
  r.params.min_tokens = 8;
  const Output later = engine->generate({r})[0];
  ASSERT_GE(later.token_ids.size(), 8u);
  for (size_t i = 0; i + 1 < 8; ++i) EXPECT_NE(later.token_ids[i], stop_token) << "masked before min_tokens, at " << i;
  EXPECT_NE(later.token_ids, early.token_ids);
}

TEST_F(EngineBehaviour, NCompletionsShareThePromptAndAreReproducible) {
  const std::string model = tiny_model("llama");
  std::vector<int32_t> prompt(70);  // 4 full blocks of 16 and 6 tokens more
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(300 + 7 * i);
  Request r;
  r.prompt_token_ids = prompt;
  r.params.temperature = 1.0f;
  r.params.seed = 5;
  r.params.max_tokens = 8;
  r.params.ignore_eos = true;
  r.params.n = 4;
  auto engine = make_engine(model, true);
  const std::vector<Output> outs = engine->generate({r});
  ASSERT_EQ(outs.size(), 4u);
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(outs[i].index, i);
    EXPECT_EQ(outs[i].token_ids.size(), 8u);
  }
  // The prompt's full blocks are computed once; each completion computes the prompt's last partial block and
  // its own decode tokens (all but the last generated one).
  EXPECT_EQ(engine->metrics().computed_tokens, 70 + 3 * 6 + 4 * 7);
  EXPECT_EQ(engine->metrics().prompt_tokens, 70) << "one prompt";
  // Each completion has its own random stream: they differ, and a fresh engine, in a batch, draws them again.
  EXPECT_NE(outs[0].token_ids, outs[1].token_ids);
  EXPECT_NE(outs[1].token_ids, outs[2].token_ids);
  Request before = greedy_request("Something else first", 5), after = greedy_request("And after", 3);
  const std::vector<Output> batch = make_engine(model, true)->generate({before, r, after});
  ASSERT_EQ(batch.size(), 6u);
  EXPECT_EQ(batch[0].token_ids.size(), 5u);
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batch[1 + i].index, i);
    EXPECT_EQ(batch[1 + i].request_id, batch[1].request_id);
    EXPECT_EQ(batch[1 + i].token_ids, outs[i].token_ids) << "completion " << i;
  }
  EXPECT_EQ(batch[5].token_ids.size(), 3u);
  // Completion 0 draws what the same request with n = 1 draws.
  r.params.n = 1;
  EXPECT_EQ(make_engine(model, true)->generate({r})[0].token_ids, outs[0].token_ids);
}

TEST_F(EngineBehaviour, AbortStopsEveryCompletionOfARequest) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r = greedy_request("Abort them all", 50);
  r.params.n = 3;
  const int64_t id = engine->add_request(r).value();
  std::map<int32_t, Output> last;
  for (int step = 0; engine->has_unfinished(); ++step) {
    for (Output& o : engine->step()) {
      EXPECT_EQ(o.request_id, id);
      last[o.index] = o;
    }
    if (step == 3) engine->abort(id);
  }
  ASSERT_EQ(last.size(), 3u);
  for (auto& [index, o] : last) {
    EXPECT_EQ(o.finish_reason, FinishReason::kAbort) << index;
    EXPECT_LT(o.token_ids.size(), 50u);
  }
  EXPECT_EQ(engine->metrics().blocks_used, 0);
}

// Logprobs are the raw log-softmax of the logits the token was sampled from, checked in double by hand.
TEST_F(EngineBehaviour, LogprobsAreTheRawLogSoftmax) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "Log probabilities of";
  r.params.temperature = 0.8f;
  r.params.seed = 3;
  r.params.max_tokens = 6;
  r.params.ignore_eos = true;
  r.params.repetition_penalty = 1.3f;  // processors change the choice, never the reported logprobs
  r.params.logprobs = 4;
  r.keep_logits = true;
  const Output o = engine->generate({r})[0];
  const int64_t vocab = engine->model_config().vocab_size;
  ASSERT_EQ(o.logprobs.size(), o.token_ids.size());
  ASSERT_EQ(o.logits.size(), o.token_ids.size() * static_cast<size_t>(vocab));
  for (size_t t = 0; t < o.token_ids.size(); ++t) {
    const float* row = o.logits.data() + t * static_cast<size_t>(vocab);
    double mx = row[0], sum = 0;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(row[i]));
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - mx);
    auto ref = [&](int32_t id) { return static_cast<float>(static_cast<double>(row[id]) - mx - std::log(sum)); };
    const GeneratedTokenLogprobs& lp = o.logprobs[t];
    EXPECT_EQ(lp.chosen.token_id, o.token_ids[t]);
    EXPECT_FLOAT_EQ(lp.chosen.logprob, ref(o.token_ids[t])) << "token " << t;
    ASSERT_EQ(lp.top.size(), 4u);
    for (size_t k = 0; k < 4; ++k) {
      EXPECT_FLOAT_EQ(lp.top[k].logprob, ref(lp.top[k].token_id));
      if (k > 0) {
        EXPECT_GE(lp.top[k - 1].logprob, lp.top[k].logprob);
      }
    }
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; ++i)
      if (row[i] > row[best]) best = i;
    EXPECT_EQ(lp.top[0].token_id, best);
  }
  // Without logprobs asked for, none come back.
  r.params.logprobs.reset();
  EXPECT_TRUE(engine->generate({r})[0].logprobs.empty());
}

// allowed_token_ids keeps every draw inside the set; skip_special_tokens decides whether the text shows the
// special tokens generated (token_ids hold them either way).
TEST_F(EngineBehaviour, AllowedTokenIdsAndSkipSpecialTokens) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "Pick one";
  r.params.temperature = 0;
  r.params.max_tokens = 24;
  r.params.ignore_eos = true;
  const Output free = engine->generate({r})[0];
  ASSERT_EQ(free.token_ids.size(), 24u) << free.error.to_string();
  // The set leaves out every token the unrestricted run chose, greedy or drawn.
  std::set<int32_t> chosen(free.token_ids.begin(), free.token_ids.end());
  std::vector<int32_t> allowed;
  for (int32_t t = 11; allowed.size() < 3; ++t)
    if (!chosen.count(t)) allowed.push_back(t);
  r.params.allowed_token_ids = allowed;
  for (float temperature : {0.0f, 1.0f}) {
    r.params.temperature = temperature;
    r.params.seed = 5;
    const Output out = engine->generate({r})[0];
    ASSERT_EQ(out.token_ids.size(), 24u) << out.error.to_string();
    for (int32_t t : out.token_ids) EXPECT_TRUE(std::count(allowed.begin(), allowed.end(), t)) << t;
  }
  r.params.temperature = 1.0f;
  r.params.allowed_token_ids = std::vector<int32_t>{50256};  // <|endoftext|> only, past EOS
  r.params.max_tokens = 3;
  EXPECT_EQ(engine->generate({r})[0].text, "") << "skipped by default, as vLLM's";
  r.params.skip_special_tokens = false;
  const Output shown = engine->generate({r})[0];
  EXPECT_EQ(shown.token_ids, (std::vector<int32_t>{50256, 50256, 50256}));
  EXPECT_EQ(shown.text, "<|endoftext|><|endoftext|><|endoftext|>");
  r.params.allowed_token_ids = std::vector<int32_t>{7, 1 << 20};
  EXPECT_NE(engine->generate({r})[0].error.message().find("allowed_token_ids: token id 1048576 is outside the vocabulary"),
            std::string::npos);
  // The EOS or stop token that ends a request is not in its text (vLLM's rule), special or not, unless
  // include_stop_str_in_output; token_ids keep it.
  r.params.ignore_eos = false;
  r.params.allowed_token_ids = std::vector<int32_t>{50256};
  Output ended = engine->generate({r})[0];
  EXPECT_EQ(ended.token_ids, (std::vector<int32_t>{50256}));
  EXPECT_EQ(ended.finish_reason, FinishReason::kStop);
  EXPECT_EQ(ended.text, "") << "a chat reply would have ended in its <|im_end|>";
  r.params.include_stop_str_in_output = true;
  EXPECT_EQ(engine->generate({r})[0].text, "<|endoftext|>");
  r.params.allowed_token_ids = std::vector<int32_t>{13};  // "."
  r.params.stop_token_ids = {13};
  EXPECT_EQ(engine->generate({r})[0].text, ".");
  r.params.include_stop_str_in_output = false;
  ended = engine->generate({r})[0];
  EXPECT_EQ(ended.token_ids, (std::vector<int32_t>{13}));
  EXPECT_EQ(ended.stop_token_id, 13);
  EXPECT_EQ(ended.text, "");
  // Only EOS and stop tokens allowed, and min_tokens forbids them at first: nothing could be drawn (token 0 was).
  r.params.min_tokens = 2;
  r.params.allowed_token_ids = std::vector<int32_t>{50256, 13};
  EXPECT_NE(engine->generate({r})[0].error.message().find("allowed_token_ids holds only end-of-sequence and stop tokens"),
            std::string::npos);
  r.params.ignore_eos = true;  // EOS may be drawn then
  EXPECT_EQ(engine->generate({r})[0].token_ids[0], 50256);
}

// bad_words: a two-token phrase the unrestricted greedy run generates is not generated. The run is the same up to
// the token that would complete the phrase, and differs there.
TEST_F(EngineBehaviour, BadWordsAreNotGenerated) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  const Tokenizer& tok = engine->tokenizer();
  auto encode = [&](const std::string& text) { return tok.encode(text, /*add_special=*/false); };
  Request r;
  r.prompt = "Say something";
  r.params.temperature = 0;
  r.params.max_tokens = 32;
  r.params.ignore_eos = true;
  const Output free = engine->generate({r})[0];
  ASSERT_EQ(free.token_ids.size(), 32u) << free.error.to_string();
  // Where the generated tokens `out` hold one of `words`, the index of the last token of the first such place.
  auto first_bad = [](const std::vector<int32_t>& out, const std::vector<std::vector<int32_t>>& words) -> size_t {
    for (size_t end = 0; end < out.size(); ++end)
      for (const std::vector<int32_t>& w : words)
        if (w.size() <= end + 1 && std::equal(w.begin(), w.end(), out.begin() + static_cast<std::ptrdiff_t>(end + 1 - w.size())))
          return end;
    return out.size();
  };
  // A phrase of two generated tokens whose text tokenizes back to them (alone or after a space).
  std::string phrase;
  std::vector<std::vector<int32_t>> banned;
  for (size_t i = 1; i + 1 < free.token_ids.size() && phrase.empty(); ++i) {
    const std::vector<int32_t> pair = {free.token_ids[i], free.token_ids[i + 1]};
    const std::string text = tok.decode(pair);
    auto words = bad_word_tokens({text}, encode);
    if (bad_word_text(text).empty() || std::find(words.begin(), words.end(), pair) == words.end()) continue;
    phrase = text;
    banned = words;
  }
  ASSERT_FALSE(phrase.empty()) << "no two generated tokens that tokenize back to themselves";
  const size_t at = first_bad(free.token_ids, banned);
  ASSERT_LT(at, free.token_ids.size());
  r.params.bad_words = {phrase};
  const Output out = engine->generate({r})[0];
  ASSERT_EQ(out.token_ids.size(), 32u) << out.error.to_string();
  EXPECT_EQ(first_bad(out.token_ids, banned), out.token_ids.size()) << "'" << phrase << "' was generated";
  EXPECT_TRUE(std::equal(free.token_ids.begin(), free.token_ids.begin() + static_cast<std::ptrdiff_t>(at),
                         out.token_ids.begin()))
      << "the runs differ before the banned phrase";
  EXPECT_NE(out.token_ids[at], free.token_ids[at]);
  // A one-token word is never generated; with only that token allowed, nothing can be: the request ends with an
  // error that says why, after the tokens it had.
  r.prompt = "Say something";
  const std::string one = tok.decode({free.token_ids[0]});
  r.params.bad_words = {one};
  const auto one_banned = bad_word_tokens({one}, encode);
  ASSERT_NE(std::find(one_banned.begin(), one_banned.end(), std::vector<int32_t>{free.token_ids[0]}), one_banned.end());
  const Output without_first = engine->generate({r})[0];
  ASSERT_EQ(without_first.token_ids.size(), 32u) << without_first.error.to_string();
  for (int32_t t : without_first.token_ids) EXPECT_NE(t, free.token_ids[0]);
  r.params.allowed_token_ids = std::vector<int32_t>{banned[0][0]};
  r.params.bad_words = {tok.decode({banned[0][0], banned[0][0]})};
  const auto doubled = bad_word_tokens(r.params.bad_words, encode);
  ASSERT_NE(std::find(doubled.begin(), doubled.end(), std::vector<int32_t>{banned[0][0], banned[0][0]}), doubled.end());
  r.params.max_tokens = 4;
  const Output once = engine->generate({r})[0];
  EXPECT_EQ(once.finish_reason, FinishReason::kError);
  EXPECT_EQ(once.token_ids, std::vector<int32_t>{banned[0][0]}) << "one token, then nothing is left";
  EXPECT_NE(once.error.message().find("no token can be generated after 1 tokens"), std::string::npos)
      << once.error.to_string();
  // Bad lists are refused, naming the field.
  r.params.allowed_token_ids.reset();
  r.params.bad_words = {"  "};
  EXPECT_NE(engine->generate({r})[0].error.message().find("bad_words[0] is empty or only whitespace"), std::string::npos);
  r.params.bad_words = {std::string(2000, 'a')};
  EXPECT_NE(engine->generate({r})[0].error.message().find("bytes; at most 1024"), std::string::npos);
  r.params.bad_words.assign(129, "a");
  EXPECT_NE(engine->generate({r})[0].error.message().find("at most 128"), std::string::npos);
  r.params.bad_words.assign(100, "hello");  // alone and after a space: 200 sequences, as vLLM counts them
  EXPECT_NE(engine->generate({r})[0].error.message().find("make 200 token sequences (each word alone and after a "
                                                          "space); at most 128"),
            std::string::npos);
  std::string long_word;
  for (int i = 0; i < 500; ++i) long_word += "a ";
  r.params.bad_words.assign(3, long_word);
  EXPECT_NE(engine->generate({r})[0].error.message().find("tokens (each word alone and after a space); at most 1024"),
            std::string::npos);
  // Every allowed token a one-token bad word: refused before any work, as min_tokens' like case is.
  r.params.bad_words = {one};
  r.params.allowed_token_ids = std::vector<int32_t>{free.token_ids[0]};
  EXPECT_NE(engine->generate({r})[0].error.message().find("every token of allowed_token_ids is a word of bad_words"),
            std::string::npos);
  r.params.allowed_token_ids->push_back(free.token_ids[0] == 13 ? 14 : 13);
  EXPECT_TRUE(engine->generate({r})[0].error.ok());
}

// Whether `text` is a choice, or the start of one.
bool is_choice(const std::vector<std::string>& choices, const std::string& text) {
  return std::find(choices.begin(), choices.end(), text) != choices.end();
}
bool starts_a_choice(const std::vector<std::string>& choices, const std::string& text) {
  return std::any_of(choices.begin(), choices.end(), [&](const std::string& c) { return c.starts_with(text); });
}

// Each token's raw bytes (part of a character, maybe); none for special tokens, which the text leaves out.
std::vector<std::string> raw_pieces(const Engine& engine) {
  const Tokenizer& tok = engine.tokenizer();
  std::vector<std::string> piece(static_cast<size_t>(engine.model_config().vocab_size));
  for (int32_t t = 0; t < static_cast<int32_t>(piece.size()); ++t)
    if (!tok.decode({t}, /*skip_special=*/true).empty()) piece[static_cast<size_t>(t)] = tok.token_piece(t);
  return piece;
}

// A sampled request to batch beside the one under test (whose output must not change).
Request another_sampled_request() {
  Request other;
  other.prompt = "Something else entirely";
  other.params.temperature = 1.0f;
  other.params.max_tokens = 9;
  other.params.seed = 8;
  return other;
}

// choice (vLLM's structured_outputs.choice): the text is one of the choices. Greedy, each token is the first
// likeliest of those that keep the text the start of a choice (and EOS where the text is a choice that another one
// continues), found here by brute force over the vocabulary against the raw logits.
TEST_F(EngineBehaviour, ChoiceTextIsOneOfTheChoicesAndEachTokenTheLikeliestThatKeepsItSo) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  const int64_t vocab = engine->model_config().vocab_size;
  const std::vector<std::string> piece = raw_pieces(*engine);
  const std::vector<std::string> choices = {"positive", "negative", "neutral", "mixed", "mixed feelings", "n/a"};
  const std::vector<std::string> characters = {"caf\xc3\xa9 cr\xc3\xa8me", "\xe6\x97\xa5\xe6\x9c\xac"};  // split by tokens
  Request r;
  r.params.temperature = 0;
  r.params.max_tokens = 32;
  r.keep_logits = true;
  for (const auto& [prompt, set] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"Review: the soup was cold. Sentiment:", choices}, {"Label:", choices}, {"x", choices},
           {"Label:", characters}}) {
    r.prompt = prompt;
    r.params.choice = set;
    const Output out = engine->generate({r})[0];
    ASSERT_TRUE(out.error.ok()) << out.error.to_string();
    EXPECT_TRUE(is_choice(set, out.text)) << out.text;
    EXPECT_EQ(out.finish_reason, FinishReason::kStop);
    ASSERT_EQ(out.logits.size(), out.token_ids.size() * static_cast<size_t>(vocab));
    std::string text;
    for (size_t i = 0; i < out.token_ids.size(); ++i) {
      const float* row = out.logits.data() + i * static_cast<size_t>(vocab);
      int32_t best = -1;
      for (int32_t t = 0; t < vocab; ++t) {
        const std::string& p = piece[static_cast<size_t>(t)];
        const bool ends = t == 50256 && is_choice(set, text);  // another choice continues it, or it would be done
        if (!ends && (p.empty() || !starts_a_choice(set, text + p))) continue;
        if (best < 0 || row[t] > row[best]) best = t;
      }
      EXPECT_EQ(out.token_ids[i], best) << "token " << i << " of \"" << out.text << "\"";
      text += piece[static_cast<size_t>(out.token_ids[i])];
    }
    EXPECT_EQ(text, out.text);
  }
  // Sampled, n = 16: every completion is a choice, the same alone and beside another request.
  r.params.choice = choices;
  r.keep_logits = false;
  r.prompt = "Label:";
  r.params.temperature = 1.5f;
  r.params.n = 16;
  r.params.seed = 7;
  const Request other = another_sampled_request();
  const std::vector<Output> alone = engine->generate({r});
  const std::vector<Output> batched = engine->generate({other, r});
  ASSERT_EQ(alone.size(), 16u);
  ASSERT_EQ(batched.size(), 17u);
  std::set<std::string> seen;
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_TRUE(is_choice(choices, alone[i].text)) << alone[i].text;
    EXPECT_EQ(alone[i].finish_reason, FinishReason::kStop);
    EXPECT_EQ(alone[i].token_ids, batched[i + 1].token_ids);
    seen.insert(alone[i].text);
  }
  EXPECT_GE(seen.size(), 2u) << "a draw at temperature 1.5 over a random model picks more than one choice";
}

TEST_F(EngineBehaviour, ChoiceEndsWithEosWhereAnotherGoesOnAndOtherStopsStillApply) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  Request r;
  r.prompt = "Answer:";
  r.params.temperature = 0;
  r.params.max_tokens = 16;
  r.params.choice = std::vector<std::string>{"yes", "yes, sir"};
  r.params.logit_bias[50256] = 100;  // EOS, wherever it may be drawn
  Output out = engine->generate({r})[0];
  EXPECT_EQ(out.text, "yes");
  EXPECT_EQ(out.token_ids.back(), 50256);
  EXPECT_EQ(out.finish_reason, FinishReason::kStop);
  r.params.ignore_eos = true;  // EOS does not end it: the longer choice is the only way on
  out = engine->generate({r})[0];
  EXPECT_EQ(out.text, "yes, sir");
  EXPECT_EQ(out.finish_reason, FinishReason::kStop);
  // A choice cut short by max_tokens ends with length; a stop string inside a choice still stops it.
  r.params.ignore_eos = false;
  r.params.logit_bias.clear();
  r.params.choice = std::vector<std::string>{"mixed feelings about it"};
  r.params.max_tokens = 2;
  out = engine->generate({r})[0];
  EXPECT_EQ(out.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(std::string("mixed feelings about it").starts_with(out.text) && !out.text.empty()) << out.text;
  // A choice completed by the last token allowed is complete (it said length).
  r.params.choice = std::vector<std::string>{"ab"};
  r.params.allowed_token_ids = std::vector<int32_t>{64, 65};  // "a", "b"
  out = engine->generate({r})[0];
  EXPECT_EQ(out.text, "ab");
  EXPECT_EQ(out.finish_reason, FinishReason::kStop);
  r.params.allowed_token_ids.reset();
  r.params.choice = std::vector<std::string>{"mixed feelings about it"};
  r.params.max_tokens = 16;
  r.params.stop = {"feel"};
  out = engine->generate({r})[0];
  EXPECT_EQ(out.text, "mixed ");
  EXPECT_EQ(out.stop_str, "feel");
  // Bad choices fail the request alone, with the reason.
  auto error_of = [&](SamplingParams p) {
    Request bad = r;
    bad.params = p;
    return engine->generate({bad})[0].error.message();
  };
  SamplingParams p;
  p.choice = std::vector<std::string>{};
  EXPECT_NE(error_of(p).find("choice must hold at least one string"), std::string::npos) << error_of(p);
  p.choice = std::vector<std::string>{"a", ""};
  EXPECT_NE(error_of(p).find("choice[1] is empty"), std::string::npos) << error_of(p);
  p.choice = std::vector<std::string>{"caf\xc3"};
  EXPECT_NE(error_of(p).find("choice[0] is not valid UTF-8"), std::string::npos) << error_of(p);
  p.choice = std::vector<std::string>{"a"};
  p.min_tokens = 1;
  EXPECT_NE(error_of(p).find("min_tokens (1) cannot be combined with choice"), std::string::npos) << error_of(p);
  p.min_tokens = 0;
  p.allowed_token_ids = std::vector<int32_t>{13};  // "." starts no choice: refused before any work
  EXPECT_NE(error_of(p).find("allowed_token_ids holds no token that can begin one of the choices"),
            std::string::npos) << error_of(p);
  p.allowed_token_ids = std::vector<int32_t>{13, 64};  // "a" does, but the next draw has only "."
  p.choice = std::vector<std::string>{"ab"};
  EXPECT_NE(error_of(p).find("no token can be generated after 1 tokens: allowed_token_ids, choice or JSON, "
                             "bad_words and min_tokens together mask"),
            std::string::npos) << error_of(p);
}

// Preempted and recomputed, a completion keeps where it stands in its choices: the same tokens as with room.
TEST_F(EngineBehaviour, ChoiceSurvivesPreemption) {
  const std::string model = tiny_model("gpt2");
  auto roomy = make_engine(model, true);
  // Room for 6 blocks of 16 tokens: each completion needs 3 or 4, so the 8 cannot run together.
  auto tight = make_engine(model, true, roomy->metrics().kv_bytes_per_block * 6);
  const std::vector<std::string> choices = {
      "the soup was cold and the waiter never came back to our table, so we left",
      "everything was wonderful from the bread to the dessert and the coffee after it",
      "mixed feelings: the view was lovely but the food was only average at best"};
  Request r;
  r.prompt = "Review summary:";
  r.params.choice = choices;
  r.params.temperature = 1.0f;
  r.params.seed = 12;
  r.params.n = 8;
  r.params.max_tokens = 64;
  const std::vector<Output> want = roomy->generate({r});
  const std::vector<Output> got = tight->generate({r});
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(is_choice(choices, got[i].text)) << got[i].text << got[i].error.to_string();
    EXPECT_EQ(got[i].token_ids, want[i].token_ids);
  }
  EXPECT_GT(tight->metrics().preemptions, 0);
}

// A SentencePiece model: a completion of BOS alone drops its first token's leading space, and the choice is
// matched on the text as it is shown.
TEST(EngineChoice, SentencePieceLeadingSpace) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto engine = make_engine(testing::shared_dir() + "/models/stories260K/stories260K.gguf", true);
  ASSERT_NE(engine, nullptr);
  const std::vector<std::string> choices = {"Once upon a time", "Lily", "The cat sat"};
  const Tokenizer& tok = engine->tokenizer();
  for (const std::string prompt : {"", "Once upon a time, there was"}) {
    int spaced_first = 0;  // completions whose first token is "▁..." (its space dropped after BOS alone)
    Request r;
    r.prompt = prompt;
    r.params.choice = choices;
    r.params.max_tokens = 32;
    r.params.temperature = 1.0f;
    r.params.n = 12;
    r.params.seed = 3;
    for (const Output& o : engine->generate({r})) {
      EXPECT_TRUE(is_choice(choices, o.text)) << "prompt \"" << prompt << "\": " << o.text << " " << o.error.to_string();
      EXPECT_EQ(o.finish_reason, FinishReason::kStop);
      if (!o.token_ids.empty() && tok.token_piece(o.token_ids[0]).starts_with(" ")) ++spaced_first;
    }
    // The model starts a story with "▁Once", "▁Lily", "▁The": after BOS alone these spell the choices.
    if (prompt.empty()) {
      EXPECT_GT(spaced_first, 0);
    }
  }
  // A choice that starts with a space, after BOS alone: "▁" (its space dropped, it writes nothing) then "▁Lily".
  Request r;
  r.prompt = "";
  r.params.choice = std::vector<std::string>{" Lily"};
  r.params.temperature = 0;
  const Output o = engine->generate({r})[0];
  EXPECT_EQ(o.text, " Lily") << o.error.to_string();
  EXPECT_EQ(o.finish_reason, FinishReason::kStop);
}

// Whether `text` is one whole JSON object, by nlohmann's strict parser.
bool is_json_object(const std::string& text) {
  return nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object();
}
bool starts_json_object(const std::string& text, bool whitespace = true) {
  JsonPrefix p(whitespace);
  return p.feed(text);
}

// json_object (OpenAI's response_format json_object): greedy, each token is the first likeliest of those whose
// bytes keep the text the start of a JSON object, found here by brute force over the vocabulary against the raw
// logits; the output ends (stop) when the object closes, and a parser takes it.
TEST_F(EngineBehaviour, JsonObjectTextIsJsonAndEachTokenTheLikeliestThatKeepsItSo) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  const int64_t vocab = engine->model_config().vocab_size;
  const std::vector<std::string> piece = raw_pieces(*engine);
  Request r;
  r.params.temperature = 0;
  r.params.max_tokens = 32;
  r.params.json_object = true;
  r.keep_logits = true;
  for (const std::string prompt : {"Answer in JSON:", "x"}) {
    for (bool compact : {false, true}) {
      r.prompt = prompt;
      r.params.disable_any_whitespace = compact;
      const Output out = engine->generate({r})[0];
      ASSERT_TRUE(out.error.ok()) << out.error.to_string();
      ASSERT_EQ(out.logits.size(), out.token_ids.size() * static_cast<size_t>(vocab));
      std::string text;
      for (size_t i = 0; i < out.token_ids.size(); ++i) {
        const float* row = out.logits.data() + i * static_cast<size_t>(vocab);
        int32_t best = -1;
        for (int32_t t = 0; t < vocab; ++t) {
          if (best >= 0 && row[t] <= row[best]) continue;  // the first of the largest wins
          const std::string& p = piece[static_cast<size_t>(t)];
          if (!p.empty() && starts_json_object(text + p, !compact)) best = t;
        }
        ASSERT_EQ(out.token_ids[i], best) << "token " << i << " after \"" << text << "\"";
        text += piece[static_cast<size_t>(out.token_ids[i])];
      }
      EXPECT_EQ(text, out.text);
      EXPECT_EQ(out.finish_reason, out.token_ids.size() < 32 ? FinishReason::kStop : FinishReason::kLength);
      if (out.finish_reason == FinishReason::kStop) EXPECT_TRUE(is_json_object(out.text)) << out.text;
    }
  }
  // It ends at the brace that closes the object: with "{" and "}" the only tokens allowed, "{}".
  r.prompt = "x";
  r.params.allowed_token_ids = std::vector<int32_t>{90, 92};
  for (int32_t max_tokens : {32, 2}) {  // also when the brace is the last token allowed (it said length)
    r.params.max_tokens = max_tokens;
    const Output out = engine->generate({r})[0];
    EXPECT_EQ(out.text, "{}");
    EXPECT_EQ(out.finish_reason, FinishReason::kStop);
  }
}

// Sampled, n = 16: every completion is the start of a JSON object (whole ones parse), the same alone and beside
// another request, and across a preemption.
TEST_F(EngineBehaviour, JsonObjectSampledIsTheSameAloneInABatchAndPreempted) {
  const std::string model = tiny_model("gpt2");
  auto engine = make_engine(model, true);
  auto tight = make_engine(model, true, engine->metrics().kv_bytes_per_block * 5);
  Request r;
  r.prompt = "Reply with a JSON object:";
  r.params.json_object = true;
  r.params.temperature = 1.2f;
  r.params.n = 16;
  r.params.seed = 5;
  r.params.max_tokens = 64;
  // A few tokens only ({ } [ ] " : , 1 a), so that a random model closes strings and objects as often as not.
  r.params.allowed_token_ids = std::vector<int32_t>{90, 92, 58, 60, 1, 25, 11, 16, 64};
  r.params.logit_bias = {{92, -8.0f}};  // "}" less likely, so that the objects hold something
  const Request other = another_sampled_request();
  const std::vector<Output> alone = engine->generate({r});
  const std::vector<Output> batched = engine->generate({other, r});
  const std::vector<Output> squeezed = tight->generate({r});
  ASSERT_EQ(alone.size(), 16u);
  ASSERT_EQ(batched.size(), 17u);
  ASSERT_EQ(squeezed.size(), 16u);
  int whole = 0;
  for (size_t i = 0; i < alone.size(); ++i) {
    ASSERT_TRUE(alone[i].error.ok()) << alone[i].error.to_string();
    EXPECT_TRUE(starts_json_object(alone[i].text)) << alone[i].text;
    if (alone[i].finish_reason == FinishReason::kStop) {
      EXPECT_TRUE(is_json_object(alone[i].text)) << alone[i].text;
      ++whole;
    }
    EXPECT_EQ(alone[i].token_ids, batched[i + 1].token_ids);
    EXPECT_EQ(alone[i].token_ids, squeezed[i].token_ids);
  }
  EXPECT_GE(whole, 4);
  EXPECT_GT(tight->metrics().preemptions, 0);
  // Refused with the reason: with choice, with min_tokens.
  r.params.choice = std::vector<std::string>{"{}"};
  EXPECT_NE(engine->generate({r})[0].error.message().find("json_object and choice cannot both be given"),
            std::string::npos);
  r.params.choice.reset();
  r.params.min_tokens = 2;
  EXPECT_NE(engine->generate({r})[0].error.message().find("min_tokens (2) cannot be combined with json_object"),
            std::string::npos);
  r.params.min_tokens = 0;
  r.params.allowed_token_ids = std::vector<int32_t>{64, 1};  // "a", '"': neither begins an object
  EXPECT_NE(engine->generate({r})[0].error.message().find("allowed_token_ids holds no token that can begin a JSON "
                                                          "object"),
            std::string::npos);
}

// A SentencePiece model after BOS alone: the first token's dropped space leaves compact JSON valid.
TEST(EngineJsonObject, SentencePieceLeadingSpace) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto engine = make_engine(testing::shared_dir() + "/models/stories260K/stories260K.gguf", true);
  ASSERT_NE(engine, nullptr);
  for (const std::string prompt : {"", "Once upon a time"}) {
    Request r;
    r.prompt = prompt;
    r.params.json_object = true;
    r.params.disable_any_whitespace = true;
    r.params.max_tokens = 40;
    r.params.temperature = 1.0f;
    r.params.n = 8;
    r.params.seed = 3;
    for (const Output& o : engine->generate({r})) {
      ASSERT_TRUE(o.error.ok()) << o.error.to_string();
      EXPECT_TRUE(starts_json_object(o.text, false)) << "prompt \"" << prompt << "\": " << o.text;
      EXPECT_TRUE(o.text.starts_with("{")) << o.text;
      if (o.finish_reason == FinishReason::kStop) EXPECT_TRUE(is_json_object(o.text)) << o.text;
    }
  }
}

// Every processor at once stays a pure function of the request: the same tokens, text and logprobs alone
// and in a batch beside other sampled requests (different prompts, seeds and processors).
TEST_F(EngineBehaviour, EveryProcessorTogetherIsTheSameAloneAndInABatch) {
  const std::string model = tiny_model("gpt2");
  Request r;
  r.prompt = "All the knobs at once";
  r.params.temperature = 0.9f;
  r.params.top_p = 0.95f;
  r.params.min_p = 0.02f;
  r.params.presence_penalty = 0.4f;
  r.params.frequency_penalty = 0.3f;
  r.params.repetition_penalty = 1.2f;
  r.params.logit_bias = {{11, -5.0f}, {13, 2.0f}};
  r.params.min_tokens = 4;
  r.params.stop_token_ids = {50256};
  r.params.allowed_token_ids.emplace();
  for (int32_t t = 0; t < 20000; t += 3) r.params.allowed_token_ids->push_back(t);  // 11 is not in it, 13 is
  r.params.allowed_token_ids->push_back(50256);
  r.params.bad_words = {" the", "and so on"};
  r.params.seed = 77;
  r.params.max_tokens = 14;
  r.params.logprobs = 3;
  r.params.n = 2;
  const std::vector<Output> alone = make_engine(model, true)->generate({r});
  std::vector<Request> batch;
  for (int i = 0; i < 4; ++i) {
    Request other;
    other.prompt = "Other request " + std::to_string(i);
    other.params.temperature = 1.0f;
    other.params.seed = 500 + i;
    other.params.max_tokens = 5 + i;
    other.params.frequency_penalty = 0.1f * static_cast<float>(i);
    other.params.top_k = i == 2 ? 40 : 0;
    batch.push_back(other);
  }
  batch.insert(batch.begin() + 2, r);
  const std::vector<Output> together = make_engine(model, true, int64_t{64} << 20, 48)->generate(batch);
  ASSERT_EQ(alone.size(), 2u);
  ASSERT_EQ(together.size(), 6u);
  for (size_t c = 0; c < 2; ++c) {
    const Output& a = alone[c];
    const Output& b = together[2 + c];
    EXPECT_EQ(b.index, static_cast<int32_t>(c));
    EXPECT_EQ(a.token_ids, b.token_ids) << "completion " << c;
    EXPECT_EQ(a.text, b.text);
    ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
    for (size_t t = 0; t < a.logprobs.size(); ++t) {
      EXPECT_EQ(a.logprobs[t].chosen.logprob, b.logprobs[t].chosen.logprob);
      ASSERT_EQ(a.logprobs[t].top.size(), 3u);
      for (size_t k = 0; k < 3; ++k) EXPECT_EQ(a.logprobs[t].top[k].token_id, b.logprobs[t].top[k].token_id);
    }
    EXPECT_GE(a.token_ids.size(), 4u) << "min_tokens";
  }
}

// A block's cost in the KV budget is its K/V and its bookkeeping. With micro Llama's 64-byte K/V row (one layer,
// one KV head, head_dim 8) and blocks of one token the bookkeeping is the larger part: counted, the cache stays
// within its budget, and start-up writes nothing per block (it built 16 million blocks' records, 1.5 GB, before).
TEST_F(EngineBehaviour, KvBudgetCountsEveryBlocksBookkeeping) {
  const std::string& model = tiny_model("llama", "micro");
  const int64_t budget = int64_t{1} << 30;
  for (const bool prefix_cache : {true, false}) {
    SCOPED_TRACE(prefix_cache ? "prefix caching" : "no prefix caching");
    const int64_t before = testing::resident_bytes();
    auto engine = make_engine(model, prefix_cache, budget, 512, /*block_size=*/1);
    ASSERT_TRUE(engine);
    if (before >= 0) {  // the model's weights and the tokenizer take a few MB
      EXPECT_LT(testing::resident_bytes() - before, int64_t{128} << 20);
    }
    const EngineMetrics m = engine->metrics();
    EXPECT_GT(m.kv_bytes_per_block, 2 * m.kv_bytes_per_token);  // 64 bytes of K/V, more of bookkeeping
    EXPECT_EQ(m.blocks_total, budget / m.kv_bytes_per_block);
    EXPECT_EQ(m.kv_cache_bytes, int64_t{m.blocks_total} * m.kv_bytes_per_block);
    EXPECT_LE(m.kv_cache_bytes, budget);
    const auto outs = engine->generate({greedy_request("Hello", 4)});
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].finish_reason, FinishReason::kLength) << outs[0].error.to_string();
    EXPECT_EQ(outs[0].token_ids, make_engine(model, prefix_cache)->generate({greedy_request("Hello", 4)})[0].token_ids);
  }
}

// A byte budget more than the machine's memory is refused, naming the flag: its pages are only reserved, so it
// would be accepted and the process killed once the cache filled.
TEST_F(EngineBehaviour, KvBudgetLargerThanTheMachineIsRefused) {
  EngineConfig c;
  c.model_path = tiny_model("llama", "micro");
  c.kv_cache_bytes = int64_t{1} << 50;  // 1 PiB
  auto e = Engine::create(c);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("more than this machine's memory"), std::string::npos) << e.status().message();
  EXPECT_NE(e.status().message().find("--kv-cache-memory"), std::string::npos) << e.status().message();
}

// A request that can never fit the whole KV cache is refused when it is added (the server answers 400, not
// "busy, retry later"), and in a batch it fails alone.
TEST_F(EngineBehaviour, RequestsLargerThanTheWholeKvCacheAreRefusedWhenAdded) {
  const std::string model = tiny_model("llama");
  auto probe = make_engine(model, true);
  const int64_t per_block = probe->metrics().kv_bytes_per_block;
  auto engine = make_engine(model, true, 4 * per_block);  // 4 blocks of 16 tokens
  ASSERT_EQ(int64_t{engine->metrics().blocks_total} * 16, 64);
  Request big = greedy_request("Hello", 100);
  auto added = engine->add_request(big);
  ASSERT_FALSE(added.ok());
  EXPECT_EQ(added.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(added.status().message().find("but the whole cache holds 64; lower max_tokens"), std::string::npos)
      << added.status().message();
  EXPECT_FALSE(engine->has_unfinished());
  Request long_prompt;
  long_prompt.prompt_token_ids.assign(70, 5);
  long_prompt.params.max_tokens = 1;
  EXPECT_NE(engine->add_request(long_prompt).status().message().find("shorten the prompt"), std::string::npos);
  const std::vector<int32_t> long_prefix(70, 5);
  EXPECT_NE(engine->cache_prefix(long_prefix).status().message().find("the prefix has 70 tokens but the whole KV cache"),
            std::string::npos);
  // Exactly the cache: the last sampled token is never stored, so a 64-token prompt and one more fit (it was
  // refused as needing 65); a second generated token needs a 65th slot.
  Request exact;
  exact.prompt_token_ids.assign(64, 5);
  exact.params.max_tokens = 2;
  EXPECT_NE(engine->add_request(exact).status().message().find("needs 65 tokens of KV cache"), std::string::npos);
  exact.params.max_tokens = 1;
  auto fresh_exact = make_engine(model, true, 4 * per_block);
  const Output one = fresh_exact->generate({exact})[0];
  EXPECT_EQ(one.finish_reason, FinishReason::kLength) << one.error.to_string();
  EXPECT_EQ(one.token_ids.size(), 1u);
  // The refusals took no request id: an unseeded sampled request draws the seed it draws on a fresh engine.
  Request sampled = greedy_request("Once", 8);
  sampled.params.temperature = 1.0f;
  auto fresh = make_engine(model, true, 4 * per_block);
  EXPECT_EQ(engine->generate({sampled})[0].token_ids, fresh->generate({sampled})[0].token_ids);
  const auto outs = engine->generate({greedy_request("Hello", 10), big, greedy_request("Hi", 10)});
  EXPECT_EQ(outs[0].token_ids.size(), 10u);
  EXPECT_EQ(outs[1].finish_reason, FinishReason::kError);
  EXPECT_EQ(outs[2].token_ids.size(), 10u);
}

// max_model_len(): the configured length, or the model's context where none is set; generation stops there.
TEST_F(EngineBehaviour, MaxModelLenIsTheConfiguredLengthOrTheModelsContext) {
  const std::string model = tiny_model("llama");
  auto whole = make_engine(model, true);
  EXPECT_EQ(whole->max_model_len(), whole->model_config().max_context);
  EngineConfig c = whole->config();
  c.max_model_len = 12;
  auto short_engine = Engine::create(c);
  ASSERT_TRUE(short_engine.ok()) << short_engine.status().to_string();
  EXPECT_EQ((*short_engine)->max_model_len(), 12);
  Request r;
  r.prompt_token_ids.assign(5, 7);
  r.params.max_tokens = 100;
  r.params.ignore_eos = true;
  const Output out = (*short_engine)->generate({r})[0];
  EXPECT_EQ(out.token_ids.size(), 7u) << "prompt + generated = max_model_len";
  EXPECT_EQ(out.finish_reason, FinishReason::kLength);
}

// Overwrites model.safetensors' F32 tensor `name` (in place: an 8-byte header length, the JSON header, the data)
// with `value` in every element.
void fill_tensor(const std::string& model, const std::string& name, float value) {
  std::fstream f(model + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  f.read(header.data(), static_cast<std::streamsize>(header_len));
  const auto entry = nlohmann::json::parse(header).at(name);
  ASSERT_EQ(entry.at("dtype"), "F32");
  const uint64_t begin = entry.at("data_offsets")[0], end = entry.at("data_offsets")[1];
  const std::vector<float> values((end - begin) / 4, value);
  f.seekp(static_cast<std::streamoff>(8 + header_len + begin));
  f.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(end - begin));
}

// Finite weights that overflow give infinite or NaN logits: the request fails with a message naming the cause
// (greedy sampling picked token 0 forever, and logprobs were NaN).
TEST_F(EngineBehaviour, NonFiniteLogitsFailTheRequest) {
  const std::string model = testing::temp_dir("engine-overflow");
  std::filesystem::copy(tiny_model("llama"), model, std::filesystem::copy_options::recursive);
  fill_tensor(model, "model.norm.weight", 3e38f);  // finite; the normed activations overflow to infinity
  auto engine = make_engine(model, true);
  const Output out = engine->generate({greedy_request("Hello", 4)})[0];
  EXPECT_EQ(out.finish_reason, FinishReason::kError);
  EXPECT_NE(out.error.message().find("the model computed a logit of "), std::string::npos) << out.error.message();
  EXPECT_TRUE(out.token_ids.empty());
  EXPECT_FALSE(engine->has_unfinished());
  // Prompt logprobs come from the prompt's rows, which are checked as well: the request fails at its first
  // chunk, not after computing the whole prompt (and its logprobs were NaN).
  auto chunked = make_engine(model, true, int64_t{64} << 20, /*max_batched_tokens=*/16);
  Request r;
  r.prompt_token_ids.assign(40, 300);
  r.params.max_tokens = 2;
  r.params.prompt_logprobs = 1;
  const Output failed = chunked->generate({r})[0];
  EXPECT_EQ(failed.finish_reason, FinishReason::kError);
  EXPECT_NE(failed.error.message().find("the model computed a logit of "), std::string::npos) << failed.error.message();
  EXPECT_EQ(chunked->metrics().computed_tokens, 16) << "stopped after the first chunk";
  EXPECT_TRUE(failed.prompt_logprobs.empty());
}

// NaN or infinite weights loaded and ran: garbage text, or token 0 for ever. They are refused at load, naming
// the tensor.
TEST_F(EngineBehaviour, NonFiniteWeightsAreRefusedAtLoad) {
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    const std::string model = testing::temp_dir("engine-nan-weights");
    std::filesystem::copy(tiny_model("llama"), model, std::filesystem::copy_options::recursive);
    fill_tensor(model, "model.layers.1.self_attn.q_proj.weight", bad);
    EngineConfig c;
    c.model_path = model;
    const Status st = Engine::create(c).status();
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
    EXPECT_NE(st.message().find("tensor 'model.layers.1.self_attn.q_proj.weight' holds a NaN or infinite value "
                                "(element 0)"),
              std::string::npos)
        << st.to_string();
  }
}

// Where the tokenizer bounds no token's length, text over 256 bytes per token of the context (at least 1 MiB)
// is refused before tokenizing: tinystories-656k took 6.6 s on a 6 MB prompt and a minute on 60 MB to say so.
TEST(ContextLimit, TextIsCappedWhereTheTokenizerGivesNoBound) {
  EXPECT_TRUE(check_prompt_text_length(1 << 20, 0, 512).ok());
  const Status over = check_prompt_text_length((1 << 20) + 1, 0, 512);
  EXPECT_EQ(over.code(), StatusCode::kOutOfRange);
  EXPECT_NE(over.message().find("over 1048576 bytes"), std::string::npos) << over.message();
  EXPECT_TRUE(check_prompt_text_length(256 * 8192, 0, 8192).ok());
  EXPECT_FALSE(check_prompt_text_length(256 * 8192 + 1, 0, 8192).ok());
  // With a bound, the bound decides.
  EXPECT_TRUE(check_prompt_text_length(size_t{10} << 20, 100, 512).ok());
  EXPECT_FALSE(check_prompt_text_length(size_t{10} << 20, 512, 512).ok());
}

// truncate_prompt_tokens keeps a prompt's last tokens; text up to 64 contexts may be sent to be cut.
TEST(ContextLimit, TruncationKeepsTheLastTokens) {
  std::vector<int32_t> t = {1, 2, 3, 4, 5};
  EXPECT_TRUE(truncate_prompt(t, std::nullopt, 8).ok());
  EXPECT_EQ(t.size(), 5u);
  EXPECT_TRUE(truncate_prompt(t, 3, 8).ok());
  EXPECT_EQ(t, (std::vector<int32_t>{3, 4, 5}));
  EXPECT_TRUE(truncate_prompt(t, 7, 8).ok());
  EXPECT_EQ(t.size(), 3u) << "a shorter prompt is left whole";
  std::vector<int32_t> u = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_TRUE(truncate_prompt(u, -1, 8).ok());
  EXPECT_EQ(u, (std::vector<int32_t>{3, 4, 5, 6, 7, 8, 9})) << "-1: the context less one token to generate";
  EXPECT_TRUE(truncate_prompt(u, 8, 8).ok()) << "the whole context may be asked for, as vLLM's";
  const Status over = truncate_prompt(u, 9, 8);
  EXPECT_EQ(over.code(), StatusCode::kOutOfRange);
  EXPECT_NE(over.message().find("use at most 7 (room for one generated token), or -1"), std::string::npos)
      << over.message();
  // The BOS a tokenizer put first stays first, as a Hugging Face tokenizer truncating on the left keeps it.
  std::vector<int32_t> b = {1, 10, 11, 12, 13};
  bool cut = false;
  EXPECT_TRUE(truncate_prompt(b, 3, 8, /*bos=*/1, &cut).ok());
  EXPECT_EQ(b, (std::vector<int32_t>{1, 12, 13}));
  EXPECT_TRUE(cut);
  EXPECT_TRUE(truncate_prompt(b, 3, 8, 1, &cut).ok());
  EXPECT_FALSE(cut) << "nothing more to cut";
  std::vector<int32_t> no_bos = {10, 11, 12, 13};
  EXPECT_TRUE(truncate_prompt(no_bos, 2, 8, /*bos=*/1).ok());
  EXPECT_EQ(no_bos, (std::vector<int32_t>{12, 13})) << "token ids that do not start with BOS are cut plainly";
  EXPECT_FALSE(check_prompt_text_length(size_t{10} << 20, 600, 512).ok());
  EXPECT_TRUE(check_prompt_text_length(size_t{10} << 20, 600, 512, /*truncating=*/true).ok());
  const Status huge = check_prompt_text_length(size_t{100} << 20, 64 * 512, 512, true);
  EXPECT_NE(huge.message().find("with truncate_prompt_tokens, text of up to 64 contexts"), std::string::npos)
      << huge.message();
}

TEST_F(EngineBehaviour, TruncatePromptTokensRunsTheLastTokensAsTheirOwnPrompt) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request whole = greedy_request("", 4);
  for (int i = 0; i < 700; ++i) whole.prompt_token_ids.push_back(300 + i % 97);  // over the context of 512
  Request cut = whole;
  cut.params.truncate_prompt_tokens = 100;
  Request last = greedy_request("", 4);
  last.prompt_token_ids.assign(whole.prompt_token_ids.end() - 100, whole.prompt_token_ids.end());
  const std::vector<Output> outs = engine->generate({whole, cut, last});
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kError) << "700 tokens do not fit";
  EXPECT_EQ(outs[1].prompt_token_ids, last.prompt_token_ids);
  EXPECT_EQ(outs[1].token_ids, outs[2].token_ids);
  EXPECT_EQ(outs[1].token_ids.size(), 4u);
  cut.params.truncate_prompt_tokens = -1;
  EXPECT_EQ(engine->generate({cut})[0].prompt_token_ids.size(), 511u);
  cut.params.truncate_prompt_tokens = 0;
  EXPECT_NE(engine->generate({cut})[0].error.message().find("truncate_prompt_tokens must be -1"), std::string::npos);
  // Text over the context is taken when it is to be cut.
  Request text = greedy_request("", 2);
  for (int i = 0; i < 400; ++i) text.prompt += "once upon a time ";
  EXPECT_EQ(engine->generate({text})[0].finish_reason, FinishReason::kError);
  text.params.truncate_prompt_tokens = 50;
  const Output cut_text = engine->generate({text})[0];
  EXPECT_EQ(cut_text.prompt_token_ids.size(), 50u) << cut_text.error.to_string();
}

TEST_F(EngineBehaviour, LogitBiasOutsideTheVocabularyIsAnError) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r = greedy_request("Bias", 3);
  r.params.logit_bias = {{engine->model_config().vocab_size, 1.0f}};
  r.params.n = 2;
  const std::vector<Output> outs = engine->generate({r});
  ASSERT_EQ(outs.size(), 2u) << "one error output per completion asked for";
  EXPECT_EQ(outs[1].index, 1);
  for (const Output& o : outs) {
    EXPECT_EQ(o.finish_reason, FinishReason::kError);
    EXPECT_NE(o.error.message().find("logit_bias"), std::string::npos) << o.error.message();
  }
  // A bias that makes a token certain makes greedy pick it.
  r.params.n = 1;
  r.params.logit_bias = {{1234, 100.0f}};
  EXPECT_EQ(engine->generate({r})[0].token_ids, (std::vector<int32_t>{1234, 1234, 1234}));
}

// ---- Prompt logprobs ----

// The logits at every position of `prompt` from plain forwards with no cache: position p's row is the one
// the first token of a request whose prompt is prompt[0..p] is sampled from, on an engine with reuse off.
std::vector<std::vector<float>> plain_forward_logits(const std::string& model, const std::vector<int32_t>& prompt) {
  auto cold = make_engine(model, false);
  std::vector<std::vector<float>> rows;
  for (size_t p = 0; p + 1 < prompt.size(); ++p) {
    Request r;
    r.prompt_token_ids.assign(prompt.begin(), prompt.begin() + static_cast<ptrdiff_t>(p + 1));
    r.params.temperature = 0;
    r.params.max_tokens = 1;
    r.keep_logits = true;
    rows.push_back(cold->generate({r})[0].logits);
  }
  return rows;
}

// Prompt logprobs are the log-softmax of the logits a plain no-cache forward gives at each position, bit for
// bit (the kernels are batch-invariant), though the prompt was cached, chunked and shared by n completions;
// and asking for them changes no bit of anything else.
TEST_P(EngineTest, PromptLogprobsAreTheLogSoftmaxOfAPlainForward) {
  const std::string model = tiny_model(GetParam());
  auto engine = make_engine(model, true, int64_t{64} << 20, /*max_batched_tokens=*/13, /*block_size=*/4);
  Request r;
  r.prompt = "The prompt whose tokens come back with their log-probabilities, all of them";
  r.params.temperature = 0.7f;
  r.params.seed = 5;
  r.params.max_tokens = 5;
  r.params.ignore_eos = true;
  r.params.logprobs = 2;
  r.params.n = 3;
  const std::vector<Output> plain = engine->generate({r});  // also leaves the prompt's blocks cached
  r.params.prompt_logprobs = 4;
  const std::vector<Output> with = engine->generate({r});
  ASSERT_EQ(with.size(), 3u);
  const std::vector<int32_t>& prompt = with[0].prompt_token_ids;
  ASSERT_GT(prompt.size(), 12u);
  ASSERT_EQ(with[0].prompt_logprobs.size(), prompt.size() - 1);
  EXPECT_EQ(with[0].num_cached_tokens, 0) << "completion 0 computes the prompt it needs logits of";
  for (size_t c = 0; c < 3; ++c) {
    EXPECT_EQ(with[c].token_ids, plain[c].token_ids) << "completion " << c;
    ASSERT_EQ(with[c].logprobs.size(), plain[c].logprobs.size());
    for (size_t t = 0; t < with[c].logprobs.size(); ++t)
      EXPECT_EQ(with[c].logprobs[t].chosen.logprob, plain[c].logprobs[t].chosen.logprob);
    if (c > 0) {
      EXPECT_TRUE(with[c].prompt_logprobs.empty()) << "the request's prompt logprobs come with completion 0";
    }
  }
  const int64_t vocab = engine->model_config().vocab_size;
  const std::vector<std::vector<float>> rows = plain_forward_logits(model, prompt);
  for (size_t p = 0; p + 1 < prompt.size(); ++p) {
    const GeneratedTokenLogprobs& got = with[0].prompt_logprobs[p];
    ASSERT_EQ(rows[p].size(), static_cast<size_t>(vocab));
    GeneratedTokenLogprobs want;
    token_logprobs(rows[p].data(), vocab, prompt[p + 1], 4, want);
    EXPECT_EQ(got.chosen.token_id, prompt[p + 1]);
    EXPECT_EQ(got.chosen.logprob, want.chosen.logprob) << "position " << p;
    ASSERT_EQ(got.top.size(), 4u);
    for (size_t k = 0; k < 4; ++k) {
      EXPECT_EQ(got.top[k].token_id, want.top[k].token_id);
      EXPECT_EQ(got.top[k].logprob, want.top[k].logprob);
    }
    // And by hand, in double: log p(token) = logit - max - log(sum exp(logit - max)).
    const float* row = rows[p].data();
    double mx = row[0], sum = 0;
    for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(row[i]));
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - mx);
    EXPECT_NEAR(got.chosen.logprob, static_cast<double>(row[prompt[p + 1]]) - mx - std::log(sum), 1e-5);
  }
}

// Under a KV budget that forces preemption, prompt logprobs still come out whole and equal to a run alone.
TEST_P(EngineTest, PromptLogprobsSurvivePreemption) {
  const std::string model = tiny_model(GetParam());
  auto ref = make_engine(model, false);
  const Workload w = small_workload("gsp", *ref);
  // The first four prompts (prompt logprobs cost the LM head on every prompt position: the scalar path's
  // slowest test, 4x more under ASan): 87 tokens each against a KV budget of 128, so they still preempt.
  std::vector<Request> requests(w.requests.begin(), w.requests.begin() + 4);
  for (Request& r : requests) r.params.prompt_logprobs = 1;
  const std::vector<Output> want = ref->generate(requests);
  auto tight = make_engine(model, true, ref->metrics().kv_bytes_per_block * 8, /*max_batched_tokens=*/40);
  const std::vector<Output> got = tight->generate(requests);
  EXPECT_GT(tight->metrics().preemptions, 0);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].token_ids, want[i].token_ids) << "request " << i;
    ASSERT_EQ(got[i].prompt_logprobs.size(), got[i].prompt_token_ids.size() - 1) << "request " << i;
    ASSERT_EQ(want[i].prompt_logprobs.size(), got[i].prompt_logprobs.size());
    for (size_t p = 0; p < got[i].prompt_logprobs.size(); ++p) {
      EXPECT_EQ(got[i].prompt_logprobs[p].chosen.logprob, want[i].prompt_logprobs[p].chosen.logprob);
      EXPECT_EQ(got[i].prompt_logprobs[p].top[0].token_id, want[i].prompt_logprobs[p].top[0].token_id);
    }
  }
}

// step() gives each unfinished output only the logprobs it adds (O(new) per step), the prompt logprobs once;
// put together they are the finished output's, which holds them all.
TEST_F(EngineBehaviour, StepOutputsCarryOnlyNewLogprobs) {
  const std::string model = tiny_model("llama");
  auto engine = make_engine(model, true);
  Request r = greedy_request("Streamed log probabilities", 9);
  r.params.logprobs = 2;
  r.params.prompt_logprobs = 0;
  r.params.n = 2;
  const std::vector<Output> whole = engine->generate({r});
  ASSERT_EQ(engine->add_request(r).value() >= 0, true);
  std::map<int32_t, std::vector<GeneratedTokenLogprobs>> streamed;
  std::map<int32_t, Output> finished;
  int prompt_logprob_outputs = 0;
  while (engine->has_unfinished()) {
    for (Output& o : engine->step()) {
      if (!o.prompt_logprobs.empty() && !o.finished) ++prompt_logprob_outputs;
      if (o.finished) {
        finished[o.index] = o;
        continue;
      }
      EXPECT_LE(o.logprobs.size(), 1u) << "one new token per step";
      std::vector<GeneratedTokenLogprobs>& s = streamed[o.index];
      EXPECT_EQ(o.logprobs_begin, static_cast<int64_t>(s.size()));
      s.insert(s.end(), o.logprobs.begin(), o.logprobs.end());
    }
  }
  EXPECT_EQ(prompt_logprob_outputs, 1) << "completion 0's first output, once";
  ASSERT_EQ(finished.size(), 2u);
  for (int32_t c = 0; c < 2; ++c) {
    const Output& f = finished[c];
    EXPECT_EQ(f.logprobs_begin, 0);
    ASSERT_EQ(f.logprobs.size(), f.token_ids.size());
    ASSERT_EQ(f.logprobs.size(), whole[c].logprobs.size());
    EXPECT_EQ(streamed[c].size() + 1, f.logprobs.size()) << "all but the last token came in steps";
    for (size_t t = 0; t < f.logprobs.size(); ++t) {
      EXPECT_EQ(f.logprobs[t].chosen.logprob, whole[c].logprobs[t].chosen.logprob);
      if (t < streamed[c].size()) {
        EXPECT_EQ(streamed[c][t].chosen.logprob, f.logprobs[t].chosen.logprob);
      }
    }
  }
  EXPECT_EQ(finished[0].prompt_logprobs.size(), finished[0].prompt_token_ids.size() - 1);
  EXPECT_TRUE(finished[0].prompt_logprobs[0].top.empty()) << "prompt_logprobs 0: the prompt token alone";
  EXPECT_TRUE(finished[1].prompt_logprobs.empty());
}

}  // namespace
}  // namespace kvshare
