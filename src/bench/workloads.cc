#include "bench/workloads.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "sampling/sampler.h"

namespace kvshare {

const std::vector<std::string>& workload_names() {
  static const std::vector<std::string> names = {"gsp", "prefix-repetition", "long-doc-qa", "multi-turn", "control"};
  return names;
}

namespace {

class TokenSource {
 public:
  TokenSource(const WorkloadOptions& o, uint64_t stream) : rng_(o.seed * 1000003 + stream), o_(o) {}
  std::vector<int32_t> draw(int64_t n) {
    std::vector<int32_t> t;
    t.reserve(static_cast<size_t>(n));
    const uint64_t range = static_cast<uint64_t>(o_.vocab_size - o_.first_token);
    while (static_cast<int64_t>(t.size()) < n) {
      const auto id = static_cast<int32_t>(o_.first_token + static_cast<int64_t>(rng_.next() % range));
      if (std::find(o_.avoid_tokens.begin(), o_.avoid_tokens.end(), id) == o_.avoid_tokens.end()) t.push_back(id);
    }
    return t;
  }
  uint64_t next() { return rng_.next(); }

 private:
  Rng rng_;
  const WorkloadOptions& o_;
};

Request greedy_request(std::vector<int32_t> prompt, int64_t output_len) {
  Request r;
  r.prompt_token_ids = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = static_cast<int32_t>(output_len);
  r.params.ignore_eos = true;
  return r;
}

std::vector<int32_t> concat(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  std::vector<int32_t> c = a;
  c.insert(c.end(), b.begin(), b.end());
  return c;
}

template <typename T>
void shuffle(std::vector<T>& v, TokenSource& src) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[src.next() % i]);
}

Status positive(int64_t v, const char* name) {
  if (v < 1) return invalid_argument(std::string("--") + name + " must be at least 1, got " + std::to_string(v));
  return {};
}

}  // namespace

Status check_workload_options(const WorkloadOptions& o) {
  if (o.name == "gsp") {
    KV_RETURN_IF_ERROR(positive(o.groups, "groups"));
    KV_RETURN_IF_ERROR(positive(o.prompts_per_group, "prompts-per-group"));
    KV_RETURN_IF_ERROR(positive(o.system_len, "system-len"));
    return positive(o.question_len, "question-len");
  }
  if (o.name == "prefix-repetition") {
    KV_RETURN_IF_ERROR(positive(o.num_prompts, "num-prompts"));
    KV_RETURN_IF_ERROR(positive(o.num_prefixes, "num-prefixes"));
    KV_RETURN_IF_ERROR(positive(o.prefix_len, "prefix-len"));
    return positive(o.suffix_len, "suffix-len");
  }
  if (o.name == "long-doc-qa") {
    if (o.order != "tile" && o.order != "interleave" && o.order != "random")
      return invalid_argument("--order must be random, tile or interleave, got '" + o.order + "'");
    return {};
  }
  if (o.name == "multi-turn") {
    KV_RETURN_IF_ERROR(positive(o.conversations, "conversations"));
    KV_RETURN_IF_ERROR(positive(o.turns, "turns"));
    return positive(o.user_len, "user-len");
  }
  if (o.name == "control") {
    KV_RETURN_IF_ERROR(positive(o.control_prompts, "num-prompts"));
    return positive(o.input_len, "input-len");
  }
  return invalid_argument("unknown workload '" + o.name +
                          "'; choose gsp, prefix-repetition, long-doc-qa, multi-turn or control");
}

