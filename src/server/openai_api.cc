#include "server/openai_api.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <utility>

#include "chat/messages.h"
#include "core/json_limits.h"
#include "formats/json_error.h"
#include "sampling/choice.h"
#include "sampling/json_schema.h"
#include "server/tool_calls.h"
#include "tokenizer/utf8.h"

namespace kvshare::server {

namespace {

// Limits on a request's parts, so that a body cannot make the server do unbounded work before the engine
// sees it (the body's size itself is capped by the HTTP layer).
constexpr size_t kMaxPrompts = 1024;      // prompts in one /v1/completions request
constexpr size_t kMaxStopStrings = 64;
constexpr size_t kMaxStopStringBytes = 1024;
constexpr size_t kMaxLogitBias = 4096;

// Reads a request's fields, recording the first error. A field that is absent or null keeps its default.
class FieldReader {
 public:
  explicit FieldReader(const json& body) : body_(body) {}
  bool ok() const { return !error_.has_value(); }
  const ApiError& error() const { return *error_; }
  void fail(const std::string& param, const std::string& message) {
    if (!error_) error_ = bad_request(message, param);
  }

  const json* get(const char* name) const {
    auto it = body_.find(name);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }

  void boolean(const char* name, bool& out) {
    const json* v = get(name);
    if (v == nullptr) return;
    if (!v->is_boolean()) return fail(name, std::string(name) + " must be true or false");
    out = v->get<bool>();
  }
  void string(const char* name, std::string& out) {
    const json* v = get(name);
    if (v == nullptr) return;
    if (!v->is_string()) return fail(name, std::string(name) + " must be a string");
    out = v->get<std::string>();
  }
  // A number in [lo, hi], or in (lo, hi] when `above_lo` (top_p 0 keeps no token: one range, one message).
  void number(const char* name, float& out, double lo, double hi, bool above_lo = false) {
    const json* v = get(name);
    if (v == nullptr) return;
    if (!v->is_number()) return fail(name, std::string(name) + " must be a number");
    const double d = v->get<double>();
    if (!((above_lo ? d > lo : d >= lo) && d <= hi))
      return fail(name, std::string(name) + " must be in " + (above_lo ? "(" : "[") + fmt(lo) + ", " + fmt(hi) +
                            "], got " + fmt(d));
    out = static_cast<float>(d);
  }
  // A whole number in [lo, hi]. True when the field was given.
  bool integer(const char* name, int64_t& out, int64_t lo, int64_t hi) {
    const json* v = get(name);
    if (v == nullptr) return false;
    if (!is_integer(*v)) {
      fail(name, std::string(name) + " must be an integer");
      return false;
    }
    // Compared as integers: as doubles, 2^63 (a float, or 9223372036854775808) passed a bound of 2^63 - 1, then
    // became INT64_MIN or an undefined conversion.
    int64_t value = 0;
    bool in_int64 = true;
    if (v->is_number_unsigned()) {
      in_int64 = v->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      value = static_cast<int64_t>(v->get<uint64_t>());
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else {
      const double d = v->get<double>();
      in_int64 = d >= -0x1p63 && d < 0x1p63;  // where a whole double converts to int64 exactly
      if (in_int64) value = static_cast<int64_t>(d);
    }
    if (!in_int64 || value < lo || value > hi) {
      fail(name, std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                     v->dump());
      return false;
    }
    out = value;
    return true;
  }
  bool integer32(const char* name, int32_t& out, int64_t lo, int64_t hi) {
    int64_t v = out;
    if (!integer(name, v, lo, hi)) return false;
    out = static_cast<int32_t>(v);
    return true;
  }

  static bool is_integer(const json& v) {
    if (v.is_number_integer()) return true;
    if (!v.is_number_float()) return false;
    const double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d);
  }

