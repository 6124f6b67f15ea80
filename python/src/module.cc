// kvshare._kvshare: the C++ half of the Python module `kvshare`, a thin binding over the public API in
// include/kvshare/ (nothing else). The Python half (python/kvshare/__init__.py) turns vLLM-style arguments into
// these calls.
//
// The engine runs with the GIL released. It is not thread-safe, so each engine has a mutex: two Python
// threads that share an LLM take turns. Between steps, generate takes the GIL back now and then to run Python's
// signal handlers, so Ctrl-C stops a long batch (its unfinished requests are aborted) and raises
// KeyboardInterrupt.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kvshare/engine.h"
#include "kvshare/sampling_params.h"
#include "kvshare/tokenizer.h"

namespace py = pybind11;

namespace kvshare::python {
namespace {

// One token's logprobs: {token id: (logprob, rank)} of the chosen token and the top ones, built as vLLM builds
// its dict: the chosen token first, then the top ones ranked 1..k (a chosen token among them takes its place
// there). The Python half makes Logprob objects of them.
py::dict logprob_dict(const GeneratedTokenLogprobs& t) {
  py::dict d;
  d[py::int_(t.chosen.token_id)] = py::make_tuple(t.chosen.logprob, t.chosen_rank);
  for (size_t i = 0; i < t.top.size(); ++i)
    d[py::int_(t.top[i].token_id)] = py::make_tuple(t.top[i].logprob, static_cast<int64_t>(i + 1));
  return d;
}

// Text from the engine as a Python str; bytes that are not UTF-8 (a token cut inside a character) become
// U+FFFD, as in the CLI's JSON output.
py::str to_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// Raises the Python exception that fits the status: FileNotFoundError for a missing file, ValueError for
// bad input, RuntimeError otherwise. The message is the engine's own, as a str whose bytes that are not UTF-8 are
// replaced (thrown as a C++ message, it was decoded strictly: a name a file gave with such a byte raised
// UnicodeDecodeError instead, and a NUL cut it short). Called with the GIL held.
[[noreturn]] void raise(const Status& status) {
  PyObject* type = PyExc_RuntimeError;
  switch (status.code()) {
    case StatusCode::kNotFound:
      type = PyExc_FileNotFoundError;
      break;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kUnimplemented:
    case StatusCode::kDataLoss:
      type = PyExc_ValueError;
      break;
    case StatusCode::kResourceExhausted:
    case StatusCode::kCancelled:
    case StatusCode::kInternal:
    case StatusCode::kOk:
      break;
  }
  const py::str message = to_str(status.message());
  PyErr_SetObject(type, message.ptr());
  throw py::error_already_set();
}

int32_t to_int32(int64_t v, const char* what) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    throw py::value_error(std::string(what) + " " + std::to_string(v) + " does not fit in 32 bits");
  return static_cast<int32_t>(v);
}

std::vector<int32_t> to_ids(const std::vector<int64_t>& ids, const char* what) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (int64_t v : ids) out.push_back(to_int32(v, what));
  return out;
}

// `logit_bias` as vLLM takes it: None or {token id: bias}.
std::map<int32_t, float> to_logit_bias(const std::optional<std::map<int64_t, double>>& bias) {
  std::map<int32_t, float> out;
  if (bias)
    for (const auto& [id, b] : *bias) out[to_int32(id, "logit_bias token id")] = static_cast<float>(b);
  return out;
}

// `stop` as vLLM takes it: None, one string, or a list of strings.
std::vector<std::string> to_stop_strings(const py::object& stop) {
  if (stop.is_none()) return {};
  if (py::isinstance<py::str>(stop)) return {stop.cast<std::string>()};
  std::vector<std::string> out;
  if (py::isinstance<py::sequence>(stop) && !py::isinstance<py::bytes>(stop)) {
    for (const py::handle& s : stop.cast<py::sequence>()) {
      if (!py::isinstance<py::str>(s)) throw py::type_error("stop must be a str or a list of str, got a list holding " +
                                                            std::string(py::str(s.get_type().attr("__name__"))));
      out.push_back(s.cast<std::string>());
    }
    return out;
  }
  throw py::type_error("stop must be a str or a list of str, got " + std::string(py::str(stop.get_type().attr("__name__"))));
}

