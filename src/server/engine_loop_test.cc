#include "server/engine_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "core/mapped_file.h"
#include "server/server_test_util.h"
#include "test_util.h"

namespace kvshare::server {
namespace {

constexpr const char* kModel = testing::kTinyModel;

std::unique_ptr<Engine> make_engine() { return testing::make_tiny_engine(); }

Request greedy(const std::string& prompt, int32_t max_tokens) {
  Request r;
  r.prompt = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  return r;
}

std::vector<Output> wait_all(RequestStream& s, Notifier& n) {
  std::vector<Output> outs;
  uint64_t seen = 0;
  while (!s.snapshot(outs)) n.wait(seen, std::chrono::milliseconds(50));
  return outs;
}

// Requests submitted from many threads at once join one batch and get what each gets alone.
TEST(EngineLoop, ConcurrentRequestsMatchRunsAlone) {
  KV_REQUIRE_SHARED(kModel);
  const std::string system = "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
  std::vector<std::string> prompts;
  for (int i = 0; i < 12; ++i) prompts.push_back(system + "One day, she saw " + std::to_string(i) + " birds");

  std::vector<std::string> alone;
  {
    auto engine = make_engine();
    ASSERT_NE(engine, nullptr);
    for (const std::string& p : prompts) alone.push_back(engine->generate({greedy(p, 12)})[0].text);
  }
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  std::vector<RequestTimes> finished;
  std::mutex mu;
  EngineLoop loop(*engine, [&](const RequestTimes& t) {
    std::lock_guard<std::mutex> lock(mu);
    finished.push_back(t);
  });
  std::vector<std::string> served(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      auto notifier = std::make_shared<Notifier>();
      auto stream = loop.submit(greedy(prompts[i], 12), notifier);
      ASSERT_TRUE(stream.ok()) << stream.status().to_string();
      std::vector<Output> outs = wait_all(**stream, *notifier);
      ASSERT_EQ(outs.size(), 1u);
      EXPECT_EQ(outs[0].finish_reason, FinishReason::kLength);
      served[i] = outs[0].text;
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(served[i], alone[i]) << i;
  const EngineMetrics m = loop.metrics();
  EXPECT_GT(m.prefix_hit_tokens, 0);  // the shared beginning was computed once
  EXPECT_EQ(m.num_running, 0);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(finished.size(), prompts.size());
  for (const RequestTimes& t : finished) {
    EXPECT_EQ(t.generated_tokens, 12);
    EXPECT_GT(t.end_to_end, 0);
    EXPECT_LE(t.time_to_first_token, t.end_to_end);
  }
}

TEST(EngineLoop, RefusalsComeBackAndAbortFreesBlocks) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  Request bad = greedy("hello", 4);
  bad.params.top_p = 7;
  auto refused = loop.submit(bad, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("top_p"), std::string::npos);

  Request long_one = greedy("Once upon a time", 400);
  long_one.params.ignore_eos = true;
  auto notifier = std::make_shared<Notifier>();
  auto stream = loop.submit(long_one, notifier);
  ASSERT_TRUE(stream.ok());
  std::vector<Output> outs;
  uint64_t seen = 0;
  while ((*stream)->snapshot(outs), outs.empty() || outs[0].token_ids.size() < 3) notifier->wait(seen, std::chrono::milliseconds(50));
  loop.abort((*stream)->id());
  outs = wait_all(**stream, *notifier);
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kAbort);
  EXPECT_LT(outs[0].token_ids.size(), 400u);
  int64_t used = -1;
  loop.call([&](Engine& e) { used = e.metrics().blocks_used; });
  EXPECT_EQ(used, 0);
}

// A call's prompts go to the engine thread as one command: they join one step (one at a time, each had waited for
// a step of its own, so that a list of 512 prompts took 512 steps to start). All or none: a refused request
// (here the third) comes back with its index, and the others never run.
TEST(EngineLoop, AListOfPromptsJoinsOneStepAllOrNone) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  std::vector<Request> requests;
  for (int i = 0; i < 16; ++i) {
    requests.push_back(greedy("Once upon a time " + std::to_string(i), 4));
    requests.back().params.ignore_eos = true;
  }
  std::vector<Request> with_a_bad_one = requests;
  with_a_bad_one[2].params.top_p = 7;
  EngineLoop::Submitted refused = loop.submit(with_a_bad_one, nullptr);
  EXPECT_FALSE(refused.refusal.ok());
  EXPECT_NE(refused.refusal.message().find("top_p"), std::string::npos) << refused.refusal.to_string();
  EXPECT_EQ(refused.refused, 2u);
  EXPECT_TRUE(refused.streams.empty());

  auto notifier = std::make_shared<Notifier>();
  EngineLoop::Submitted submitted = loop.submit(requests, notifier);
  ASSERT_TRUE(submitted.refusal.ok()) << submitted.refusal.to_string();
  ASSERT_EQ(submitted.streams.size(), requests.size());
  for (const auto& stream : submitted.streams) {
    std::vector<Output> outs = wait_all(*stream, *notifier);
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].token_ids.size(), 4u);
  }
  EngineMetrics m;
  loop.call([&](Engine& e) { m = e.metrics(); });
  EXPECT_EQ(m.generated_tokens, 16 * 4) << "the refused list generated nothing";
  // The step that aborted the refused list's first two, then 4 steps of all 16 together.
  EXPECT_LE(m.steps, 5);
  EXPECT_EQ(m.blocks_used, 0);
}