Result<Workload> make_workload(const WorkloadOptions& o) {
  KV_RETURN_IF_ERROR(check_workload_options(o));
  if (o.vocab_size - o.first_token < 2) return invalid_argument("workload: the vocabulary is too small");
  Workload w;
  w.name = o.name;
  TokenSource src(o, 1);
  if (o.name == "gsp") {
    w.output_len = o.output_len > 0 ? o.output_len : 32;
    for (int64_t g = 0; g < o.groups; ++g) {
      const std::vector<int32_t> system = src.draw(o.system_len);
      for (int64_t p = 0; p < o.prompts_per_group; ++p)
        w.requests.push_back(greedy_request(concat(system, src.draw(o.question_len)), w.output_len));
    }
    shuffle(w.requests, src);  // prompts arrive shuffled; the engine must still compute each system prompt once
  } else if (o.name == "prefix-repetition") {
    w.output_len = o.output_len > 0 ? o.output_len : 32;
    std::vector<std::vector<int32_t>> prefixes;
    for (int64_t k = 0; k < o.num_prefixes; ++k) prefixes.push_back(src.draw(o.prefix_len));
    for (int64_t i = 0; i < o.num_prompts; ++i)
      w.requests.push_back(greedy_request(concat(prefixes[src.next() % prefixes.size()], src.draw(o.suffix_len)),
                                          w.output_len));
  } else if (o.name == "long-doc-qa") {
    w.output_len = o.output_len > 0 ? o.output_len : 16;
    std::vector<std::vector<int32_t>> docs;
    for (int64_t d = 0; d < o.num_docs; ++d) docs.push_back(src.draw(o.doc_len));
    std::vector<int64_t> order;
    if (o.order == "tile") {
      for (int64_t r = 0; r < o.repeats; ++r)
        for (int64_t d = 0; d < o.num_docs; ++d) order.push_back(d);
    } else if (o.order == "interleave") {
      for (int64_t d = 0; d < o.num_docs; ++d)
        for (int64_t r = 0; r < o.repeats; ++r) order.push_back(d);
    } else {  // random
      for (int64_t r = 0; r < o.repeats; ++r)
        for (int64_t d = 0; d < o.num_docs; ++d) order.push_back(d);
      shuffle(order, src);
    }
    for (int64_t d : order) w.requests.push_back(greedy_request(docs[d], w.output_len));
  } else if (o.name == "multi-turn") {
    w.output_len = o.output_len > 0 ? o.output_len : 32;
    for (int64_t c = 0; c < o.conversations; ++c) {
      Conversation conv;
      for (int64_t t = 0; t < o.turns; ++t) conv.user_turns.push_back(src.draw(o.user_len));
      w.conversations.push_back(std::move(conv));
    }
  } else {  // control
    w.output_len = o.output_len > 0 ? o.output_len : 64;
    for (int64_t i = 0; i < o.control_prompts; ++i) w.requests.push_back(greedy_request(src.draw(o.input_len), w.output_len));
  }
  return w;
}

Result<std::vector<Output>> run_workload(Engine& engine, const Workload& w) {
  if (!w.is_multi_turn()) {
    std::vector<Output> outs = engine.generate(w.requests);
    for (const Output& o : outs)
      if (o.finish_reason == FinishReason::kError) return o.error;
    return outs;
  }
  // Multi-turn: every conversation has one turn in flight; when it finishes, the next turn is sent with the
  // whole history (earlier prompts and generated tokens) in front.
  const size_t num_conv = w.conversations.size();
  const size_t turns = w.conversations[0].user_turns.size();
  std::vector<std::vector<int32_t>> history(num_conv);
  std::vector<size_t> turn(num_conv, 0);
  std::unordered_map<int64_t, size_t> conv_of;
  std::vector<Output> outs(num_conv * turns);
  auto send = [&](size_t c) -> Status {
    history[c].insert(history[c].end(), w.conversations[c].user_turns[turn[c]].begin(),
                      w.conversations[c].user_turns[turn[c]].end());
    KV_ASSIGN_OR_RETURN(int64_t id, engine.add_request(greedy_request(history[c], w.output_len)));
    conv_of[id] = c;
    return {};
  };
  for (size_t c = 0; c < num_conv; ++c) KV_RETURN_IF_ERROR(send(c));
  while (engine.has_unfinished()) {
    for (Output& o : engine.step()) {
      if (!o.finished) continue;
      if (o.finish_reason == FinishReason::kError) return o.error;
      const size_t c = conv_of.at(o.request_id);
      history[c].insert(history[c].end(), o.token_ids.begin(), o.token_ids.end());
      outs[c * turns + turn[c]] = std::move(o);
      if (++turn[c] < turns) KV_RETURN_IF_ERROR(send(c));
    }
  }
  return outs;
}

IdealFlops ideal_flops(const Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int64_t output_len,
                       int64_t block_size) {
  IdealFlops f;
  std::set<std::vector<int32_t>> seen_blocks;  // every block-aligned prefix computed so far
  for (const auto& p : prompts) {
    const auto len = static_cast<int64_t>(p.size());
    int64_t cached = 0;
    for (int64_t b = 1; b * block_size <= len - 1; ++b) {
      if (!seen_blocks.count(std::vector<int32_t>(p.begin(), p.begin() + b * block_size))) break;
      cached = b * block_size;
    }
    for (int64_t b = 1; b * block_size <= len; ++b) seen_blocks.insert(std::vector<int32_t>(p.begin(), p.begin() + b * block_size));
    const double decode = engine.forward_flops(output_len, static_cast<double>(len) + static_cast<double>(output_len) / 2);
    f.without_reuse += engine.forward_flops(len, static_cast<double>(len) / 2) + decode;
    f.with_reuse += engine.forward_flops(len - cached, static_cast<double>(len + cached) / 2) + decode;
  }
  return f;
}

}  // namespace kvshare