SamplingParams make_sampling_params(double temperature, double top_p, std::optional<int64_t> top_k,
                                    int64_t max_tokens, std::optional<uint64_t> seed,
                                    std::optional<std::vector<int64_t>> stop_token_ids, bool ignore_eos,
                                    double min_p, double presence_penalty, double frequency_penalty,
                                    double repetition_penalty, std::optional<std::map<int64_t, double>> logit_bias,
                                    int64_t min_tokens, const py::object& stop, bool include_stop_str_in_output,
                                    int64_t n, std::optional<int64_t> logprobs,
                                    std::optional<int64_t> prompt_logprobs,
                                    std::optional<std::vector<int64_t>> allowed_token_ids, bool skip_special_tokens,
                                    std::optional<int64_t> truncate_prompt_tokens, std::vector<std::string> bad_words,
                                    std::optional<std::vector<std::string>> choice, bool json_object,
                                    std::optional<std::string> json_schema, bool disable_any_whitespace) {
  SamplingParams p;
  p.min_p = static_cast<float>(min_p);
  p.presence_penalty = static_cast<float>(presence_penalty);
  p.frequency_penalty = static_cast<float>(frequency_penalty);
  p.repetition_penalty = static_cast<float>(repetition_penalty);
  p.logit_bias = to_logit_bias(logit_bias);
  p.min_tokens = to_int32(min_tokens, "min_tokens");
  p.stop = to_stop_strings(stop);
  p.include_stop_str_in_output = include_stop_str_in_output;
  p.n = to_int32(n, "n");
  if (logprobs) p.logprobs = to_int32(*logprobs, "logprobs");
  if (prompt_logprobs) p.prompt_logprobs = to_int32(*prompt_logprobs, "prompt_logprobs");
  p.temperature = static_cast<float>(temperature);
  p.top_p = static_cast<float>(top_p);
  p.top_k = top_k ? to_int32(*top_k, "top_k") : -1;
  p.max_tokens = to_int32(max_tokens, "max_tokens");
  p.seed = seed;  // kvshare.SamplingParams checks it is in [0, 2**64)
  if (stop_token_ids) p.stop_token_ids = to_ids(*stop_token_ids, "stop token id");
  if (allowed_token_ids) p.allowed_token_ids = to_ids(*allowed_token_ids, "allowed token id");
  p.skip_special_tokens = skip_special_tokens;
  if (truncate_prompt_tokens) p.truncate_prompt_tokens = to_int32(*truncate_prompt_tokens, "truncate_prompt_tokens");
  p.bad_words = std::move(bad_words);
  p.choice = std::move(choice);
  p.json_object = json_object;
  p.json_schema = std::move(json_schema);
  p.disable_any_whitespace = disable_any_whitespace;
  p.ignore_eos = ignore_eos;
  if (Status st = p.validate(); !st.ok()) raise(st);
  return p;
}

// One engine and the lock that keeps Python threads from driving it at the same time.
struct PyEngine {
  std::unique_ptr<Engine> engine;
  std::mutex mu;
  std::atomic<std::thread::id> owner{};  // the thread that holds `mu`
};

// The engine's lock, taken without holding the GIL while waiting (another thread may hold the lock and need the
// GIL for a progress callback). The thread that holds it may run Python meanwhile (a progress callback, a
// signal handler); if that calls the same LLM, waiting would hang the process for good, so it is refused.
class EngineLock {
 public:
  explicit EngineLock(PyEngine& e) : e_(e) {
    if (e.owner.load() == std::this_thread::get_id())
      throw std::runtime_error("this LLM is already running on this thread: it was called from inside its own "
                               "generate or chat (a progress callback or a signal handler); call it after that "
                               "returns");
    py::gil_scoped_release release;
    lock_ = std::unique_lock<std::mutex>(e.mu);
    e.owner = std::this_thread::get_id();
  }
  ~EngineLock() { e_.owner = std::thread::id(); }
  EngineLock(const EngineLock&) = delete;
  EngineLock& operator=(const EngineLock&) = delete;

 private:
  PyEngine& e_;
  std::unique_lock<std::mutex> lock_;
};

// The Python error raised during a batch, by a progress callback or by a signal handler (Ctrl-C), and how often
// signals are checked: each check takes the GIL, which other Python threads may be holding.
class PythonInterrupts {
 public:
  explicit PythonInterrupts(py::object on_finished) : on_finished_(std::move(on_finished)) {}

  // Calls on_finished (with the GIL); once it raised, no more calls.
  void finished() {
    if (on_finished_.is_none()) return;
    py::gil_scoped_acquire gil;
    if (error_) return;
    try {
      on_finished_();
    } catch (py::error_already_set& e) {
      error_.emplace(std::move(e));
    }
  }

