#include "server/engine_loop.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace kvshare::server {

using Clock = std::chrono::steady_clock;

void Notifier::notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++version_;
  }
  cv_.notify_all();
}

void Notifier::wait(uint64_t& seen, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return version_ != seen; });
  seen = version_;
}

bool RequestStream::snapshot(std::vector<Output>& outputs) {
  std::lock_guard<std::mutex> lock(mu_);
  outputs.clear();
  for (auto& [index, output] : latest_) {
    // The logprobs go to the caller (moved, not copied); the stream keeps the rest.
    std::vector<GeneratedTokenLogprobs> logprobs = std::exchange(output.logprobs, {});
    std::vector<GeneratedTokenLogprobs> prompt_logprobs = std::exchange(output.prompt_logprobs, {});
    outputs.push_back(output);
    outputs.back().logprobs = std::move(logprobs);
    outputs.back().prompt_logprobs = std::move(prompt_logprobs);
    output.logprobs_begin += static_cast<int64_t>(outputs.back().logprobs.size());
  }
  return all_finished_;
}

// `output` replaces the completion's latest, keeping the logprobs not taken yet: a step's output continues
// them, a finished one restates them all.
void RequestStream::merge_untaken(Output& older, Output& output) {
  if (output.logprobs_begin > older.logprobs_begin) {
    older.logprobs.insert(older.logprobs.end(), std::make_move_iterator(output.logprobs.begin()),
                          std::make_move_iterator(output.logprobs.end()));
    output.logprobs = std::move(older.logprobs);
    output.logprobs_begin = older.logprobs_begin;
  }
  if (output.prompt_logprobs.empty()) output.prompt_logprobs = std::move(older.prompt_logprobs);
}

void RequestStream::publish(Output output, bool& all_finished) {
  const bool finished = output.finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished) ++num_finished_;
    const int32_t index = output.index;
    if (auto it = latest_.find(index); it != latest_.end()) merge_untaken(it->second, output);
    latest_[index] = std::move(output);
    all_finished_ = num_finished_ >= num_completions_;
    all_finished = all_finished_;
  }
  if (notifier_ && (finished || notifier_->each_step())) notifier_->notify();
}

EngineLoop::EngineLoop(Engine& engine, std::function<void(const RequestTimes&)> on_finished)
    : engine_(engine), on_finished_(std::move(on_finished)) {
  metrics_ = engine_.metrics();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() { shutdown(); }

Result<std::shared_ptr<RequestStream>> EngineLoop::submit(Request request, std::shared_ptr<Notifier> notifier) {
  std::vector<Request> one;
  one.push_back(std::move(request));
  Submitted s = submit(std::move(one), std::move(notifier));
  if (!s.refusal.ok()) return s.refusal;
  return s.streams[0];
}

namespace {
int64_t sequences_of(const std::vector<Request>& requests) {
  int64_t n = 0;
  for (const Request& r : requests) n += std::max<int32_t>(1, r.params.n);
  return n;
}
}  // namespace

EngineLoop::Submitted EngineLoop::submit(std::vector<Request> requests, std::shared_ptr<Notifier> notifier) {
  Command c;
  c.kind = Command::kSubmit;
  c.requests = std::move(requests);
  c.notifier = std::move(notifier);
  c.submitted = std::make_shared<std::promise<Submitted>>();
  auto verdict = c.submitted->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return {{}, resource_exhausted("the server is shutting down"), 0};
    queued_sequences_ += sequences_of(c.requests);
    queue_.push_back(std::move(c));
  }
  cv_.notify_all();
  return verdict.get();
}

void EngineLoop::abort(int64_t request_id) {
  Command c;
  c.kind = Command::kAbort;
  c.request_id = request_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(c));
  }
  cv_.notify_all();
}

void EngineLoop::call(const std::function<void(Engine&)>& fn) {
  Command c;
  c.kind = Command::kCall;
  c.fn = fn;
  c.done = std::make_shared<std::promise<void>>();
  auto done = c.done->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    queue_.push_back(std::move(c));
  }
  cv_.notify_all();
  done.wait();
}

EngineMetrics EngineLoop::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

