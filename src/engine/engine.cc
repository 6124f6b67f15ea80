// The engine: owns the model, the tokenizer, the KV cache and the scheduler, and runs the step loop.
//   add_request -> Sequence (waiting) -> each step: schedule -> build one batch -> one forward pass over
//   all planned tokens -> sample where a sequence reached its end -> stop checks -> outputs.
#include "kvshare/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <map>
#include <unordered_map>

#include "core/number_text.h"
#include "core/splitmix.h"
#include "engine/context_limit.h"
#include "engine/kv_budget.h"
#include "engine/loader.h"
#include "engine/scheduler.h"
#include "engine/tokenizer_api.h"
#include "kernels/isa.h"
#include "kv/block_manager.h"
#include "kv/kv_storage.h"
#include "sampling/choice.h"
#include "sampling/json_guide.h"
#include "sampling/stop_strings.h"
#include "tokenizer/utf8.h"

namespace kvshare {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "";
}

namespace {

// Request `id`'s seed under the engine's seed: the (id + 1)-th output of SplitMix64 from `seed`.
uint64_t mix_seed(uint64_t seed, int64_t id) {
  return splitmix64_mix(seed + kSplitMixGamma * static_cast<uint64_t>(id + 1));
}

// The seed of a request's completion `index` (n > 1): completion 0 keeps the request's seed (so it draws what
// the same request with n = 1 draws); completion i > 0 takes the i-th output of SplitMix64 from it.
uint64_t completion_seed(uint64_t request_seed, int32_t index) {
  return index == 0 ? request_seed : mix_seed(request_seed, index - 1);
}

}  // namespace

struct Engine::Impl {
  EngineConfig config;
  LoadedModel loaded;
  std::unique_ptr<Tokenizer> tokenizer;  // the public face of loaded.tokenizer, with the model's chat template
  int64_t max_model_len = 0;
  std::unique_ptr<KvStorage> kv;
  std::unique_ptr<BlockManager> blocks;
  std::unique_ptr<Scheduler> scheduler;
  Activations act;
  std::vector<float> logits;
  Sampler sampler;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs;  // by Sequence::id
  std::unordered_map<int64_t, std::unique_ptr<IncrementalDecoder>> decoders;  // by Sequence::id
  std::map<int64_t, std::vector<int32_t>> pinned;  // explicit prefixes: handle -> blocks held
  std::unique_ptr<TokenTexts> token_texts;  // the vocabulary as text, made for the first request that needs it
  // The last few requests' choices, checked (most recent first): a labelling job gives every line the same ones.
  struct KnownChoices {
    std::vector<std::string> choices;
    bool after_text = false;
    std::shared_ptr<const ChoiceSet> set;
  };
  std::vector<KnownChoices> known_choices;
  std::shared_ptr<const JsonVocabulary> json_vocab;  // the vocabulary read for JSON mode, made when first needed
  // The last few requests' JSON rules (most recent first): a schema (its text; "" for json_object's any object) with
  // a whitespace setting, compiled and checked, with the places its completions stood at (JsonRules' memo).
  struct KnownJson {
    std::string schema;
    bool whitespace = false;
    std::shared_ptr<const JsonRules> rules;
  };
  std::vector<KnownJson> known_json;
  std::vector<Output> pending;  // outputs produced while cache_prefix drove the loop, for the next step()
  int64_t next_id = 0;      // the next request's id
  int64_t next_seq_id = 0;  // the next sequence's (one per completion)
  EngineMetrics m;

  // Checks `r` against the model; gives its prompt tokens and its bad_words as token sequences.
  Status validate(const Request& r, std::vector<int32_t>& prompt, std::vector<std::vector<int32_t>>& bad_words) const;
  Status tokenize_bad_words(const SamplingParams& p, std::vector<std::vector<int32_t>>& bad_words) const;
  Status check_allowed_tokens(const SamplingParams& p, const std::vector<std::vector<int32_t>>& bad_words) const;
  const TokenTexts& vocab_texts();
  Result<std::shared_ptr<const ChoiceSet>> make_choices(const SamplingParams& p, bool after_text);
  Result<std::shared_ptr<const JsonRules>> make_json_rules(const SamplingParams& p);
  using GuideMaker = std::function<std::unique_ptr<OutputGuide>()>;
  Result<GuideMaker> output_rules(const SamplingParams& p, bool after_text);
  Output make_output(Sequence& s) const;
  void finish(Sequence& s, FinishReason reason, std::vector<Output>& out, Status error = {});
  std::vector<Output> step();

  // The parts of a step, in order (step() reads as their table of contents).
  struct StepWork {  // what a step computes, for the metrics
    double flops = 0, kv_read_bytes = 0;
    bool has_prefill = false;
  };
  void note_peak_blocks();
  void fail_what_cannot_run(const StepPlan& plan, std::vector<Output>& out);
  Status larger_than_kv_cache(int64_t prompt_tokens, int64_t max_total_tokens, bool prefix = false) const;
  ForwardBatch build_batch(const StepPlan& plan, StepWork& work) const;
  Status run_model(const ForwardBatch& batch);
  void sample_and_check_stops(const StepPlan& plan, std::vector<Output>& out);
  static Status check_finite(const float* row_logits, int64_t vocab, int64_t position);
  Status record_prompt_logprobs(Sequence& s, int64_t positions, int64_t row);
  enum class TokenStop { kNone, kEos, kStopToken };
  TokenStop token_stop(const SamplingParams& p, int32_t token) const;
  FinishReason stop_check(Sequence& s, int32_t token, size_t checked, TokenStop by_token);
  void record_step(std::chrono::steady_clock::time_point start, const StepWork& work);
  Result<int64_t> add(const Request& r, bool prefill_only);
};

