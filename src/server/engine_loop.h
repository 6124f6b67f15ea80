// EngineLoop: the engine's own thread, and the hand-over between it and the HTTP threads.
//
// The Engine is not thread-safe, so one thread owns it: it takes new requests and aborts from a queue, runs
// engine.step() while any request is unfinished, and hands each step's outputs to the request they belong to.
// An HTTP thread submits a request (and gets the engine's verdict: its id, or why it cannot run), then waits
// on the request's stream for news. Requests from every connection so join one continuous batch and share one
// prefix cache.
//
//   HTTP thread                      engine thread
//   submit(requests) ── queue ─────▶ engine.add_request()  ─▶ verdict back to submit()  (a call's prompts at once)
//   stream->wait()  ◀── outputs ──── engine.step()          (repeated while anything is unfinished)
//   abort(id)       ── queue ──────▶ engine.abort(id)       (a client that hung up)
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvshare/engine.h"

namespace kvshare::server {

// Latency of finished requests, for /metrics (seconds).
struct RequestTimes {
  double time_to_first_token = 0;  // submit → first generated token
  double time_per_output_token = 0;  // mean gap between later tokens (0 when one token)
  double end_to_end = 0;             // submit → finished
  int64_t generated_tokens = 0;
  FinishReason finish_reason = FinishReason::kNone;
};

// Wakes a waiting HTTP thread when any of the requests it follows made progress (one per API call, shared by
// the engine requests of its prompts): at every step that advanced one (a stream), or only when a completion
// finished (`each_step` false: a reply sent whole, whose thread has nothing to do before then; each wake-up
// takes a core from the engine's threads for a moment).
class Notifier {
 public:
  explicit Notifier(bool each_step = true) : each_step_(each_step) {}
  bool each_step() const { return each_step_; }
  void notify();
  // Waits until notify() was called since the version `seen`, or `timeout` passed; updates `seen`.
  void wait(uint64_t& seen, std::chrono::milliseconds timeout);

 private:
  const bool each_step_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
};

// The outputs of one request as they arrive from the engine thread: the latest Output of each completion
// (index 0..n-1), replaced at every step that advanced it. Logprobs are handed over once: the engine's step
// outputs carry only new ones (Output::logprobs_begin), the stream gathers those not taken yet, and
// snapshot() moves them to the caller, so following a stream with logprobs costs O(new tokens) per event.
class RequestStream {
 public:
  RequestStream(int64_t id, int32_t num_completions, std::shared_ptr<Notifier> notifier)
      : id_(id), num_completions_(num_completions), notifier_(std::move(notifier)) {}
  int64_t id() const { return id_; }

  // Copies the latest outputs (ordered by completion index) into `outputs`, with the logprobs and prompt
  // logprobs no earlier snapshot took (moved out: Output::logprobs_begin says which tokens' they are); true
  // when every completion has finished.
  bool snapshot(std::vector<Output>& outputs);

 private:
  friend class EngineLoop;
  void publish(Output output, bool& all_finished);
  static void merge_untaken(Output& older, Output& output);

  const int64_t id_;
  const int32_t num_completions_;
  const std::shared_ptr<Notifier> notifier_;
  std::mutex mu_;
  std::map<int32_t, Output> latest_;  // by completion index
  int32_t num_finished_ = 0;
  bool all_finished_ = false;
};

class EngineLoop {
 public:
  // `on_finished` is called on the engine thread as each request finishes (for latency metrics).
  explicit EngineLoop(Engine& engine, std::function<void(const RequestTimes&)> on_finished = {});
  ~EngineLoop();  // shutdown()
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Queues `request` for the engine thread and waits for its verdict: the request's stream, or why the
  // engine refused it (a bad parameter, a prompt longer than the context, the loop shutting down).
  // `notifier` is told of the request's progress (Notifier: at every step, or when a completion finished).
  Result<std::shared_ptr<RequestStream>> submit(Request request, std::shared_ptr<Notifier> notifier);
  // The requests of one API call (a list of prompts), queued as one command: the engine thread adds them all
  // before its next step, so they join one step (submitted one at a time, each had waited for a step of its own).
  // All or none: the streams in order, or the first refusal, with the index of the request refused, and none of
  // them runs (those added before it are aborted before any step).
  struct Submitted {
    std::vector<std::shared_ptr<RequestStream>> streams;
    Status refusal;     // ok when every request was queued
    size_t refused = 0;  // the request `refusal` is about
  };
  Submitted submit(std::vector<Request> requests, std::shared_ptr<Notifier> notifier);
  // Stops a request (its blocks are freed; its stream finishes with kAbort). Unknown ids are ignored.
  void abort(int64_t request_id);
  // Runs `fn` on the engine thread between steps and waits for it (reset_prefix_cache, cache_prefix).
  void call(const std::function<void(Engine&)>& fn);

  // The engine's metrics after the last step (or command), without waiting for the engine thread.
  EngineMetrics metrics() const;
  // Sequences (a request's n completions each count) accepted but not yet running, including those of
  // requests still in the queue to the engine thread: what the waiting-queue limit is measured in.
  int64_t num_waiting() const;

  // Aborts every unfinished request, lets their streams finish, and stops the thread. Later submits fail.
  void shutdown();

 private:
  struct Command {
    enum Kind { kSubmit, kAbort, kCall };
    Kind kind = kSubmit;
    std::vector<Request> requests;  // kSubmit
    std::shared_ptr<Notifier> notifier;
    int64_t request_id = -1;     // kAbort
    std::function<void(Engine&)> fn;  // kCall
    // The verdict of kSubmit and the completion of kCall, given on the engine thread.
    std::shared_ptr<std::promise<Submitted>> submitted;
    std::shared_ptr<std::promise<void>> done;
  };
  struct Tracked {
    std::shared_ptr<RequestStream> stream;
    std::chrono::steady_clock::time_point submitted;
    std::chrono::steady_clock::time_point first_token;
    bool has_first_token = false;
  };

  void run();
  void execute(Command& command);
  void dispatch(std::vector<Output> outputs);
  void snapshot_metrics();

  Engine& engine_;
  std::function<void(const RequestTimes&)> on_finished_;

  mutable std::mutex mu_;  // guards queue_, stopping_, metrics_, queued_sequences_
  std::condition_variable cv_;
  std::deque<Command> queue_;
  bool stopping_ = false;
  EngineMetrics metrics_;
  int64_t queued_sequences_ = 0;  // the n of each request of each kSubmit in queue_

  std::map<int64_t, Tracked> tracked_;  // engine thread only
  std::thread thread_;
};

}  // namespace kvshare::server