int64_t EngineLoop::num_waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_.num_waiting + queued_sequences_;
}

void EngineLoop::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// The engine thread: commands first (so a new request joins the very next step), then one step.
void EngineLoop::run() {
  for (;;) {
    std::deque<Command> commands;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty() || stopping_ || engine_.has_unfinished(); });
      commands.swap(queue_);
      stopping = stopping_;
    }
    for (Command& c : commands) execute(c);
    if (stopping) {
      // Cancel what is in flight; the aborted outputs come from the steps below and end every stream.
      for (const auto& [id, tracked] : tracked_) engine_.abort(id);
      while (engine_.has_unfinished()) dispatch(engine_.step());
      dispatch(engine_.step());  // outputs of requests aborted while nothing else was running
      snapshot_metrics();
      std::deque<Command> late;  // queued while stopping: submits are refused, calls still run
      {
        std::lock_guard<std::mutex> lock(mu_);
        late.swap(queue_);
      }
      for (Command& c : late) execute(c);
      return;
    }
    // Metrics first, so that a client woken by its last output reads them as of this step.
    std::vector<Output> outputs = engine_.has_unfinished() ? engine_.step() : std::vector<Output>{};
    snapshot_metrics();
    dispatch(std::move(outputs));
  }
}

void EngineLoop::execute(Command& c) {
  switch (c.kind) {
    case Command::kSubmit: {
      bool stopping;
      {
        std::lock_guard<std::mutex> lock(mu_);
        queued_sequences_ -= sequences_of(c.requests);
        stopping = stopping_;
      }
      if (stopping) {
        c.submitted->set_value({{}, resource_exhausted("the server is shutting down"), 0});
        return;
      }
      std::vector<int64_t> ids;
      for (size_t i = 0; i < c.requests.size(); ++i) {
        Result<int64_t> id = engine_.add_request(c.requests[i]);
        if (!id.ok()) {
          for (int64_t added : ids) engine_.abort(added);  // untracked: their aborted outputs go nowhere
          c.submitted->set_value({{}, id.status(), i});
          return;
        }
        ids.push_back(*id);
      }
      Submitted verdict;
      for (size_t i = 0; i < ids.size(); ++i) {
        auto stream =
            std::make_shared<RequestStream>(ids[i], std::max<int32_t>(1, c.requests[i].params.n), c.notifier);
        Tracked& t = tracked_[ids[i]];
        t.stream = stream;
        t.submitted = Clock::now();
        verdict.streams.push_back(std::move(stream));
      }
      c.submitted->set_value(std::move(verdict));
      return;
    }
    case Command::kAbort:
      engine_.abort(c.request_id);
      return;
    case Command::kCall:
      c.fn(engine_);
      c.done->set_value();
      return;
  }
}

void EngineLoop::dispatch(std::vector<Output> outputs) {
  const Clock::time_point now = Clock::now();
  for (Output& o : outputs) {
    auto it = tracked_.find(o.request_id);
    if (it == tracked_.end()) continue;
    Tracked& t = it->second;
    if (!t.has_first_token && !o.token_ids.empty()) {
      t.first_token = now;
      t.has_first_token = true;
    }
    const bool finished = o.finished;
    RequestTimes times;
    if (finished) {
      times.end_to_end = std::chrono::duration<double>(now - t.submitted).count();
      times.generated_tokens = static_cast<int64_t>(o.token_ids.size());
      times.finish_reason = o.finish_reason;
      if (t.has_first_token) {
        times.time_to_first_token = std::chrono::duration<double>(t.first_token - t.submitted).count();
        if (times.generated_tokens > 1)
          times.time_per_output_token = std::chrono::duration<double>(now - t.first_token).count() /
                                        static_cast<double>(times.generated_tokens - 1);
      }
    }
    if (finished && on_finished_) on_finished_(times);  // before the client can see the end
    bool all_finished = false;
    t.stream->publish(std::move(o), all_finished);
    if (all_finished) tracked_.erase(it);
  }
}

void EngineLoop::snapshot_metrics() {
  EngineMetrics m = engine_.metrics();
  std::lock_guard<std::mutex> lock(mu_);
  metrics_ = m;
}

}  // namespace kvshare::server