Engine::Engine() : impl_(std::make_unique<Impl>()) {}
Engine::~Engine() = default;

// The load (packing the weights, making the KV cache resident) runs OpenMP loops, which give the thread that runs
// them a team of worker threads that lives as long as that thread. Made on a thread that then ends, those workers
// end with it. Made on a thread that lives on while another steps the engine (the server's main thread), they
// stayed beside the stepping thread's own team: libgomp then counts more threads than cores and lets its workers
// spin only briefly, so they slept and were woken at every parallel region of every step (served gsp behind 8
// clients: 22,128 context switches against 3,873, and 4.42-4.62 s against 4.03-4.35 s on Zen 5). std::async
// hands back an exception as the caller's own.
Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config) {
  return std::async(std::launch::async, [&config] { return create_on_this_thread(config); }).get();
}

Result<std::unique_ptr<Engine>> Engine::create_on_this_thread(const EngineConfig& config) {
  if (config.block_size < 1 || config.block_size > 1024)
    return invalid_argument("block_size must be between 1 and 1024, got " + std::to_string(config.block_size));
  if (config.max_num_seqs < 1) return invalid_argument("max_num_seqs must be at least 1");
  if (config.max_num_batched_tokens < 1) return invalid_argument("max_num_batched_tokens must be at least 1");
  if (config.kv_cache_bytes < 0) return invalid_argument("the KV cache size must not be negative");
  if (!(config.kv_cache_fraction > 0 && config.kv_cache_fraction <= kMaxKvCacheFraction))
    return invalid_argument("the KV cache budget as a fraction of free memory (--kv-cache-memory; kv_cache_memory "
                            "in Python) must be in (0, " + number_text(kMaxKvCacheFraction) + "], got " +
                            number_text(config.kv_cache_fraction));
  KV_RETURN_IF_ERROR(isa_from_env().status());  // a bad KVSHARE_ISA is reported, not silently replaced
  std::unique_ptr<Engine> engine(new Engine());
  Impl& e = *engine->impl_;
  e.config = config;
  KV_ASSIGN_OR_RETURN(e.loaded, load_pretrained(config.model_path));
  e.tokenizer = make_public_tokenizer(e.loaded.tokenizer, config.model_path);
  const ModelConfig& mc = e.loaded.model->config();
  if (config.max_model_len > mc.max_context)
    return invalid_argument("max_model_len " + std::to_string(config.max_model_len) + " exceeds the model's context of " +
                            std::to_string(mc.max_context) + " tokens");
  e.max_model_len = config.max_model_len > 0 ? config.max_model_len : mc.max_context;

  KvShape shape;
  shape.num_layers = mc.num_layers;
  shape.num_kv_heads = mc.num_kv_heads;
  shape.head_dim = mc.head_dim;
  shape.block_size = config.block_size;
  const KvBlockCost cost = kv_block_cost(shape, config.enable_prefix_caching);
  KV_ASSIGN_OR_RETURN(shape.num_blocks,
                      kv_blocks_for_budget(kv_budget_bytes(config.kv_cache_bytes, config.kv_cache_fraction), cost,
                                           machine_memory_bytes()));
  KV_ASSIGN_OR_RETURN(KvStorage storage, KvStorage::create(shape, config.kv_cache_prefault));
  e.kv = std::make_unique<KvStorage>(std::move(storage));
  e.blocks = std::make_unique<BlockManager>(static_cast<int32_t>(shape.num_blocks), config.block_size,
                                            config.enable_prefix_caching);
  e.scheduler = std::make_unique<Scheduler>(
      SchedulerConfig{config.max_num_seqs, config.max_num_batched_tokens, config.enable_prefix_caching}, *e.blocks);
  e.m.kv_bytes_per_block = cost.total();
  e.m.kv_cache_bytes = shape.num_blocks * cost.total();
  e.m.kv_bytes_per_token = shape.bytes_per_token();
  return engine;
}