  // True once a callback raised or a signal handler did (KeyboardInterrupt for SIGINT). Looks at most every
  // 20 ms; a step of a big batch takes longer than that, a decode step of a tiny model far less.
  bool stop_requested() {
    if (error_) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_check_ < std::chrono::milliseconds(20)) return false;
    last_check_ = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) error_.emplace();  // fetches the exception the handler raised
    return error_.has_value();
  }

  // Raises the error, if any (with the GIL held).
  void rethrow() {
    if (error_) throw std::move(*error_);
  }

 private:
  py::object on_finished_;
  std::optional<py::error_already_set> error_;
  std::chrono::steady_clock::time_point last_check_{};
};

py::dict metrics_dict(const EngineMetrics& m) {
  py::dict d;
  d["prefix_queried_tokens"] = m.prefix_queried_tokens;
  d["prefix_hit_tokens"] = m.prefix_hit_tokens;
  d["computed_tokens"] = m.computed_tokens;
  d["prompt_tokens"] = m.prompt_tokens;
  d["generated_tokens"] = m.generated_tokens;
  d["preemptions"] = m.preemptions;
  d["steps"] = m.steps;
  d["step_seconds_total"] = m.step_seconds_total;
  d["last_step_seconds"] = m.last_step_seconds;
  d["prefill_seconds"] = m.prefill_seconds;
  d["decode_seconds"] = m.decode_seconds;
  d["prefill_flops"] = m.prefill_flops;
  d["decode_flops"] = m.decode_flops;
  d["decode_bytes"] = m.decode_bytes;
  d["peak_blocks_in_use"] = m.peak_blocks_in_use;
  d["kv_cache_bytes_peak_used"] = m.kv_cache_bytes_peak_used;
  d["blocks_total"] = m.blocks_total;
  d["blocks_used"] = m.blocks_used;
  d["blocks_cached"] = m.blocks_cached;
  d["blocks_free"] = m.blocks_free;
  d["num_running"] = m.num_running;
  d["num_waiting"] = m.num_waiting;
  d["kv_cache_bytes"] = m.kv_cache_bytes;
  d["kv_bytes_per_block"] = m.kv_bytes_per_block;
  d["kv_bytes_per_token"] = m.kv_bytes_per_token;
  return d;
}

}  // namespace
}  // namespace kvshare::python