// The waiting-queue limit is in sequences: a request with n completions counts n from the moment it is queued
// to the engine thread (a request with n 128 once counted 1 there), and still n once the engine holds it.
TEST(EngineLoop, WaitingCountsEachCompletion) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  // Hold the engine thread, so that the next submit stays in the queue.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> holding;
  std::thread holder([&] { loop.call([&](Engine&) { holding.set_value(); released.wait(); }); });
  holding.get_future().wait();
  Request r = greedy("Once upon a time", 2);
  r.params.temperature = 1;
  r.params.n = 5;
  auto notifier = std::make_shared<Notifier>();
  Result<std::shared_ptr<RequestStream>> stream = internal_error("not submitted");
  std::thread client([&] { stream = loop.submit(r, notifier); });
  while (loop.num_waiting() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(loop.num_waiting(), 5);
  release.set_value();
  holder.join();
  client.join();
  ASSERT_TRUE(stream.ok()) << stream.status().to_string();
  EXPECT_EQ(wait_all(**stream, *notifier).size(), 5u);
  EXPECT_EQ(loop.num_waiting(), 0);
}

TEST(EngineLoop, ShutdownAbortsWhatIsInFlight) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  Request r = greedy("Once upon a time", 400);
  r.params.ignore_eos = true;
  auto notifier = std::make_shared<Notifier>();
  auto stream = loop.submit(r, notifier);
  ASSERT_TRUE(stream.ok());
  loop.shutdown();
  std::vector<Output> outs;
  EXPECT_TRUE((*stream)->snapshot(outs));
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].finish_reason, FinishReason::kAbort);
  auto late = loop.submit(greedy("x", 2), nullptr);
  EXPECT_FALSE(late.ok());
}

// Submits and calls that race with shutdown all return: accepted ones end (aborted or finished), late ones are
// refused, and nothing waits forever.
TEST(EngineLoop, SubmitsRacingShutdownAllReturn) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i)
    clients.emplace_back([&] {
      for (int j = 0; j < 20; ++j) {
        auto notifier = std::make_shared<Notifier>();
        auto stream = loop.submit(greedy("Once upon a time", 50), notifier);
        if (!stream.ok()) {
          ++refused;
          continue;
        }
        ++accepted;
        wait_all(**stream, *notifier);
        loop.call([](Engine&) {});
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  loop.shutdown();
  for (auto& t : clients) t.join();
  EXPECT_EQ(accepted + refused, 160);
  EXPECT_GT(refused, 0);
}

// A reply sent whole is woken once, when its completion finishes; a stream at every step that advanced it.
TEST(EngineLoop, AWholeReplyWakesWhenDoneAStreamAtEveryStep) {
  KV_REQUIRE_SHARED(kModel);
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  EngineLoop loop(*engine);
  for (bool each_step : {false, true}) {
    Request r = greedy("Once upon a time, there was a cat", 8);
    r.params.ignore_eos = true;
    auto notifier = std::make_shared<Notifier>(each_step);
    auto stream = loop.submit(r, notifier).value();
    std::vector<Output> outs;
    uint64_t seen = 0;  // becomes the number of notifications (wait() takes their count)
    while (!stream->snapshot(outs)) notifier->wait(seen, std::chrono::milliseconds(50));
    notifier->wait(seen, std::chrono::milliseconds(0));
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_EQ(outs[0].token_ids.size(), 8u);
    if (each_step) {
      EXPECT_GE(seen, 8u) << "a stream is woken at each of its 8 tokens' steps";
    } else {
      EXPECT_EQ(seen, 1u) << "a whole reply is woken once, when it is done";
    }
  }
}

// A client reading a stream with logprobs now and then (many steps between two reads, or none) receives each
// token's logprobs once, in order, with nothing copied twice: put together they are those of a run alone.
TEST(EngineLoop, StreamHandsOverEachLogprobOnce) {
  KV_REQUIRE_SHARED(kModel);
  Request r = greedy("Once upon a time, there was a cat", 24);
  r.params.logprobs = 3;
  r.params.prompt_logprobs = 1;
  r.params.ignore_eos = true;
  auto engine = make_engine();
  ASSERT_NE(engine, nullptr);
  const Output alone = engine->generate({r})[0];
  ASSERT_EQ(alone.logprobs.size(), 24u);
  EngineLoop loop(*engine);
  auto notifier = std::make_shared<Notifier>();
  auto stream = loop.submit(r, notifier).value();
  std::vector<GeneratedTokenLogprobs> got;
  size_t prompt_logprobs = 0;
  std::vector<Output> outs;
  bool done = false;
  for (int read = 0; !done; ++read) {
    std::this_thread::sleep_for(std::chrono::milliseconds(read % 3 == 0 ? 5 : 0));
    done = stream->snapshot(outs);
    if (outs.empty()) continue;
    Output& o = outs[0];
    prompt_logprobs += o.prompt_logprobs.size();
    // New ones continue what was taken; a finished output restates them all, from the first.
    ASSERT_LE(o.logprobs_begin, static_cast<int64_t>(got.size()));
    for (size_t i = got.size() - static_cast<size_t>(o.logprobs_begin); i < o.logprobs.size(); ++i)
      got.push_back(o.logprobs[i]);
    if (!o.finished) {
      EXPECT_EQ(o.logprobs_begin + static_cast<int64_t>(o.logprobs.size()), static_cast<int64_t>(got.size()));
    }
  }
  ASSERT_EQ(got.size(), alone.logprobs.size());
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_EQ(got[t].chosen.token_id, alone.logprobs[t].chosen.token_id);
    EXPECT_EQ(got[t].chosen.logprob, alone.logprobs[t].chosen.logprob);
  }
  EXPECT_GE(prompt_logprobs, alone.prompt_logprobs.size());
  EXPECT_EQ(alone.prompt_logprobs.size() + 1, alone.prompt_token_ids.size());
  stream->snapshot(outs);
  EXPECT_TRUE(outs[0].logprobs.empty()) << "taken: a later snapshot has none left";
}

}  // namespace
}  // namespace kvshare::server