Status Engine::Impl::validate(const Request& r, std::vector<int32_t>& prompt,
                              std::vector<std::vector<int32_t>>& bad_words) const {
  KV_RETURN_IF_ERROR(r.params.validate());
  if (r.cache_salt.size() > kMaxCacheSaltBytes)  // checked first: every cached block would keep a copy
    return invalid_argument("cache_salt is " + std::to_string(r.cache_salt.size()) + " bytes; at most " +
                            std::to_string(kMaxCacheSaltBytes) +
                            " are allowed (every cached block keeps its salt): use a short tenant id or a hash");
  if (!r.prompt_token_ids.empty()) {
    prompt = r.prompt_token_ids;
  } else {
    // Text far over the context is refused before BPE, which takes about a second per megabyte.
    KV_RETURN_IF_ERROR(check_prompt_text_length(r.prompt.size(), loaded.tokenizer->min_tokens(r.prompt.size()),
                                                max_model_len, r.params.truncate_prompt_tokens.has_value()));
    prompt = loaded.tokenizer->encode(r.prompt);
    if (prompt.empty()) {  // an empty prompt starts from BOS alone
      if (loaded.tokenizer->bos_id() < 0)
        return invalid_argument("the prompt is empty and the model has no BOS token to start from");
      prompt.push_back(loaded.tokenizer->bos_id());
    }
  }
  const bool from_text = r.prompt_token_ids.empty();
  const int32_t bos = from_text && loaded.tokenizer->adds_bos() ? loaded.tokenizer->bos_id() : -1;
  KV_RETURN_IF_ERROR(truncate_prompt(prompt, r.params.truncate_prompt_tokens, max_model_len, bos));
  const int64_t vocab = loaded.model->config().vocab_size;
  for (const auto& [t, bias] : r.params.logit_bias)
    if (t >= vocab)
      return invalid_argument("logit_bias token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
  for (int32_t t : r.params.stop_token_ids)
    if (t >= vocab)
      return invalid_argument("stop_token_ids: token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
  KV_RETURN_IF_ERROR(tokenize_bad_words(r.params, bad_words));
  KV_RETURN_IF_ERROR(check_allowed_tokens(r.params, bad_words));
  for (int32_t t : prompt)
    if (t < 0 || t >= vocab)
      return invalid_argument("prompt token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
  return check_prompt_length(static_cast<int64_t>(prompt.size()), max_model_len,
                             max_model_len < loaded.model->config().max_context);
}

// SamplingParams::bad_words as the token sequences the sampler masks (bad_word_tokens), within vLLM's limits.
Status Engine::Impl::tokenize_bad_words(const SamplingParams& p, std::vector<std::vector<int32_t>>& bad_words) const {
  bad_words = bad_word_tokens(p.bad_words, [&](const std::string& text) {
    return loaded.tokenizer->encode(text, /*add_special=*/false);
  });
  size_t total_tokens = 0;
  for (const std::vector<int32_t>& w : bad_words) total_tokens += w.size();
  if (bad_words.size() > SamplingParams::kMaxBadWords)  // as vLLM counts them
    return invalid_argument("bad_words make " + std::to_string(bad_words.size()) + " token sequences (each word alone "
                            "and after a space); at most " + std::to_string(SamplingParams::kMaxBadWords) +
                            " are allowed: ban fewer words");
  if (total_tokens > SamplingParams::kMaxBadWordTokens)
    return invalid_argument("bad_words make " + std::to_string(total_tokens) + " tokens (each word alone and after "
                            "a space); at most " + std::to_string(SamplingParams::kMaxBadWordTokens) +
                            " are allowed: ban fewer or shorter words");
  return {};
}

// allowed_token_ids: in the tokenizer's vocabulary (as vLLM: a model's may be larger, Qwen2's padding rows), and
// leaving the first draw a token that neither a one-token bad word nor min_tokens masks.
Status Engine::Impl::check_allowed_tokens(const SamplingParams& p,
                                          const std::vector<std::vector<int32_t>>& bad_words) const {
  if (!p.allowed_token_ids) return {};
  const int64_t tokens = loaded.tokenizer->vocab_size();
  std::vector<int32_t> alone;  // the one-token bad words: never drawn
  for (const std::vector<int32_t>& w : bad_words)
    if (w.size() == 1) alone.push_back(w[0]);
  std::sort(alone.begin(), alone.end());
  bool any_first = false;  // a token the first draw may take (before min_tokens, EOS and stop tokens are masked)
  bool any_banned = false;
  for (int32_t t : *p.allowed_token_ids) {
    if (t >= tokens)
      return invalid_argument("allowed_token_ids: token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                              std::to_string(tokens) + ")");
    const bool banned = std::binary_search(alone.begin(), alone.end(), t);
    any_banned = any_banned || banned;
    any_first = any_first || (!banned && (p.min_tokens == 0 || token_stop(p, t) == TokenStop::kNone));
  }
  if (any_first) return {};
  if (!any_banned)
    return invalid_argument("allowed_token_ids holds only end-of-sequence and stop tokens, which min_tokens = " +
                            std::to_string(p.min_tokens) +
                            " forbids at first: nothing could be sampled; allow another token or lower min_tokens");
  return invalid_argument("every token of allowed_token_ids is a word of bad_words" +
                          std::string(p.min_tokens > 0 ? " or an end-of-sequence or stop token, which min_tokens "
                                                         "forbids at first"
                                                       : "") +
                          ": nothing could be sampled; allow another token" +
                          std::string(p.min_tokens > 0 ? ", lower min_tokens" : "") + " or ban fewer words");
}

// The vocabulary as text, gathered for the first request that constrains its output.
const TokenTexts& Engine::Impl::vocab_texts() {
  if (token_texts == nullptr) {
    const BpeTokenizer& tok = *loaded.tokenizer;
    std::vector<std::string> texts(static_cast<size_t>(tok.vocab_size()));
    for (int32_t id = 0; id < tok.vocab_size(); ++id)
      if (!tok.is_special(id)) texts[static_cast<size_t>(id)] = tok.token_piece(id);
    token_texts = std::make_unique<TokenTexts>(std::move(texts), tok.strips_leading_space());
  }
  return *token_texts;
}

// SamplingParams::choice checked against the vocabulary: valid UTF-8, and each choice can be spelled by the tokens.
Result<std::shared_ptr<const ChoiceSet>> Engine::Impl::make_choices(const SamplingParams& p, bool after_text) {
  for (size_t i = 0; i < p.choice->size(); ++i)
    if (sanitize_utf8((*p.choice)[i]) != (*p.choice)[i])
      return invalid_argument("choice[" + std::to_string(i) + "] is not valid UTF-8");
  const TokenTexts& vocab = vocab_texts();
  auto known = std::find_if(known_choices.begin(), known_choices.end(), [&](const KnownChoices& k) {
    return k.after_text == after_text && k.choices == *p.choice;
  });
  if (known == known_choices.end()) {
    KV_ASSIGN_OR_RETURN(ChoiceSet set, ChoiceSet::make(*p.choice, vocab, !after_text));
    constexpr size_t kKnownChoices = 8;
    if (known_choices.size() < kKnownChoices) known_choices.emplace_back();
    known = known_choices.end() - 1;  // the least recent, replaced
    *known = {*p.choice, after_text, std::make_shared<const ChoiceSet>(std::move(set))};
  }
  std::rotate(known_choices.begin(), known, known + 1);
  return known_choices.front().set;
}

Result<std::shared_ptr<const JsonRules>> Engine::Impl::make_json_rules(const SamplingParams& p) {
  const std::string schema = p.json_schema.value_or("");
  const bool whitespace = !p.disable_any_whitespace;
  auto known = std::find_if(known_json.begin(), known_json.end(),
                            [&](const KnownJson& k) { return k.whitespace == whitespace && k.schema == schema; });
  if (known == known_json.end()) {
    if (json_vocab == nullptr) {
      KV_ASSIGN_OR_RETURN(json_vocab, JsonVocabulary::make(vocab_texts()));
    }
    std::shared_ptr<const JsonSchema> compiled = JsonSchema::any_object();
    if (p.json_schema.has_value()) {
      KV_ASSIGN_OR_RETURN(compiled, JsonSchema::compile(*p.json_schema));
    }
    KV_ASSIGN_OR_RETURN(std::shared_ptr<const JsonRules> rules, JsonRules::make(json_vocab, compiled, whitespace));
    constexpr size_t kKnownJson = 8;
    if (known_json.size() < kKnownJson) known_json.emplace_back();
    known = known_json.end() - 1;  // the least recent, replaced
    *known = {schema, whitespace, std::move(rules)};
  }
  std::rotate(known_json.begin(), known, known + 1);
  return known_json.front().rules;
}

// What a request's output must follow (choice, json_object, json_schema), checked once; each completion gets its
// own guide from the maker (null without a constraint). `after_text`: the completion continues prompt text, so its
// first token keeps a leading space.
Result<Engine::Impl::GuideMaker> Engine::Impl::output_rules(const SamplingParams& p, bool after_text) {
  if (p.choice.has_value()) {
    KV_ASSIGN_OR_RETURN(std::shared_ptr<const ChoiceSet> set, make_choices(p, after_text));
    return GuideMaker([this, set] { return follow_choices(set, *token_texts); });
  }
  if (p.json_object || p.json_schema.has_value()) {
    KV_ASSIGN_OR_RETURN(std::shared_ptr<const JsonRules> rules, make_json_rules(p));
    return GuideMaker([rules, after_text] { return follow_json(rules, !after_text); });
  }
  return GuideMaker();
}

// One sequence per completion (n of them), queued together so that they are admitted together and share
// the prompt's full blocks (the first publishes them as planned, the others find them).
Result<int64_t> Engine::Impl::add(const Request& r, bool prefill_only) {
  std::vector<int32_t> prompt;
  std::vector<std::vector<int32_t>> bad_words;
  KV_RETURN_IF_ERROR(validate(r, prompt, bad_words));
  const int64_t num_prompt = static_cast<int64_t>(prompt.size());
  const int64_t max_total = prefill_only ? num_prompt : std::min<int64_t>(num_prompt + r.params.max_tokens, max_model_len);
  // Refused now, not left to fail in a later step: a retry can never succeed (the server answers 400, not 503).
  // Before an id is taken, so that a refusal does not shift the seeds of the requests after it.
  if (!scheduler->fits_whole_cache(Sequence::max_kv_tokens(max_total, prefill_only)))
    return larger_than_kv_cache(num_prompt, max_total, prefill_only);
  const int64_t id = next_id++;
  const uint64_t seed = r.params.seed.has_value() ? *r.params.seed : mix_seed(config.seed, id);
  const int32_t n = prefill_only ? 1 : r.params.n;
  // A completion continues its prompt's text (a SentencePiece leading space is a real space), unless the
  // prompt holds special tokens only (BOS alone).
  bool after_text = false;
  for (int32_t t : prompt) after_text = after_text || !loaded.tokenizer->is_special(t);
  KV_ASSIGN_OR_RETURN(GuideMaker make_guide, output_rules(r.params, after_text));
  if (make_guide && r.params.allowed_token_ids.has_value()) {  // refused now, not at the first draw
    const std::unique_ptr<OutputGuide> probe = make_guide();
    const std::vector<int32_t>& first = probe->allowed(loaded.eos_ids);
    const std::vector<int32_t>& allowed = *r.params.allowed_token_ids;
    if (std::none_of(allowed.begin(), allowed.end(),
                     [&](int32_t t) { return std::binary_search(first.begin(), first.end(), t); }))
      return invalid_argument(std::string("allowed_token_ids holds no token that can begin ") +
                              (r.params.json_object    ? "a JSON object"
                               : r.params.json_schema ? "JSON that follows the schema"
                                                      : "one of the choices") +
                              ": allow one that can (for a JSON object, \"{\")");
  }
  for (int32_t index = 0; index < n; ++index) {
    auto seq = std::make_unique<Sequence>(next_seq_id++, prompt, r.params, r.cache_salt, completion_seed(seed, index));
    seq->request_id = id;
    seq->index = index;
    seq->prefill_only = prefill_only;
    seq->keep_logits = r.keep_logits && !prefill_only;
    seq->wants_prompt_logprobs = r.params.prompt_logprobs.has_value() && index == 0 && !prefill_only;
    seq->max_total_tokens = max_total;
    seq->bad_words = bad_words;
    if (make_guide) seq->guide = make_guide();
    if (!prefill_only && index == 0) m.prompt_tokens += seq->num_prompt_tokens;
    scheduler->add(seq.get());
    decoders[seq->id] = std::make_unique<IncrementalDecoder>(*loaded.tokenizer, r.params.skip_special_tokens, after_text);
    seqs[seq->id] = std::move(seq);
  }
  return id;
}

// The completion's state as an Output. A finished sequence gives up its logprobs (it is dropped next); an
// unfinished one gives the logprobs not given before, and its prompt logprobs once, when they are complete.
Output Engine::Impl::make_output(Sequence& s) const {
  Output o;
  o.request_id = s.request_id;
  o.index = s.index;
  o.text = s.text;
  // Unfinished: hold back a tail that may still become a stop string, so streamed text is never taken back.
  if (s.state != SeqState::kFinished) o.text.resize(s.text.size() - stop_prefix_tail(s.text, s.params.stop));
  o.token_ids.assign(s.tokens.begin() + s.num_prompt_tokens, s.tokens.end());
  o.prompt_token_ids.assign(s.tokens.begin(), s.tokens.begin() + s.num_prompt_tokens);
  o.num_cached_tokens = std::max<int64_t>(s.num_cached_tokens, 0);
  o.finished = s.state == SeqState::kFinished;
  o.finish_reason = s.finish_reason;
  o.stop_str = s.stop_str;
  o.stop_token_id = s.stop_token_id;
  if (o.finished) {
    o.logprobs = std::move(s.logprobs);
    o.prompt_logprobs = std::move(s.prompt_logprobs);
    return o;
  }
  o.logprobs_begin = s.logprobs_sent;
  o.logprobs.assign(s.logprobs.begin() + s.logprobs_sent, s.logprobs.end());
  s.logprobs_sent = static_cast<int64_t>(s.logprobs.size());
  if (s.wants_prompt_logprobs && !s.prompt_logprobs_sent && !s.needs_prompt_logprobs()) {
    o.prompt_logprobs = s.prompt_logprobs;
    s.prompt_logprobs_sent = true;
  }
  return o;
}

void Engine::Impl::finish(Sequence& s, FinishReason reason, std::vector<Output>& out, Status error) {
  scheduler->finish(&s);  // state kFinished: make_output gives everything
  s.finish_reason = reason;
  auto dec = decoders.find(s.id);
  if (dec != decoders.end()) {
    s.text += dec->second->flush();
    decoders.erase(dec);
  }
  Output o = make_output(s);
  o.error = std::move(error);
  o.logits = std::move(s.logits);
  out.push_back(std::move(o));
  seqs.erase(s.id);
}

std::vector<Output> Engine::Impl::step() {
  std::vector<Output> out = std::exchange(pending, {});
  const auto start = std::chrono::steady_clock::now();
  const StepPlan plan = scheduler->schedule();
  note_peak_blocks();
  fail_what_cannot_run(plan, out);
  if (plan.empty()) return out;
  StepWork work;
  const ForwardBatch batch = build_batch(plan, work);
  if (Status st = run_model(batch); !st.ok()) {  // a bug or a bad token slipped through validation
    scheduler->abandon_step(plan);               // fail these requests, keep the engine
    for (const PlannedSeq& p : plan.seqs) finish(*p.seq, FinishReason::kError, out, st);
    return out;
  }
  sample_and_check_stops(plan, out);
  record_step(start, work);
  return out;
}

// The most blocks hold K/V right after planning: the step's blocks are allocated, and none of the sequences
// finishing in this step has released its own yet.
void Engine::Impl::note_peak_blocks() {
  m.peak_blocks_in_use = std::max(m.peak_blocks_in_use,
                                  blocks->num_blocks() - (blocks->num_free_blocks() - blocks->num_evictable_blocks()));
  m.kv_cache_bytes_peak_used = int64_t{m.peak_blocks_in_use} * m.kv_bytes_per_block;
}

// A request whose tokens (prompt and max_tokens, capped by the context) can never fit the whole KV cache.
Status Engine::Impl::larger_than_kv_cache(int64_t prompt_tokens, int64_t max_total_tokens, bool prefix) const {
  const int64_t cache = int64_t{blocks->num_blocks()} * blocks->block_size();
  if (prefix)
    return invalid_argument("the prefix has " + std::to_string(prompt_tokens) + " tokens but the whole KV cache holds " +
                            std::to_string(cache) + "; shorten it, or raise --kv-cache-memory");
  return invalid_argument("the request needs " + std::to_string(Sequence::max_kv_tokens(max_total_tokens, false)) +
                          " tokens of KV cache (a " + std::to_string(prompt_tokens) + "-token prompt and up to " +
                          std::to_string(max_total_tokens - prompt_tokens) +
                          " generated, the last of which is not stored) but the whole cache holds " +
                          std::to_string(cache) + "; " +
                          (prompt_tokens >= cache ? "shorten the prompt" : "lower max_tokens") +
                          ", or raise --kv-cache-memory");
}

// Requests that can never fit fail; so does the head of the queue when nothing could run, nothing runs, and no
// preemption freed blocks for the next try (it cannot fit beside the blocks pinned prefixes hold; the others
// may fit).
void Engine::Impl::fail_what_cannot_run(const StepPlan& plan, std::vector<Output>& out) {
  for (Sequence* s : scheduler->take_unschedulable())  // add() refuses these; kept for any other way in
    finish(*s, FinishReason::kError, out, larger_than_kv_cache(s->num_prompt_tokens, s->max_total_tokens, s->prefill_only));
  if (plan.empty() && !plan.preempted && scheduler->num_running() == 0 && scheduler->first_waiting() != nullptr) {
    finish(*scheduler->first_waiting(), FinishReason::kError, out,
           resource_exhausted("the KV cache has no room for this request while pinned prefixes hold " +
                              std::to_string(blocks->num_used_blocks()) +
                              " blocks; release prefixes or raise --kv-cache-memory"));
  }
}

// One batch over every planned token of every sequence (its K/V slots, and a logits row where a sequence
// reaches its end and at each prompt position whose logprobs it needs), and the step's work for the metrics.
ForwardBatch Engine::Impl::build_batch(const StepPlan& plan, StepWork& work) const {
  ForwardBatch batch;
  const int64_t bs = blocks->block_size();
  for (const PlannedSeq& p : plan.seqs) {
    const Sequence& s = *p.seq;
    const double mean_ctx = static_cast<double>(s.num_computed) + static_cast<double>(p.num_tokens + 1) / 2;
    work.flops += loaded.model->forward_flops(p.num_tokens, mean_ctx);
    work.kv_read_bytes += static_cast<double>(s.num_computed + p.num_tokens) * static_cast<double>(m.kv_bytes_per_token);
    work.has_prefill = work.has_prefill || !s.decodes(p.num_tokens);
    AttentionSeq a;
    a.q_begin = batch.num_tokens();
    a.q_len = p.num_tokens;
    a.context_len = s.num_computed + p.num_tokens;
    a.block_table = s.block_table.data();
    const auto [lp_begin, lp_end] = s.prompt_logprob_positions(p.num_tokens);
    for (int64_t i = s.num_computed; i < s.num_computed + p.num_tokens; ++i) {
      if (i >= lp_begin && i < lp_end) batch.logit_rows.push_back(batch.num_tokens());
      batch.tokens.push_back(s.tokens[i]);
      batch.positions.push_back(static_cast<int32_t>(i));
      batch.slots.push_back(static_cast<int32_t>(s.block_table[i / bs] * bs + i % bs));
    }
    if (a.context_len == s.num_tokens()) batch.logit_rows.push_back(batch.num_tokens() - 1);
    batch.seqs.push_back(a);
  }
  return batch;
}

Status Engine::Impl::run_model(const ForwardBatch& batch) {
  const int64_t vocab = loaded.model->config().vocab_size;
  if (static_cast<int64_t>(logits.size()) < static_cast<int64_t>(batch.logit_rows.size()) * vocab)
    logits.resize(batch.logit_rows.size() * vocab);
  KV_RETURN_IF_ERROR(loaded.model->forward(batch, *kv, act, logits.data()));
  m.computed_tokens += batch.num_tokens();  // a failed step computed nothing that is kept
  return Status();
}

// Each sequence takes its logits rows in batch order: first its prompt positions' (prompt logprobs), then,
// when it reached its end, the row it samples its next token from; EOS, a stop token, a stop string or the
// length limit finishes it.
void Engine::Impl::sample_and_check_stops(const StepPlan& plan, std::vector<Output>& out) {
  const int64_t vocab = loaded.model->config().vocab_size;
  int64_t row = 0;
  for (const PlannedSeq& p : plan.seqs) {
    Sequence& s = *p.seq;
    const auto [lp_begin, lp_end] = s.prompt_logprob_positions(p.num_tokens);
    KV_CHECK(lp_begin == lp_end || lp_begin == static_cast<int64_t>(s.prompt_logprobs.size()),
             "prompt logprobs must be computed position after position");
    const bool reaches_end = s.num_computed + p.num_tokens == s.num_tokens();
    const int64_t first_row = row;
    row += (lp_end - lp_begin) + (reaches_end ? 1 : 0);  // this sequence's rows, as build_batch laid them out
    if (Status st = record_prompt_logprobs(s, lp_end - lp_begin, first_row); !st.ok()) {
      finish(s, FinishReason::kError, out, st);
      continue;
    }
    s.num_computed += p.num_tokens;
    if (!reaches_end) continue;  // a prefill chunk short of the end
    const float* row_logits = logits.data() + (row - 1) * vocab;
    if (s.prefill_only) {
      finish(s, FinishReason::kStop, out);
      continue;
    }
    if (s.keep_logits) s.logits.insert(s.logits.end(), row_logits, row_logits + vocab);
    if (Status st = check_finite(row_logits, vocab, s.num_tokens()); !st.ok()) {
      finish(s, FinishReason::kError, out, st);  // greedy would pick token 0 forever, logprobs would be NaN
      continue;
    }
    TokenHistory history{s.tokens, static_cast<size_t>(s.num_prompt_tokens), loaded.eos_ids, s.bad_words};
    if (s.guide != nullptr)  // EOS may end a choice that another one continues
      history.guide_tokens = &s.guide->allowed(s.params.ignore_eos ? std::span<const int32_t>() : loaded.eos_ids);
    GeneratedTokenLogprobs lp;
    const int32_t token = sampler.sample(row_logits, vocab, s.params, history, s.rng, &lp);
    if (token == Sampler::kNothingToSample) {
      finish(s, FinishReason::kError, out,
             invalid_argument("no token can be generated after " + std::to_string(s.num_generated()) +
                              " tokens: allowed_token_ids, choice or JSON, bad_words and min_tokens together "
                              "mask every token; allow more tokens or ban fewer"));
      continue;
    }
    if (s.guide != nullptr) s.guide->advance(token);
    s.tokens.push_back(token);
    if (s.params.logprobs.has_value()) s.logprobs.push_back(std::move(lp));
    ++m.generated_tokens;
    const size_t checked = s.text.size();
    // The EOS or stop token that ends the request is not part of its text (unless include_stop_str_in_output),
    // as in vLLM: with skip_special_tokens off, a chat reply would end in "<|im_end|>".
    // EOS and stop tokens end it from min_tokens on (the sampler masks them before).
    const TokenStop by_token = s.num_generated() >= s.params.min_tokens ? token_stop(s.params, token) : TokenStop::kNone;
    if (by_token == TokenStop::kNone || s.params.include_stop_str_in_output) s.text += decoders[s.id]->push(token);
    FinishReason reason = stop_check(s, token, checked, by_token);
    // A whole choice that no other one goes on from, a closed JSON object: complete, also on the last token allowed.
    if (reason != FinishReason::kStop && s.guide != nullptr && s.guide->complete()) reason = FinishReason::kStop;
    if (reason != FinishReason::kNone) {
      finish(s, reason, out);
    } else {
      out.push_back(make_output(s));
    }
  }
}

// A logits row with NaN or infinity comes from weights that hold them (or overflow in the model): nothing can
// be sampled from it.
Status Engine::Impl::check_finite(const float* row_logits, int64_t vocab, int64_t position) {
  for (int64_t t = 0; t < vocab; ++t)
    if (!std::isfinite(row_logits[t]))
      return data_loss("the model computed a logit of " + std::string(std::isnan(row_logits[t]) ? "NaN" : "infinity") +
                       " (token " + std::to_string(t) + ", after " + std::to_string(position) +
                       " tokens): the computation overflowed float32 (the weights were checked finite at load), so the "
                       "model's weights or config values are out of range; check the model files");
  return Status();
}

// The `positions` logits rows from `row` on are prompt positions prompt_logprobs.size(), ...: each gives the
// log-probability of the prompt token after it. A row that is not finite fails the sequence, as a sampled one.
Status Engine::Impl::record_prompt_logprobs(Sequence& s, int64_t positions, int64_t row) {
  const int64_t vocab = loaded.model->config().vocab_size;
  for (int64_t i = 0; i < positions; ++i) {
    const int64_t next = static_cast<int64_t>(s.prompt_logprobs.size()) + 1;
    const float* row_logits = logits.data() + (row + i) * vocab;
    KV_RETURN_IF_ERROR(check_finite(row_logits, vocab, next));
    GeneratedTokenLogprobs lp;
    token_logprobs(row_logits, vocab, s.tokens[next], *s.params.prompt_logprobs, lp);
    s.prompt_logprobs.push_back(std::move(lp));
  }
  return Status();
}

// Whether `token` ends a request of `p` as an EOS (unless ignore_eos) or as a stop token, EOS first as in vLLM:
// the tokens the sampler masks before min_tokens.
Engine::Impl::TokenStop Engine::Impl::token_stop(const SamplingParams& p, int32_t token) const {
  const auto& eos = loaded.eos_ids;
  if (!p.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) return TokenStop::kEos;
  const auto& stops = p.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return TokenStop::kStopToken;
  return TokenStop::kNone;
}

// Why `s` stops after its newest `token` (kNone: it goes on). EOS and stop tokens come first (`by_token`, from token_stop);
// otherwise a stop string counts when the text after `checked` completes one (at the length limit too), and cuts
// the text there.
FinishReason Engine::Impl::stop_check(Sequence& s, int32_t token, size_t checked, TokenStop by_token) {
  const bool may_stop = s.num_generated() >= s.params.min_tokens;
  FinishReason reason = FinishReason::kNone;
  if (by_token != TokenStop::kNone) {
    reason = FinishReason::kStop;
    if (by_token == TokenStop::kStopToken) s.stop_token_id = token;
  } else if (s.num_tokens() >= s.max_total_tokens) {
    reason = FinishReason::kLength;
  }
  if (s.params.stop.empty() || !may_stop || reason == FinishReason::kStop) return reason;
  if (reason != FinishReason::kNone) {  // the last text the decoder holds may complete a stop string
    auto dec = decoders.find(s.id);
    s.text += dec->second->flush();
    decoders.erase(dec);
  }
  if (auto match = find_stop_string(s.text, checked, s.params.stop)) {
    const std::string& str = s.params.stop[match->which];
    s.text.resize(match->pos + (s.params.include_stop_str_in_output ? str.size() : 0));
    s.stop_str = str;
    reason = FinishReason::kStop;
    // The text ends at the stop string: bytes the decoder still holds (part of a character) come after it, and
    // finish() would have added them as U+FFFD.
    decoders.erase(s.id);
  }
  return reason;
}

void Engine::Impl::record_step(std::chrono::steady_clock::time_point start, const StepWork& work) {
  m.steps++;
  m.last_step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  m.step_seconds_total += m.last_step_seconds;
  if (work.has_prefill) {
    m.prefill_seconds += m.last_step_seconds;
    m.prefill_flops += work.flops;
  } else {
    m.decode_seconds += m.last_step_seconds;
    m.decode_flops += work.flops;
    m.decode_bytes += loaded.model->weight_bytes() + work.kv_read_bytes;
  }
}

std::vector<Output> Engine::generate(const std::vector<Request>& requests,
                                     const std::function<void(const Output&)>& on_finished,
                                     const std::function<bool()>& stop_requested, bool all_or_none) {
  // Request i's completions take places first_of[i] .. first_of[i] + n - 1 of the results.
  std::vector<size_t> first_of(requests.size());
  size_t total = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    first_of[i] = total;
    total += static_cast<size_t>(requests[i].params.num_outputs());
  }
  std::vector<Output> results(total);
  std::unordered_map<int64_t, size_t> index_of;
  // Requests queued before this call (through add_request, or preempted) keep their places ahead of the batch.
  const size_t queued_before = static_cast<size_t>(impl_->scheduler->num_waiting());
  bool any_bad = false;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = impl_->add(requests[i], /*prefill_only=*/false);
    if (id.ok()) {
      index_of[*id] = i;
      continue;
    }
    any_bad = true;
    const size_t end = i + 1 < requests.size() ? first_of[i + 1] : total;
    for (size_t k = first_of[i]; k < end; ++k) {
      results[k].index = static_cast<int32_t>(k - first_of[i]);
      results[k].finished = true;
      results[k].finish_reason = FinishReason::kError;
      results[k].error = id.status();
      if (on_finished) on_finished(results[k]);
    }
  }
  impl_->scheduler->sort_waiting_by_prefix(queued_before);
  // Requests added earlier through add_request run along; their outputs are kept for the next step().
  std::vector<Output> others;
  auto take = [&](std::vector<Output> outs, bool report) {
    for (Output& o : outs) {
      auto it = index_of.find(o.request_id);
      if (it == index_of.end()) {
        others.push_back(std::move(o));
        continue;
      }
      if (!o.finished) continue;
      if (report && on_finished) on_finished(o);
      results[first_of[it->second] + static_cast<size_t>(o.index)] = std::move(o);
    }
  };
  while (impl_->scheduler->has_work() || !impl_->pending.empty()) {
    if ((all_or_none && any_bad) || (stop_requested && stop_requested())) {
      for (const auto& entry : index_of) abort(entry.first);  // unfinished completions' outputs go to `pending`
      take(std::exchange(impl_->pending, {}), /*report=*/false);
      break;
    }
    take(impl_->step(), /*report=*/true);
  }
  impl_->pending = std::move(others);
  return results;
}

Result<int64_t> Engine::add_request(const Request& request) {
  return impl_->add(request, /*prefill_only=*/false);
}

std::vector<Output> Engine::step() { return impl_->step(); }

bool Engine::has_unfinished() const { return impl_->scheduler->has_work() || !impl_->pending.empty(); }

void Engine::abort(int64_t request_id) {
  std::vector<Sequence*> completions;
  for (auto& [id, seq] : impl_->seqs)
    if (seq->request_id == request_id) completions.push_back(seq.get());
  std::sort(completions.begin(), completions.end(), [](const Sequence* a, const Sequence* b) { return a->index < b->index; });
  for (Sequence* s : completions) impl_->finish(*s, FinishReason::kAbort, impl_->pending);
}

Result<int64_t> Engine::cache_prefix(const std::vector<int32_t>& tokens, const std::string& cache_salt,
                                     const std::function<bool()>& stop_requested) {
  if (!impl_->config.enable_prefix_caching)
    return invalid_argument("cache_prefix needs prefix caching; it is switched off (--no-prefix-cache)");
  if (tokens.empty()) return invalid_argument("cache_prefix: the prefix is empty");
  Request r;
  r.prompt_token_ids = tokens;
  r.cache_salt = cache_salt;
  KV_ASSIGN_OR_RETURN(int64_t id, impl_->add(r, /*prefill_only=*/true));
  // Drive the loop until the prefix is computed; other requests' outputs wait in `pending`.
  bool done = false;
  Status error;
  while (!done) {
    if (stop_requested && stop_requested()) {
      abort(id);  // its output (kAbort) is the only one of it in `pending`
      std::erase_if(impl_->pending, [id](const Output& o) { return o.request_id == id; });
      return cancelled("cache_prefix was stopped before the prefix was computed; nothing was pinned");
    }
    std::vector<Output> outs = impl_->step();
    for (Output& o : outs) {
      if (o.request_id == id) {
        done = true;
        error = o.error;
      } else {
        impl_->pending.push_back(std::move(o));
      }
    }
  }
  if (!error.ok()) return error;
  // Pin the prefix's full blocks: find them again in the index and hold a reference.
  const int32_t full = static_cast<int32_t>(tokens.size() / impl_->blocks->block_size());
  std::vector<int32_t> held = impl_->blocks->match_prefix(tokens, cache_salt, full);
  impl_->blocks->acquire(held);
  const int64_t handle = id;
  impl_->pinned[handle] = std::move(held);
  return handle;
}

Result<int64_t> Engine::cache_prefix(const std::string& text, const std::string& cache_salt,
                                     const std::function<bool()>& stop_requested) {
  std::vector<int32_t> tokens = impl_->loaded.tokenizer->encode(text);
  return cache_prefix(tokens, cache_salt, stop_requested);
}

Status Engine::release_prefix(int64_t handle) {
  auto it = impl_->pinned.find(handle);
  if (it == impl_->pinned.end()) return not_found("no pinned prefix with handle " + std::to_string(handle));
  impl_->blocks->release_chain(it->second);
  impl_->pinned.erase(it);
  return {};
}

int64_t Engine::reset_prefix_cache() { return impl_->blocks->drop_evictable(); }

const Tokenizer& Engine::tokenizer() const { return *impl_->tokenizer; }
const ModelConfig& Engine::model_config() const { return impl_->loaded.model->config(); }
const EngineConfig& Engine::config() const { return impl_->config; }
int64_t Engine::max_model_len() const { return impl_->max_model_len; }
double Engine::forward_flops(int64_t tokens, double context) const {
  return impl_->loaded.model->forward_flops(tokens, context);
}

EngineMetrics Engine::metrics() const {
  EngineMetrics m = impl_->m;
  const SchedulerStats& st = impl_->scheduler->stats();
  m.prefix_queried_tokens = st.prefix_queried_tokens;
  m.prefix_hit_tokens = st.prefix_hit_tokens;
  m.preemptions = st.preemptions;
  m.blocks_total = impl_->blocks->num_blocks();
  m.blocks_used = impl_->blocks->num_used_blocks();
  m.blocks_cached = impl_->blocks->num_evictable_blocks();
  m.blocks_free = impl_->blocks->num_free_blocks() - m.blocks_cached;
  m.num_running = impl_->scheduler->num_running();
  m.num_waiting = impl_->scheduler->num_waiting();
  return m;
}

}  // namespace kvshare