PYBIND11_MODULE(_kvshare, m) {
  using namespace kvshare;
  using namespace kvshare::python;
  m.doc() = "kvshare's C++ engine; use the classes of the kvshare package instead";
  m.attr("MAX_KV_CACHE_FRACTION") = kMaxKvCacheFraction;

  // Built from kvshare.SamplingParams (a Python class, so that its lists can be changed in place, as vLLM's) when
  // a request is made: the constructor converts and validates every field (ValueError or TypeError naming it).
  py::class_<SamplingParams>(m, "_SamplingParams")
      .def(py::init(&make_sampling_params), py::kw_only(), py::arg("temperature"), py::arg("top_p"),
           py::arg("top_k"), py::arg("max_tokens"), py::arg("seed"), py::arg("stop_token_ids"),
           py::arg("ignore_eos"), py::arg("min_p"), py::arg("presence_penalty"), py::arg("frequency_penalty"),
           py::arg("repetition_penalty"), py::arg("logit_bias"), py::arg("min_tokens"), py::arg("stop"),
           py::arg("include_stop_str_in_output"), py::arg("n"), py::arg("logprobs"), py::arg("prompt_logprobs"),
           py::arg("allowed_token_ids"), py::arg("skip_special_tokens"), py::arg("truncate_prompt_tokens"),
           py::arg("bad_words"), py::arg("choice"), py::arg("json_object"), py::arg("json_schema"),
           py::arg("disable_any_whitespace"))
      .def_readonly("n", &SamplingParams::n)
      .def_readonly("prompt_logprobs", &SamplingParams::prompt_logprobs);

  py::class_<Request>(m, "_Request")
      .def(py::init([](std::optional<std::string> prompt, std::optional<std::vector<int64_t>> prompt_token_ids,
                       const SamplingParams& params, std::string cache_salt) {
             Request r;
             if (prompt) r.prompt = *prompt;
             if (prompt_token_ids) r.prompt_token_ids = to_ids(*prompt_token_ids, "prompt token id");
             r.params = params;
             r.cache_salt = std::move(cache_salt);
             return r;
           }),
           py::arg("prompt"), py::arg("prompt_token_ids"), py::arg("params"), py::arg("cache_salt"));

  py::class_<Output>(m, "_Output")
      .def_readonly("request_id", &Output::request_id)
      .def_readonly("index", &Output::index)
      .def_property_readonly("stop_reason",
                             [](const Output& o) -> py::object {
                               if (!o.stop_str.empty()) return to_str(o.stop_str);
                               if (o.stop_token_id >= 0) return py::int_(o.stop_token_id);
                               return py::none();
                             })
      // Per generated token: {token id: (logprob, rank)} holding the chosen token and the top ones (None when
      // the request did not ask for logprobs).
      .def_property_readonly("logprobs",
                             [](const Output& o) -> py::object {
                               if (o.logprobs.empty()) return py::none();
                               py::list out;
                               for (const GeneratedTokenLogprobs& t : o.logprobs) out.append(logprob_dict(t));
                               return out;
                             })
      // The request's prompt logprobs, as vLLM's: None for the first prompt token, then {token id: (logprob,
      // rank)} per token (completion 0 carries them; None when the request did not ask).
      .def_property_readonly("prompt_logprobs",
                             [](const Output& o) -> py::object {
                               if (o.prompt_logprobs.empty()) return py::none();
                               py::list out;
                               out.append(py::none());
                               for (const GeneratedTokenLogprobs& t : o.prompt_logprobs) out.append(logprob_dict(t));
                               return out;
                             })
      .def_property_readonly("text", [](const Output& o) { return to_str(o.text); })
      .def_readonly("token_ids", &Output::token_ids)
      .def_readonly("prompt_token_ids", &Output::prompt_token_ids)
      .def_readonly("num_cached_tokens", &Output::num_cached_tokens)
      .def_readonly("finished", &Output::finished)
      .def_property_readonly("finish_reason",
                             [](const Output& o) -> py::object {
                               if (o.finish_reason == FinishReason::kNone) return py::none();
                               return py::str(finish_reason_name(o.finish_reason));
                             })
      .def_property_readonly("error", [](const Output& o) -> py::object {
        if (o.error.ok()) return py::none();
        return py::make_tuple(status_code_name(o.error.code()), to_str(o.error.message()));
      });

  // The public Tokenizer (immutable, so no lock): the engine's, or one loaded alone. kvshare.Tokenizer wraps it.
  py::class_<Tokenizer>(m, "_Tokenizer", "The model's tokenizer and chat template (include/kvshare/tokenizer.h).")
      .def_static(
          "load",
          [](const std::string& path) {
            Result<std::unique_ptr<Tokenizer>> loaded = Status();
            {
              py::gil_scoped_release release;
              loaded = Tokenizer::load(path);
            }
            if (!loaded.ok()) raise(loaded.status());
            return std::move(loaded).value();
          },
          py::arg("path"))
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text, bool add_special, bool parse_special) {
            py::gil_scoped_release release;
            return t.encode(text, add_special, parse_special);
          },
          py::arg("text"), py::arg("add_special"), py::arg("parse_special"))
      .def(
          "decode",
          [](const Tokenizer& t, const std::vector<int64_t>& ids, bool skip_special) {
            return to_str(t.decode(to_ids(ids, "token id"), skip_special));
          },
          py::arg("token_ids"), py::arg("skip_special"))
      .def("id_to_token", [](const Tokenizer& t, int32_t id) { return to_str(t.id_to_token(id)); }, py::arg("id"))
      .def("token_piece", [](const Tokenizer& t, int32_t id) { return py::bytes(t.token_piece(id)); }, py::arg("id"))
      .def("is_special", &Tokenizer::is_special, py::arg("id"))
      .def("vocab_size", &Tokenizer::vocab_size)
      .def("bos_id", &Tokenizer::bos_id)
      .def("eos_id", &Tokenizer::eos_id)
      .def("eos_ids", &Tokenizer::eos_ids)
      .def("adds_bos", &Tokenizer::adds_bos)
      .def("has_chat_template", &Tokenizer::has_chat_template)
      // `conversation` is JSON text: a list of messages or an object with "messages" and other variables.
      .def(
          "apply_chat_template",
          [](const Tokenizer& t, const std::string& conversation, bool add_generation_prompt,
             bool continue_final_message, std::optional<std::string> chat_template, bool tool_arguments_as_objects) {
            ChatTemplateOptions options;
            options.add_generation_prompt = add_generation_prompt;
            options.continue_final_message = continue_final_message;
            options.tool_arguments_as_objects = tool_arguments_as_objects;
            if (chat_template) options.chat_template = *chat_template;
            Result<std::string> prompt = Status();
            {
              py::gil_scoped_release release;
              prompt = t.apply_chat_template(conversation, options);
            }
            if (!prompt.ok()) raise(prompt.status());
            return to_str(*prompt);
          },
          py::arg("conversation"), py::arg("add_generation_prompt"), py::arg("continue_final_message"),
          py::arg("chat_template"), py::arg("tool_arguments_as_objects") = false);

  py::class_<PyEngine>(m, "_Engine")
      .def(py::init([](const std::string& model, int64_t kv_cache_bytes, double kv_cache_fraction, int64_t block_size,
                       int64_t max_num_seqs, int64_t max_num_batched_tokens, int64_t max_model_len,
                       bool enable_prefix_caching, uint64_t seed, bool kv_cache_prefault) {
             EngineConfig c;
             c.model_path = model;
             c.kv_cache_bytes = kv_cache_bytes;
             c.kv_cache_fraction = kv_cache_fraction;
             c.block_size = to_int32(block_size, "block_size");
             c.max_num_seqs = to_int32(max_num_seqs, "max_num_seqs");
             c.max_num_batched_tokens = to_int32(max_num_batched_tokens, "max_num_batched_tokens");
             c.max_model_len = to_int32(max_model_len, "max_model_len");
             c.enable_prefix_caching = enable_prefix_caching;
             c.seed = seed;
             c.kv_cache_prefault = kv_cache_prefault;
             auto engine = std::make_unique<PyEngine>();
             Result<std::unique_ptr<Engine>> created = Status();
             {
               py::gil_scoped_release release;
               created = Engine::create(c);
             }
             if (!created.ok()) raise(created.status());
             engine->engine = std::move(created).value();
             return engine;
           }),
           py::arg("model"), py::arg("kv_cache_bytes"), py::arg("kv_cache_fraction"), py::arg("block_size"),
           py::arg("max_num_seqs"), py::arg("max_num_batched_tokens"), py::arg("max_model_len"),
           py::arg("enable_prefix_caching"), py::arg("seed"), py::arg("kv_cache_prefault"))
      // Runs every request to the end (GIL released); outputs in request order. A bad request stops the batch
      // before any of it runs (its outputs carry the error, the others' finish with "abort"). `on_finished`,
      // when not None, is called with the GIL held as each request finishes. When it raises, or a signal
      // handler does (Ctrl-C: KeyboardInterrupt), the batch's unfinished requests are aborted and the
      // exception is raised.
      .def("generate",
           [](PyEngine& self, const std::vector<Request>& requests, py::object on_finished) {
             EngineLock lock(self);
             PythonInterrupts interrupts(std::move(on_finished));
             std::vector<Output> outputs;
             {
               py::gil_scoped_release release;
               outputs = self.engine->generate(
                   requests, [&](const Output&) { interrupts.finished(); },
                   [&] { return interrupts.stop_requested(); }, /*all_or_none=*/true);
             }
             interrupts.rethrow();
             return outputs;
           },
           py::arg("requests"), py::arg("on_finished") = py::none())
      .def("tokenizer", [](PyEngine& self) -> const Tokenizer& { return self.engine->tokenizer(); },
           py::return_value_policy::reference_internal)  // the tokenizer keeps its engine alive
      .def("metrics",
           [](PyEngine& self) {
             EngineLock lock(self);
             return metrics_dict(self.engine->metrics());
           })
      .def("cache_prefix",
           [](PyEngine& self, std::optional<std::string> text, std::optional<std::vector<int64_t>> ids,
              const std::string& cache_salt) {
             std::vector<int32_t> ids32;
             if (ids) ids32 = to_ids(*ids, "prefix token id");
             EngineLock lock(self);
             PythonInterrupts interrupts{py::none()};  // Ctrl-C stops a long prefix's computation
             Result<int64_t> handle = Status();
             {
               py::gil_scoped_release release;
               auto stop = [&] { return interrupts.stop_requested(); };
               handle = text ? self.engine->cache_prefix(*text, cache_salt, stop)
                             : self.engine->cache_prefix(ids32, cache_salt, stop);
             }
             interrupts.rethrow();
             if (!handle.ok()) raise(handle.status());
             return handle.value();
           },
           py::arg("text"), py::arg("token_ids"), py::arg("cache_salt"))
      .def("release_prefix", [](PyEngine& self, int64_t handle) {
        EngineLock lock(self);
        // An unknown handle is a bad argument (ValueError), not a missing file.
        if (Status st = self.engine->release_prefix(handle); !st.ok()) throw py::value_error(st.message());
      })
      .def("reset_prefix_cache", [](PyEngine& self) {
        EngineLock lock(self);
        return self.engine->reset_prefix_cache();
      });
}