 private:
  // Whole bounds without a fraction ("(0, 1]", not "(0.0, 1.0]").
  static std::string fmt(double d) {
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    return json(d).dump();
  }
  const json& body_;
  std::optional<ApiError> error_;
};

// A list of token ids, each a non-negative integer (the engine checks them against the vocabulary).
bool token_id_list(const json& v, std::vector<int32_t>& out) {
  if (!v.is_array()) return false;
  out.clear();
  out.reserve(v.size());
  for (const json& t : v) {
    if (!FieldReader::is_integer(t)) return false;
    const double d = t.get<double>();
    if (d < 0 || d > std::numeric_limits<int32_t>::max()) return false;
    out.push_back(static_cast<int32_t>(d));
  }
  return true;
}

void read_prompt(FieldReader& r, GenerationCall& call) {
  const json* p = r.get("prompt");
  if (p == nullptr) return r.fail("prompt", "prompt is required: a string, a list of strings, or token ids");
  const char* what = "prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids";
  if (p->is_string()) {
    call.prompts.push_back({true, p->get<std::string>(), {}});
    return;
  }
  if (!p->is_array() || p->empty()) return r.fail("prompt", p->is_array() ? "prompt must not be an empty list" : what);
  if ((*p)[0].is_number()) {
    PromptInput in{false, "", {}};
    if (!token_id_list(*p, in.token_ids)) return r.fail("prompt", "prompt token ids must be non-negative integers");
    call.prompts.push_back(std::move(in));
    return;
  }
  if (p->size() > kMaxPrompts)
    return r.fail("prompt", "a request holds at most " + std::to_string(kMaxPrompts) + " prompts; got " +
                                std::to_string(p->size()) + " (send them in several requests)");
  for (const json& item : *p) {
    if (item.is_string()) {
      call.prompts.push_back({true, item.get<std::string>(), {}});
    } else if (item.is_array()) {
      PromptInput in{false, "", {}};
      if (item.empty()) return r.fail("prompt", "a prompt's token id list must not be empty");
      if (!token_id_list(item, in.token_ids)) return r.fail("prompt", "prompt token ids must be non-negative integers");
      call.prompts.push_back(std::move(in));
    } else {
      return r.fail("prompt", what);
    }
  }
}

void read_stop(FieldReader& r, SamplingParams& p) {
  const json* v = r.get("stop");
  if (v == nullptr) return;
  if (v->is_string()) {
    p.stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > kMaxStopStrings)
      return r.fail("stop", "stop holds at most " + std::to_string(kMaxStopStrings) + " strings");
    for (const json& s : *v) {
      if (!s.is_string()) return r.fail("stop", "stop must be a string or a list of strings");
      p.stop.push_back(s.get<std::string>());
    }
  } else {
    return r.fail("stop", "stop must be a string or a list of strings");
  }
  for (const std::string& s : p.stop) {
    // Refused rather than dropped, as the engine (and so the batch job) refuses it: "" would match at once.
    if (s.empty()) return r.fail("stop", "stop strings must not be empty (leave stop out for none)");
    if (s.size() > kMaxStopStringBytes)
      return r.fail("stop", "a stop string is at most " + std::to_string(kMaxStopStringBytes) + " bytes");
  }
}

void read_logit_bias(FieldReader& r, SamplingParams& p) {
  const json* v = r.get("logit_bias");
  if (v == nullptr) return;
  if (!v->is_object()) return r.fail("logit_bias", "logit_bias must be an object mapping token ids to biases");
  if (v->size() > kMaxLogitBias)
    return r.fail("logit_bias", "logit_bias holds at most " + std::to_string(kMaxLogitBias) + " tokens");
  for (const auto& [key, bias] : v->items()) {
    char* end = nullptr;
    errno = 0;
    const long id = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || errno != 0 || id < 0 || id > std::numeric_limits<int32_t>::max())
      return r.fail("logit_bias", "logit_bias keys must be token ids (non-negative integers), got \"" + key + "\"");
    if (!bias.is_number()) return r.fail("logit_bias", "logit_bias values must be numbers in [-100, 100]");
    const double b = bias.get<double>();
    if (!(b >= -100 && b <= 100))
      return r.fail("logit_bias", "logit_bias values must be in [-100, 100], got " + bias.dump() + " for token " + key);
    p.logit_bias[static_cast<int32_t>(id)] = static_cast<float>(b);
  }
}

// Constrained output. A choice: guided_choice (vLLM's OpenAI field) or structured_outputs.choice (its newer form),
// the output is one of these strings. JSON mode: response_format {"type": "json_object"} (OpenAI's) or
// structured_outputs.json_object (vLLM's), the output is one JSON object; response_format {"type": "json_schema",
// "json_schema": {"schema": ...}} (OpenAI's), structured_outputs.json or guided_json (vLLM's; a schema or its text),
// the output follows the schema. structured_outputs.disable_any_whitespace makes JSON compact. structured_outputs'
// other constraints (regex, grammar, structural_tag) are refused; an object that sets none (vLLM takes {}) asks
// for nothing.
void read_structured_outputs(FieldReader& r, GenerationCall& call) {
  SamplingParams& p = call.params;
  const json* guided = r.get("guided_choice");
  if (guided != nullptr && guided->is_null()) guided = nullptr;
  const json* choice = guided;
  std::string field = "guided_choice";
  std::string json_field;  // the field that asked for JSON mode
  const json* schema = nullptr;  // and the schema it gave
  auto ask_for_json = [&](const std::string& name, const json* given) {
    if (!json_field.empty()) {
      r.fail(name, "ask for JSON once: " + json_field + " and " + name + " were both given");
      return false;
    }
    json_field = name;
    schema = given;
    return true;
  };
  if (const json* rf = r.get("response_format"); rf != nullptr && !rf->is_null()) {
    if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
      return r.fail("response_format", "response_format must be an object such as {\"type\": \"json_object\"}");
    const std::string type = (*rf)["type"];
    if (type == "json_object") {
      ask_for_json("response_format", nullptr);
    } else if (type == "json_schema") {
      const auto js = rf->find("json_schema");
      if (js == rf->end() || !js->is_object() || !js->contains("schema"))
        return r.fail("response_format", "response_format of type \"json_schema\" needs \"json_schema\": "
                                         "{\"name\": ..., \"schema\": {...}}");
      ask_for_json("response_format", &(*js)["schema"]);
    } else if (type != "text") {
      return r.fail("response_format", "response_format of type \"" + type + "\" is not supported; use "
                                       "\"json_schema\", \"json_object\" or \"text\"");
    }
  }
  if (const json* gj = r.get("guided_json"); gj != nullptr && !gj->is_null() && !ask_for_json("guided_json", gj))
    return;
  if (const json* so = r.get("structured_outputs"); so != nullptr && !so->is_null()) {
    if (!so->is_object()) return r.fail("structured_outputs", "structured_outputs must be an object, such as "
                                                              "{\"choice\": [\"yes\", \"no\"]}");
    for (const auto& [key, value] : so->items()) {
      // vLLM's options for its grammar backends: disable_any_whitespace applies to JSON, the others change nothing.
      if (key == "choice" || value.is_null() || value == false || is_structured_output_option(key)) continue;
      if (key == "json_object" && value == true) {
        if (!ask_for_json("structured_outputs.json_object", nullptr)) return;
        continue;
      }
      if (key == "json") {
        if (!ask_for_json("structured_outputs.json", &value)) return;
        continue;
      }
      if (key == "json_object")
        return r.fail("structured_outputs", "structured_outputs.json_object must be true or false");
      return r.fail("structured_outputs", "structured_outputs." + key + " is not supported: this server constrains its "
                                          "output to a list of strings (choice), a JSON schema (json) or any JSON "
                                          "object (json_object: true)");
    }
    if (const auto it = so->find("disable_any_whitespace"); it != so->end() && !it->is_null()) {
      if (!it->is_boolean())
        return r.fail("structured_outputs", "structured_outputs.disable_any_whitespace must be true or false");
      p.disable_any_whitespace = it->get<bool>();
    }
    if (const auto it = so->find("choice"); it != so->end() && !it->is_null()) {
      if (guided != nullptr)
        return r.fail("structured_outputs", "give the choices once: guided_choice or structured_outputs.choice");
      choice = &*it;
      field = "structured_outputs.choice";
    }
  }
  if (!json_field.empty()) {
    if (choice != nullptr)
      return r.fail(json_field, json_field + " and " + field + " cannot both be given: the output is either one of the "
                                "choices or JSON");
    call.constraint_field = json_field;
    if (schema == nullptr) {
      p.json_object = true;
    } else {  // the engine checks it, and its refusal names constraint_field (HttpServer)
      p.json_schema = JsonSchema::text_of(*schema);
      if (!p.json_schema.has_value())
        return r.fail(json_field, json_field + ": a JSON schema must be an object (or its text)");
    }
  }
  if (choice == nullptr) return;
  call.constraint_field = field;
  if (!choice->is_array() || !std::all_of(choice->begin(), choice->end(), [](const json& c) { return c.is_string(); }))
    return r.fail(field, field + " must be a list of strings");
  SamplingParams checked;  // SamplingParams::validate holds the rules; the error names this field
  checked.choice = choice->get<std::vector<std::string>>();
  if (Status st = checked.validate(); !st.ok())  // "choice ..." names the field as the client gave it
    return r.fail(field, field + st.message().substr(std::string_view("choice").size()));
  p.choice = std::move(checked.choice);
}

// Sampling fields both endpoints share.
void read_sampling(FieldReader& r, GenerationCall& call) {
  SamplingParams& p = call.params;
  r.number("temperature", p.temperature, 0, 2);
  r.number("top_p", p.top_p, 0, 1, /*above_lo=*/true);
  int64_t top_k = 0;
  if (r.integer("top_k", top_k, -1, std::numeric_limits<int32_t>::max())) p.top_k = static_cast<int32_t>(top_k);
  r.number("min_p", p.min_p, 0, 1);
  r.number("presence_penalty", p.presence_penalty, -2, 2);
  r.number("frequency_penalty", p.frequency_penalty, -2, 2);
  r.number("repetition_penalty", p.repetition_penalty, 0, 100, /*above_lo=*/true);
  r.integer32("n", p.n, 1, SamplingParams::kMaxN);
  call.n = p.n;
  int64_t seed = 0;
  if (r.integer("seed", seed, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()))
    p.seed = static_cast<uint64_t>(seed);
  r.integer32("min_tokens", p.min_tokens, 0, std::numeric_limits<int32_t>::max());
  r.boolean("ignore_eos", p.ignore_eos);
  r.boolean("include_stop_str_in_output", p.include_stop_str_in_output);
  read_stop(r, p);
  if (const json* v = r.get("stop_token_ids"); v != nullptr && !token_id_list(*v, p.stop_token_ids))
    r.fail("stop_token_ids", "stop_token_ids must be a list of token ids (non-negative integers)");
  // vLLM's extensions: only these tokens may be sampled; whether the text leaves out special tokens.
  if (const json* v = r.get("allowed_token_ids"); v != nullptr && !v->is_null()) {
    p.allowed_token_ids.emplace();
    if (!token_id_list(*v, *p.allowed_token_ids))
      r.fail("allowed_token_ids", "allowed_token_ids must be a list of token ids (non-negative integers)");
    else if (p.allowed_token_ids->empty())
      r.fail("allowed_token_ids", "allowed_token_ids must not be empty (leave it out to allow every token)");
  }
  r.boolean("skip_special_tokens", p.skip_special_tokens);
  if (const json* v = r.get("bad_words"); v != nullptr && !v->is_null()) {
    if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const json& w) { return w.is_string(); })) {
      r.fail("bad_words", "bad_words must be a list of strings");
    } else {
      SamplingParams words;  // SamplingParams::validate holds the rules; the error names this field
      words.bad_words = v->get<std::vector<std::string>>();
      if (Status st = words.validate(); !st.ok()) r.fail("bad_words", st.message());
      else p.bad_words = std::move(words.bad_words);
    }
  }
  int64_t truncate = 0;
  if (r.integer("truncate_prompt_tokens", truncate, -1, std::numeric_limits<int32_t>::max())) {
    if (truncate == 0) r.fail("truncate_prompt_tokens", "truncate_prompt_tokens must be -1 (the context) or at least 1");
    p.truncate_prompt_tokens = static_cast<int32_t>(truncate);
  }
  read_logit_bias(r, p);
  r.string("cache_salt", call.cache_salt);
  r.boolean("stream", call.stream);
  if (const json* so = r.get("stream_options")) {
    if (!so->is_object()) return r.fail("stream_options", "stream_options must be an object");
    if (!call.stream) return r.fail("stream_options", "stream_options is only allowed when stream is true");
    FieldReader sr(*so);
    sr.boolean("include_usage", call.include_usage);
    sr.boolean("continuous_usage_stats", call.continuous_usage);
    if (!sr.ok()) r.fail("stream_options", "stream_options." + sr.error().param + " must be true or false");
  }
  // best_of (vLLM's meaning): the engine runs best_of completions per prompt, the n with the highest
  // cumulative logprob are returned.
  int32_t best_of = call.n;
  if (r.integer32("best_of", best_of, 1, SamplingParams::kMaxN)) {
    if (best_of < call.n)
      r.fail("best_of", "best_of (" + std::to_string(best_of) + ") must be at least n (" + std::to_string(call.n) + ")");
    else if (best_of > call.n && call.stream)
      r.fail("best_of", "best_of greater than n cannot be streamed (the best are known only at the end); "
                        "drop stream or best_of");
    else
      p.n = best_of;
  }
  if (r.get("suffix") != nullptr) r.fail("suffix", "suffix is not supported");
  read_structured_outputs(r, call);
  if ((p.choice.has_value() || p.json_object || p.json_schema.has_value()) && p.min_tokens > 0)  // named here
    r.fail("min_tokens", std::string("min_tokens cannot be combined with ") +
                             (p.json_object ? "json_object" : p.json_schema.has_value() ? "json_schema" : "choice") +
                             " (the output ends once it is complete): leave min_tokens out");
  // vLLM's other constrained decoding: refused, not ignored.
  for (const char* name : {"guided_regex", "guided_grammar"}) {
    const json* v = r.get(name);
    if (v != nullptr && !v->is_null())
      r.fail(name, std::string(name) + " is not supported: this server constrains its output to a list of strings "
                                       "(guided_choice), a JSON schema (guided_json) or any JSON object "
                                       "(response_format json_object); leave it out");
  }
  bool beam_search = false;
  r.boolean("use_beam_search", beam_search);
  if (beam_search)
    r.fail("use_beam_search", "use_beam_search is not supported (leave it out, or use best_of)");
}

// tools and documents reach the chat template as Hugging Face's apply_chat_template passes them (a list of
// objects each). tool_choice "auto" (the default with tools) lets the model choose, and the server's tool-call
// parser, if any, reads its calls; "required" and a named function force tool calls (force_tool_calls).
void read_tools(FieldReader& r, GenerationCall& call) {
  auto list_of_objects = [&r](const char* name, json& out) {
    const json* v = r.get(name);
    if (v == nullptr) return;
    bool ok = v->is_array();
    for (size_t i = 0; ok && i < v->size(); ++i) ok = (*v)[i].is_object();
    if (!ok) return r.fail(name, std::string(name) + " must be a list of objects");
    out = *v;
  };
  list_of_objects("tools", call.tools);
  list_of_objects("documents", call.documents);
  const json* v = r.get("tool_choice");
  const bool tools = call.tools.is_array() && !call.tools.empty();
  if (v == nullptr || v->is_null() || (v->is_string() && *v == "auto")) {
    if (tools) call.tool_choice = GenerationCall::ToolChoice::kAuto;
    return;
  }
  if (v->is_string() && *v == "none") return;
  if (v->is_string() && *v == "required") {
    call.tool_choice = GenerationCall::ToolChoice::kRequired;
    return;
  }
  const json* fn = v->is_object() && v->value("type", json()) == "function" && v->contains("function")
                       ? &(*v)["function"] : nullptr;
  if (fn == nullptr || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string())
    return r.fail("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                 "\"function\": {\"name\": ...}}");
  call.tool_choice = GenerationCall::ToolChoice::kNamed;
  call.tool_name = (*fn)["name"].get<std::string>();
}

// Forced tool calls constrain the output to a schema of the tools' parameters, so they take the place of the other
// constraints; the engine's refusal of the schema names `tools`.
void force_tool_calls(FieldReader& r, GenerationCall& call) {
  if (!call.forces_tool_calls()) return;
  SamplingParams& p = call.params;
  if (p.choice.has_value() || p.json_object || p.json_schema.has_value())
    return r.fail("tool_choice", "tool_choice " + std::string(call.tool_choice == GenerationCall::ToolChoice::kNamed
                                                                  ? "naming a function" : "\"required\"") +
                                     " constrains the reply to tool calls, so it cannot be combined with " +
                                     call.constraint_field);
  if (p.min_tokens > 0)
    return r.fail("min_tokens", "min_tokens cannot be combined with a tool_choice that forces tool calls (the reply "
                                "ends once the calls are complete): leave min_tokens out");
  std::string schema, message;
  const bool named = call.tool_choice == GenerationCall::ToolChoice::kNamed;
  if (!tool_call_schema(call.tools, named ? &call.tool_name : nullptr, schema, message))
    return r.fail(message.starts_with("tool_choice") ? "tool_choice" : "tools", message);
  p.json_schema = std::move(schema);
  call.constraint_field = "tools";
}

// Chat messages: a non-empty list of objects with a string role. Content that is a list of parts keeps its
// text parts joined by newlines (as vLLM does for text-only models); other parts are refused.
void read_messages(FieldReader& r, GenerationCall& call) {
  const json* v = r.get("messages");
  if (v == nullptr) return r.fail("messages", "messages is required: a list of {\"role\", \"content\"} objects");
  std::string error;
  if (!read_chat_messages(*v, call.messages, error)) r.fail("messages", error);
}

}  // namespace

json ApiError::to_json() const {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

ApiError api_error(int status, std::string type, std::string message, std::string code) {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

ApiError bad_request(std::string message, std::string param) {
  ApiError e = api_error(400, "invalid_request_error", std::move(message));
  e.param = std::move(param);
  return e;
}

namespace {

// The request field an engine refusal names first ("allowed_token_ids: token id 99999 is outside the vocabulary",
// "every token of allowed_token_ids is a word of bad_words"), as the request spells it; "" for none. Constraints
// (choice, JSON) are named by HttpServer as the client gave them (guided_choice, response_format, ...).
std::string engine_refused_field(std::string_view message) {
  if (message.starts_with("every token of allowed_token_ids")) return "allowed_token_ids";
  for (std::string_view f : {"allowed_token_ids", "stop_token_ids", "logit_bias", "bad_words", "cache_salt",
                              "min_tokens"}) {
    if (message.starts_with(f) && message.size() > f.size() && std::string_view(" :[(").find(message[f.size()]) !=
                                                                     std::string_view::npos)
      return std::string(f);
  }
  return "";
}

}  // namespace

ApiError from_status(const Status& st) {
  switch (st.code()) {
    case StatusCode::kOutOfRange:
      return api_error(400, "invalid_request_error", st.message(), "context_length_exceeded");
    case StatusCode::kResourceExhausted:
      return api_error(503, "server_error", st.message());
    case StatusCode::kInternal:
    case StatusCode::kDataLoss:  // the model computed NaN or overflowed: not the client's doing
      return api_error(500, "server_error", st.message());
    default: {
      ApiError e = api_error(400, "invalid_request_error", st.message());
      e.param = engine_refused_field(st.message());
      return e;
    }
  }
}

bool parse_json_object(const std::string& body, json& object, ApiError& error) {
  if (Status deep = check_json_limits(body, "the request body", kMaxRequestJsonValues); !deep.ok()) {
    error = bad_request(deep.message());
    return false;
  }
  object = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) {
    error = bad_request("the request body is not valid JSON" + json_syntax_error(body));
    return false;
  }
  if (!object.is_object()) {
    error = bad_request("the request body must be a JSON object");
    return false;
  }
  return true;
}

bool parse_generation_call(const std::string& body, bool chat, GenerationCall& call, ApiError& error) {
  json object;
  if (!parse_json_object(body, object, error)) return false;
  call = GenerationCall{};
  call.chat = chat;
  FieldReader r(object);
  r.string("model", call.model);
  if (chat) {
    read_messages(r, call);
    r.boolean("add_generation_prompt", call.add_generation_prompt);
    r.boolean("continue_final_message", call.continue_final_message);
    if (call.add_generation_prompt && call.continue_final_message && r.get("add_generation_prompt") != nullptr)
      r.fail("continue_final_message", "continue_final_message and add_generation_prompt cannot both be true");
    if (call.continue_final_message) call.add_generation_prompt = false;
    read_tools(r, call);
    if (const json* kw = r.get("chat_template_kwargs")) {
      if (!kw->is_object()) r.fail("chat_template_kwargs", "chat_template_kwargs must be an object");
      else call.chat_template_kwargs = *kw;
    }
    // A template sent with the request: refused, as vLLM refuses it unless started with
    // --trust-request-chat-template (a template is a program the server runs); it was ignored without a word.
    if (const json* t = r.get("chat_template"); t != nullptr && !t->is_null())
      r.fail("chat_template", "a chat template in the request is not accepted; the server renders with the model's "
                              "template, or the one given at start-up (kvshare serve --chat-template FILE)");
    // max_completion_tokens is OpenAI's current name, max_tokens the older one; given both, the current one
    // counts, and each must be valid (a bad max_tokens beside it went unread).
    call.max_tokens_given = r.integer32("max_tokens", call.params.max_tokens, 1, std::numeric_limits<int32_t>::max());
    call.max_tokens_given |= r.integer32("max_completion_tokens", call.params.max_tokens, 1,
                                         std::numeric_limits<int32_t>::max());
    bool logprobs = false;
    r.boolean("logprobs", logprobs);
    int32_t top = 0;
    const bool top_given = r.integer32("top_logprobs", top, 0, SamplingParams::kMaxLogprobs);
    if (top_given && !logprobs) r.fail("top_logprobs", "top_logprobs needs logprobs set to true");
    if (logprobs) call.top_logprobs = top;
  } else {
    read_prompt(r, call);
    call.max_tokens_given = r.integer32("max_tokens", call.params.max_tokens, 1, std::numeric_limits<int32_t>::max());
    r.boolean("echo", call.echo);
    int32_t logprobs = -1;
    if (r.integer32("logprobs", logprobs, 0, SamplingParams::kMaxLogprobs)) call.top_logprobs = logprobs;
  }
  read_sampling(r, call);
  if (chat) force_tool_calls(r, call);
  // vLLM's: whether the tokenizer adds its special tokens (BOS) to the prompt's text; a chat's template writes its
  // own, so there the default is no.
  call.add_special_tokens = !chat;
  r.boolean("add_special_tokens", call.add_special_tokens);
  // vLLM's output options: the prompt's and the generated tokens' ids beside the text; logprobs naming tokens
  // "token_id:N".
  r.boolean("return_token_ids", call.return_token_ids);
  r.boolean("return_tokens_as_token_ids", call.tokens_as_ids);
  // vLLM's prompt_logprobs: each prompt token's logprob and the k likeliest at its place, in the whole response
  // only (vLLM refuses it above 0 with stream).
  if (const json* v = r.get("prompt_logprobs"); v != nullptr && !v->is_null()) {
    // Not *v == -1: nlohmann takes 2^64 - 1 for -1. Nor get<int64_t>() of any whole number: 1e300 overflows.
    const bool minus_one = (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() == -1) ||
                           (v->is_number_float() && v->get<double>() == -1.0);
    if (minus_one)
      r.fail("prompt_logprobs", "prompt_logprobs -1 (every token of the vocabulary) is not supported; give 0 to " +
                                    std::to_string(SamplingParams::kMaxLogprobs));
    else if (r.integer32("prompt_logprobs", call.prompt_logprobs, 0, SamplingParams::kMaxLogprobs) && call.stream) {
      // As vLLM: refused when there would be alternatives to list; 0 is taken, and a stream lists none.
      if (call.prompt_logprobs > 0)
        r.fail("prompt_logprobs", "prompt_logprobs above 0 are not available when stream is true");
      call.prompt_logprobs = -1;
    }
  }
  if (call.top_logprobs >= 0) call.params.logprobs = call.top_logprobs;
  if (call.best_of() && !call.params.logprobs.has_value()) call.params.logprobs = 0;  // ranks by them
  // The engine computes the prompt's logprobs once, with the most alternatives either view lists.
  if (call.echo_logprobs() || call.prompt_logprobs >= 0)
    call.params.prompt_logprobs = std::max(call.echo_logprobs() ? call.top_logprobs : 0, call.prompt_logprobs);
  if (!r.ok()) {
    error = r.error();
    return false;
  }
  if (Status st = call.params.validate(); !st.ok()) {
    error = bad_request(st.message());
    return false;
  }
  return true;
}

json Usage::to_json() const {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

json finish_reason_json(const Output& output) {
  if (!output.finished) return nullptr;
  return finish_reason_name(output.finish_reason);
}

namespace {

// A token as logprobs name it: its own bytes (" the" keeps its space, which decoding the token alone drops for
// SentencePiece vocabularies) when they are whole UTF-8 characters; otherwise (a byte token holding part of a
// character) as OpenAI writes such tokens, "bytes:" and each byte as \xHH, so that no two tokens share a name.
std::string token_name(const std::string& piece) {
  for (size_t pos = 0; pos < piece.size();) {
    const Utf8Char c = scan_utf8_char(piece, pos);
    if (c.kind != Utf8Char::kComplete) {
      std::string name = "bytes:";
      char hex[5];
      for (unsigned char b : piece) {
        std::snprintf(hex, sizeof hex, "\\x%02x", b);
        name += hex;
      }
      return name;
    }
    pos += c.length;
  }
  return piece;
}

// How logprobs name a token: by its bytes (token_name), or as "token_id:N" (vLLM's return_tokens_as_token_ids).
std::string logprob_name(int32_t id, const std::string& piece, bool as_id) {
  return as_id ? "token_id:" + std::to_string(id) : token_name(piece);
}

// The token's bytes as numbers 0-255, as chat logprobs' "bytes" give them.
std::vector<int> byte_values(const std::string& piece) {
  std::vector<int> out;
  for (unsigned char b : piece) out.push_back(b);
  return out;
}

// Completions' logprobs, built token by token: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
class CompletionLogprobs {
 public:
  CompletionLogprobs(const ResponseContext& ctx, size_t& text_offset, int32_t top, bool as_ids)
      : ctx_(ctx), offset_(text_offset), top_k_(static_cast<size_t>(std::max(top, 0))), as_ids_(as_ids) {}
  // A token with its logprobs, or (lp null: the prompt's first token) with none.
  void add(int32_t token_id, const GeneratedTokenLogprobs* lp) {
    const std::string piece = ctx_.token_piece(token_id);
    tokens_.push_back(logprob_name(token_id, piece, as_ids_));
    offsets_.push_back(offset_);
    offset_ += piece.size();
    if (lp == nullptr) {
      token_logprobs_.push_back(nullptr);
      top_.push_back(nullptr);
      return;
    }
    token_logprobs_.push_back(lp->chosen.logprob);
    json alternatives = json::object();
    // The prompt's may hold more alternatives than `logprobs` asks for (prompt_logprobs asked for more).
    for (size_t k = 0; k < lp->top.size() && k < top_k_; ++k) {
      const int32_t id = lp->top[k].token_id;
      alternatives[logprob_name(id, ctx_.token_piece(id), as_ids_)] = lp->top[k].logprob;
    }
    top_.push_back(std::move(alternatives));
  }
  void add_prompt(const PromptLogprobs& p) {
    for (size_t i = 0; i < p.token_ids.size(); ++i)
      add(p.token_ids[i], i == 0 || i > p.logprobs.size() ? nullptr : &p.logprobs[i - 1]);
  }
  json to_json() && {
    return json{{"tokens", std::move(tokens_)}, {"token_logprobs", std::move(token_logprobs_)},
                {"top_logprobs", std::move(top_)}, {"text_offset", std::move(offsets_)}};
  }

 private:
  const ResponseContext& ctx_;
  size_t& offset_;
  size_t top_k_;
  bool as_ids_;
  json tokens_ = json::array(), token_logprobs_ = json::array(), top_ = json::array(), offsets_ = json::array();
};

// Chat's logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}.
json chat_logprobs(const ResponseContext& ctx, const std::vector<GeneratedTokenLogprobs>& logprobs, bool as_ids) {
  json content = json::array();
  for (const GeneratedTokenLogprobs& lp : logprobs) {
    const std::string piece = ctx.token_piece(lp.chosen.token_id);
    json top = json::array();
    for (const TokenLogprob& t : lp.top) {
      const std::string alt = ctx.token_piece(t.token_id);
      const std::string name = logprob_name(t.token_id, alt, as_ids);
      top.push_back({{"token", name}, {"logprob", t.logprob}, {"bytes", byte_values(as_ids ? name : alt)}});
    }
    // As vLLM: "token_id:N" comes with its own bytes.
    const std::string name = logprob_name(lp.chosen.token_id, piece, as_ids);
    content.push_back({{"token", name}, {"logprob", lp.chosen.logprob}, {"bytes", byte_values(as_ids ? name : piece)},
                       {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}

// The logprobs `state` holds (with the prompt's first, when `with_prompt`), advancing its text offset.
json logprobs_json(const ResponseContext& ctx, const GenerationCall& call, ChoiceState& state, bool with_prompt) {
  if (call.top_logprobs < 0) return nullptr;
  if (call.chat) return chat_logprobs(ctx, state.logprobs, call.tokens_as_ids);
  CompletionLogprobs out(ctx, state.text_offset, call.top_logprobs, call.tokens_as_ids);
  if (with_prompt && state.prompt != nullptr) out.add_prompt(*state.prompt);
  for (const GeneratedTokenLogprobs& lp : state.logprobs) out.add(lp.chosen.token_id, &lp);
  return std::move(out).to_json();
}

// vLLM's prompt_logprobs: null for the first token, then for each token {token id: {"logprob", "rank",
// "decoded_token"}} holding the prompt's token (rank: among all tokens) and the k likeliest (ranks 1..k; a prompt
// token among them takes its place there, as vLLM's dict does).
json prompt_logprobs_json(const ResponseContext& ctx, const PromptLogprobs& p, int32_t k) {
  json out = json::array({nullptr});
  for (const GeneratedTokenLogprobs& lp : p.logprobs) {
    json at = json::object();
    auto put = [&](int32_t id, float logprob, int32_t rank) {
      at[std::to_string(id)] = {
          {"logprob", logprob}, {"rank", rank}, {"decoded_token", token_name(ctx.token_piece(id))}};
    };
    put(lp.chosen.token_id, lp.chosen.logprob, lp.chosen_rank);
    for (size_t r = 0; r < lp.top.size() && r < static_cast<size_t>(k); ++r)
      put(lp.top[r].token_id, lp.top[r].logprob, static_cast<int32_t>(r + 1));
    out.push_back(std::move(at));
  }
  return out;
}

json prompt_logprobs_json(const ResponseContext& ctx, const GenerationCall& call, const ChoiceState& state) {
  return state.prompt != nullptr ? prompt_logprobs_json(ctx, *state.prompt, call.prompt_logprobs) : json(nullptr);
}

}  // namespace

void take_logprobs(ChoiceState& state, Output& o) {
  const size_t have = state.logprobs_begin + state.logprobs.size();
  const auto begin = static_cast<size_t>(o.logprobs_begin);
  if (begin > have) return;  // a gap cannot happen (the engine's outputs continue or restate); take nothing
  for (size_t i = have - begin; i < o.logprobs.size(); ++i) state.logprobs.push_back(std::move(o.logprobs[i]));
  o.logprobs.clear();
}

double cumulative_logprob(const ChoiceState& state) {
  double sum = 0;
  for (const GeneratedTokenLogprobs& lp : state.logprobs) sum += lp.chosen.logprob;
  return sum;
}

namespace {

// A chat choice's message as the reply carries it: tool calls, where tool_choice forces them (tool_calls_of) or the
// server's parser reads the model's own (parse_tool_calls), and the content beside them (null when none); else the
// text. Call ids are unique in the response: "call_", the response's id, the choice's index and the call's.
struct ChatReply {
  json content;
  json calls = json::array();
};
ChatReply chat_reply(const ResponseContext& ctx, const GenerationCall& call, int32_t index, const std::string& text) {
  const std::string id = "call_" + ctx.id.substr(ctx.id.find('-') + 1) + "_" + std::to_string(index) + "_";
  ChatReply reply;
  std::string content = text;
  if (call.forces_tool_calls()) {
    const bool named = call.tool_choice == GenerationCall::ToolChoice::kNamed;
    reply.calls = tool_calls_of(text, named ? &call.tool_name : nullptr, id);
    if (!reply.calls.empty()) content.clear();
  } else if (ctx.reads_tool_calls(call)) {
    ParsedReply parsed = parse_tool_calls(ctx.tool_parser, text, id);
    reply.calls = std::move(parsed.calls);
    content = std::move(parsed.content);
  }
  reply.content = reply.calls.empty() || !content.empty() ? json(std::move(content)) : json(nullptr);
  return reply;
}

// Calls as a stream's delta lists them: each with its index.
json indexed_calls(json calls) {
  json out = json::array();
  for (json& tc : calls) {
    json indexed = {{"index", out.size()}};
    for (auto& [key, value] : tc.items()) indexed[key] = std::move(value);
    out.push_back(std::move(indexed));
  }
  return out;
}

// OpenAI's finish_reason, "tool_calls" where the reply's calls closed (a named function's call ends with "stop",
// as OpenAI's forced function calls do).
json choice_finish_reason(const GenerationCall& call, const Output& o, bool made_calls) {
  json reason = finish_reason_json(o);
  if (made_calls && reason == "stop" && call.tool_choice != GenerationCall::ToolChoice::kNamed) return "tool_calls";
  return reason;
}

json envelope(const ResponseContext& ctx, const GenerationCall& call, bool chunk) {
  const char* object = call.chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                 : "text_completion";
  return json{{"id", ctx.id}, {"object", object}, {"created", ctx.created}, {"model", ctx.model}};
}

}  // namespace

json completion_response(const ResponseContext& ctx, const GenerationCall& call,
                         const std::vector<std::pair<ChoiceState, Output>>& choices, const Usage& usage) {
  json response = envelope(ctx, call, false);
  json list = json::array();
  for (const auto& [choice_state, o] : choices) {
    ChoiceState state = choice_state;  // its text offset advances as the logprobs are written
    json choice = {{"index", state.index}};
    bool made_calls = false;
    if (call.chat) {
      ChatReply reply = chat_reply(ctx, call, state.index, o.text);
      made_calls = !reply.calls.empty();
      choice["message"] = {{"role", "assistant"}, {"content", std::move(reply.content)}};
      if (made_calls) choice["message"]["tool_calls"] = std::move(reply.calls);
    } else {
      choice["text"] = state.echo_text + o.text;
    }
    choice["logprobs"] = logprobs_json(ctx, call, state, call.echo_logprobs());
    if (!call.chat && call.prompt_logprobs >= 0) choice["prompt_logprobs"] = prompt_logprobs_json(ctx, call, state);
    if (call.return_token_ids) {
      if (!call.chat) choice["prompt_token_ids"] = o.prompt_token_ids;
      choice["token_ids"] = o.token_ids;
    }
    choice["finish_reason"] = choice_finish_reason(call, o, made_calls);
    if (!o.stop_str.empty()) choice["stop_reason"] = o.stop_str;
    else if (o.stop_token_id >= 0) choice["stop_reason"] = o.stop_token_id;
    else choice["stop_reason"] = nullptr;
    list.push_back(std::move(choice));
  }
  response["choices"] = std::move(list);
  if (call.chat && call.return_token_ids && !choices.empty())  // one conversation: beside the choices, as vLLM
    response["prompt_token_ids"] = choices[0].second.prompt_token_ids;
  if (call.chat && call.prompt_logprobs >= 0)  // one conversation: vLLM lists them beside the choices
    response["prompt_logprobs"] = choices.empty() ? json(nullptr) : prompt_logprobs_json(ctx, call, choices[0].first);
  response["usage"] = usage.to_json();
  return response;
}

json stream_chunk(const ResponseContext& ctx, const GenerationCall& call, ChoiceState& state, const Output& o) {
  if (state.finished) return nullptr;
  // Echo with logprobs: the first chunk lists the prompt's tokens, whose logprobs come with completion 0's
  // first output; until then (unless the completion ended without them) the choice waits.
  const bool with_prompt = call.echo_logprobs() && !state.sent_first;
  if (with_prompt && state.prompt == nullptr && !o.finished) return nullptr;
  std::string delta;
  if (!call.chat && !state.sent_first) delta = state.echo_text;
  // A parser reading the model's tool calls holds back the text that may belong to a call until the reply ends;
  // then the calls come, with the content the whole reply gives that was not sent yet.
  const bool reads_calls = ctx.reads_tool_calls(call);
  size_t text_end = o.text.size();
  if (reads_calls && !o.finished)
    text_end = std::max(state.sent_text, settled_content(ctx.tool_parser, o.text, state.sent_text));
  if (text_end > state.sent_text) delta += o.text.substr(state.sent_text, text_end - state.sent_text);
  json read_calls = json::array();
  if (reads_calls && o.finished) {
    ChatReply reply = chat_reply(ctx, call, state.index, o.text);
    if (!reply.calls.empty()) {
      const std::string content = reply.content.is_string() ? reply.content.get<std::string>() : "";
      delta = content.size() > state.sent_text ? content.substr(state.sent_text) : "";
      read_calls = indexed_calls(std::move(reply.calls));
    }
  }
  const bool required_calls = call.chat && call.tool_choice == GenerationCall::ToolChoice::kRequired;
  if (required_calls) delta = o.finished ? o.text : "";  // the calls are read once their list is whole
  const bool new_logprobs = call.top_logprobs >= 0 && (!state.logprobs.empty() || with_prompt);
  const bool first_chat_chunk = call.chat && !state.sent_role;
  const bool new_tokens = call.return_token_ids && o.token_ids.size() > state.sent_tokens;
  if (delta.empty() && !new_logprobs && !new_tokens && !o.finished && !first_chat_chunk) return nullptr;
  const bool first_chunk = !state.sent_first;
  state.sent_first = true;

  json choice = {{"index", state.index}};
  bool made_calls = false;
  if (call.chat) {
    json d = json::object();
    if (!state.sent_role) d["role"] = "assistant";
    if (call.tool_choice == GenerationCall::ToolChoice::kNamed) {
      // the call's id, type and name first, then its arguments as they come
      if (!delta.empty() || !state.sent_role) {
        json tc = chat_reply(ctx, call, state.index, delta).calls[0];
        json named = {{"index", 0}};
        if (!state.sent_role) {
          named["id"] = tc["id"];
          named["type"] = "function";
          named["function"] = tc["function"];
        } else {
          named["function"] = {{"arguments", delta}};
        }
        d["tool_calls"] = json::array({std::move(named)});
      }
    } else if (required_calls) {
      if (!delta.empty()) {  // finished: every call at once, or the text where the list was cut short
        json calls = indexed_calls(chat_reply(ctx, call, state.index, delta).calls);
        made_calls = !calls.empty();
        if (made_calls) d["tool_calls"] = std::move(calls);
        else d["content"] = delta;
      }
    } else {  // text, and the calls read out of it once it ended
      if (!delta.empty() || !state.sent_role) d["content"] = delta;
      made_calls = !read_calls.empty();
      if (made_calls) d["tool_calls"] = std::move(read_calls);
    }
    choice["delta"] = std::move(d);
    state.sent_role = true;
  } else {
    choice["text"] = delta;
  }
  choice["logprobs"] = new_logprobs ? logprobs_json(ctx, call, state, with_prompt) : json(nullptr);
  state.logprobs_begin += state.logprobs.size();  // sent: O(new) per event
  state.logprobs.clear();
  if (call.return_token_ids) {  // the tokens new since the last event; the prompt's with the choice's first
    const auto from = static_cast<std::ptrdiff_t>(std::min(state.sent_tokens, o.token_ids.size()));
    choice["token_ids"] = std::vector<int32_t>(o.token_ids.begin() + from, o.token_ids.end());
    if (first_chunk && !call.chat) choice["prompt_token_ids"] = o.prompt_token_ids;
    state.sent_tokens = std::max(state.sent_tokens, o.token_ids.size());
  }
  choice["finish_reason"] = choice_finish_reason(call, o, made_calls);
  if (o.finished) {
    if (!o.stop_str.empty()) choice["stop_reason"] = o.stop_str;
    else if (o.stop_token_id >= 0) choice["stop_reason"] = o.stop_token_id;
  }
  state.sent_text = std::max(state.sent_text, o.finished ? o.text.size() : text_end);
  state.finished = o.finished;
  json chunk = envelope(ctx, call, true);
  if (first_chunk && call.chat && call.return_token_ids) chunk["prompt_token_ids"] = o.prompt_token_ids;
  chunk["choices"] = json::array({std::move(choice)});
  return chunk;
}

json usage_chunk(const ResponseContext& ctx, const GenerationCall& call, const Usage& usage) {
  json chunk = envelope(ctx, call, true);
  chunk["choices"] = json::array();
  chunk["usage"] = usage.to_json();
  return chunk;
}

}  // namespace kvshare::server
