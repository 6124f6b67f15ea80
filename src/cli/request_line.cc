#include "cli/request_line.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "chat/messages.h"
#include "core/json_limits.h"
#include "formats/json_error.h"
#include "sampling/choice.h"
#include "sampling/json_schema.h"

namespace kvshare::cli {

using json = nlohmann::ordered_json;  // a JSON schema's properties in their order

namespace {

// The fields a request line may hold; any other is refused, so that a misspelt field ("max_token") is not
// silently left out.
constexpr const char* kRequestFields[] = {
    "prompt", "prompt_token_ids", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "ignore_eos",
    "cache_salt", "stop", "stop_token_ids", "include_stop_str_in_output", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "min_tokens", "n", "logprobs", "prompt_logprobs", "allowed_token_ids",
    "skip_special_tokens", "bad_words", "truncate_prompt_tokens", "guided_choice", "structured_outputs",
    "response_format", "messages", "add_generation_prompt", "continue_final_message", "chat_template_kwargs", "tools",
    "documents"};
// A chat line's fields besides its messages.
constexpr const char* kChatFields[] = {"add_generation_prompt", "continue_final_message", "chat_template_kwargs",
                                       "tools", "documents"};

// A JSON number as the 32-bit float the sampler uses: a value a float cannot hold (1e308 would become inf,
// 1e-300 would become 0) is an error naming the field, not a different value.
Result<float> as_float(const json& v, const std::string& what) {
  const double d = v.get<double>();
  const float f = static_cast<float>(d);
  if (std::isinf(f) || (f == 0.0f && d != 0.0))
    return invalid_argument(what + " is " + v.dump() + ", which a 32-bit float cannot hold");
  return f;
}

// A whole number in [lo, hi] (5.0 counts); a fraction or an out-of-range number is an error, not cut to fit.
Result<int64_t> whole(const json& v, const std::string& what, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= static_cast<uint64_t>(hi))
    return static_cast<int64_t>(v.get<uint64_t>());
  if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= lo && v.get<int64_t>() <= hi)
    return v.get<int64_t>();
  if (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()) &&
      v.get<double>() >= static_cast<double>(lo) && v.get<double>() < static_cast<double>(hi) + 1)
    return static_cast<int64_t>(v.get<double>());
  return invalid_argument(what + " must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                          ", got " + v.dump());
}

Result<int32_t> whole32(const json& v, const std::string& what) {
  KV_ASSIGN_OR_RETURN(int64_t x, whole(v, what, INT32_MIN, INT32_MAX));
  return static_cast<int32_t>(x);
}

// The field `key` of `j` if it is present and not null; an error if it is not a number.
Result<const json*> number_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return static_cast<const json*>(nullptr);
  if (!it->is_number()) return invalid_argument(std::string("\"") + key + "\" must be a number");
  return &*it;
}

// The sampling fields beyond the basic ones (vLLM's names), from a request line into `p`.
Status parse_sampling_extras(const json& j, SamplingParams& p) {
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  for (auto [key, field] : {std::pair<const char*, float*>{"min_p", &p.min_p}, {"presence_penalty", &p.presence_penalty},
                            {"frequency_penalty", &p.frequency_penalty}, {"repetition_penalty", &p.repetition_penalty}}) {
    if (!present(key)) continue;
    if (!j[key].is_number()) return invalid_argument(std::string("\"") + key + "\" must be a number");
    KV_ASSIGN_OR_RETURN(*field, as_float(j[key], std::string("\"") + key + "\""));
  }
  // Any whole number in int32 range; SamplingParams::validate then names the field's own range.
  for (auto [key, field] : {std::pair<const char*, int32_t*>{"min_tokens", &p.min_tokens}, {"n", &p.n}}) {
    KV_ASSIGN_OR_RETURN(const json* v, number_field(j, key));
    if (v != nullptr) {
      KV_ASSIGN_OR_RETURN(*field, whole32(*v, std::string("\"") + key + "\""));
    }
  }
  for (auto [key, field] : {std::pair<const char*, std::optional<int32_t>*>{"logprobs", &p.logprobs},
                            {"prompt_logprobs", &p.prompt_logprobs}}) {
    if (!present(key)) continue;
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > SamplingParams::kMaxLogprobs)
      return invalid_argument(std::string("\"") + key + "\" must be a whole number from 0 to " +
                              std::to_string(SamplingParams::kMaxLogprobs) +
                              " (the top alternatives returned per token), got " + v.dump());
    *field = v.get<int32_t>();
  }
  if (present("stop")) {
    const json& v = j["stop"];
    if (v.is_string()) {
      p.stop = {v.get<std::string>()};
    } else if (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); })) {
      p.stop = v.get<std::vector<std::string>>();
    } else {
      return invalid_argument("\"stop\" must be a string or an array of strings");
    }
  }
  if (present("bad_words")) {
    const json& v = j["bad_words"];
    if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); }))
      return invalid_argument("\"bad_words\" must be an array of strings");
    p.bad_words = v.get<std::vector<std::string>>();
  }
  // Constrained output, with the server's fields: one of a list of strings (guided_choice, or
  // structured_outputs.choice), JSON that follows a schema (response_format {"type": "json_schema", "json_schema":
  // {"schema": ...}}, structured_outputs.json or guided_json), or any JSON object (response_format {"type":
  // "json_object"}, or structured_outputs.json_object). A line's own constraint replaces the job's (--choice,
  // --json-object, --json-schema); guided_choice null and response_format {"type": "text"} ask for free text
  // whatever those say, and structured_outputs.json_object false for no JSON.
  const json* choice = present("guided_choice") ? &j["guided_choice"] : nullptr;
  const char* json_field = nullptr;  // the field that asked for JSON mode
  const json* schema = nullptr;      // and the schema it gave
  auto ask_for_json = [&](const char* name, const json* given) -> Status {
    if (json_field != nullptr)
      return invalid_argument(std::string("ask for JSON once: ") + json_field + " and " + name + " were both given");
    json_field = name;
    schema = given;
    return Status::ok_status();
  };
  bool free_text = j.contains("guided_choice") && j["guided_choice"].is_null();
  if (present("response_format")) {
    const json& rf = j["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
      return invalid_argument("\"response_format\" must be an object such as {\"type\": \"json_object\"}");
    if (rf["type"] == "json_object") {
      KV_RETURN_IF_ERROR(ask_for_json("\"response_format\"", nullptr));
    } else if (rf["type"] == "json_schema") {
      if (!rf.contains("json_schema") || !rf["json_schema"].is_object() || !rf["json_schema"].contains("schema"))
        return invalid_argument("\"response_format\" of type \"json_schema\" needs \"json_schema\": {\"name\": ..., "
                                "\"schema\": {...}}");
      KV_RETURN_IF_ERROR(ask_for_json("\"response_format\"", &rf["json_schema"]["schema"]));
    } else if (rf["type"] == "text") {
      free_text = true;
    } else {
      return invalid_argument("\"response_format\" of type " + rf["type"].dump() + " is not supported; use "
                              "\"json_schema\", \"json_object\" or \"text\"");
    }
  }
  if (present("guided_json")) KV_RETURN_IF_ERROR(ask_for_json("\"guided_json\"", &j["guided_json"]));
  if (present("structured_outputs")) {
    const json& so = j["structured_outputs"];
    if (!so.is_object()) return invalid_argument("\"structured_outputs\" must be an object such as {\"choice\": [...]}");
    for (const auto& [key, value] : so.items()) {
      if (key == "choice" || value.is_null() || value == false || is_structured_output_option(key)) continue;
      if (key == "json_object" && value == true) {
        KV_RETURN_IF_ERROR(ask_for_json("\"structured_outputs\".json_object", nullptr));
        continue;
      }
      if (key == "json") {
        KV_RETURN_IF_ERROR(ask_for_json("\"structured_outputs\".json", &value));
        continue;
      }
      if (key == "json_object") return invalid_argument("\"structured_outputs\".json_object must be true or false");
      return invalid_argument("\"structured_outputs\": " + key + " is not supported, only choice (a list of strings), "
                              "json (a JSON schema) and json_object (true)");
    }
    if (auto it = so.find("json_object"); it != so.end() && *it == false) {  // no JSON, whatever the job asks
      p.json_object = false;
      p.json_schema.reset();
    }
    if (auto it = so.find("disable_any_whitespace"); it != so.end() && !it->is_null()) {
      if (!it->is_boolean())
        return invalid_argument("\"structured_outputs\".disable_any_whitespace must be true or false");
      p.disable_any_whitespace = it->get<bool>();
    }
    if (auto it = so.find("choice"); it != so.end() && !it->is_null()) {
      if (choice != nullptr)
        return invalid_argument("give the choices once: \"guided_choice\" or \"structured_outputs\".choice");
      choice = &*it;
    }
  }
  if (json_field != nullptr && choice != nullptr)
    return invalid_argument(std::string(json_field) + " and the choices cannot both be given: the text is either one "
                            "of the choices or JSON");
  if (free_text || choice != nullptr || json_field != nullptr) {  // the line's constraint, not the job's
    p.choice.reset();
    p.json_object = json_field != nullptr && schema == nullptr;
    p.json_schema.reset();
  }
  if (schema != nullptr) {
    p.json_schema = JsonSchema::text_of(*schema);
    if (!p.json_schema.has_value())
      return invalid_argument(std::string(json_field) + ": a JSON schema must be an object (or its text)");
  }
  if (choice != nullptr) {
    if (!choice->is_array() || !std::all_of(choice->begin(), choice->end(), [](const json& e) { return e.is_string(); }))
      return invalid_argument("the choices (\"guided_choice\" or \"structured_outputs\".choice) must be an array of "
                              "strings");
    p.choice = choice->get<std::vector<std::string>>();
  }
  if (present("allowed_token_ids")) {  // null: every token, as vLLM's None
    if (!j["allowed_token_ids"].is_array())
      return invalid_argument("\"allowed_token_ids\" must be an array of integers");
    p.allowed_token_ids.emplace();
    for (const json& v : j.at("allowed_token_ids")) {
      KV_ASSIGN_OR_RETURN(p.allowed_token_ids->emplace_back(), whole32(v, "an allowed token id"));
    }
  }
  if (present("truncate_prompt_tokens")) {
    KV_ASSIGN_OR_RETURN(p.truncate_prompt_tokens, whole32(j["truncate_prompt_tokens"], "\"truncate_prompt_tokens\""));
  }
  if (present("skip_special_tokens")) {
    if (!j["skip_special_tokens"].is_boolean()) return invalid_argument("\"skip_special_tokens\" must be true or false");
    p.skip_special_tokens = j["skip_special_tokens"].get<bool>();
  }
  if (present("include_stop_str_in_output")) {
    if (!j["include_stop_str_in_output"].is_boolean())
      return invalid_argument("\"include_stop_str_in_output\" must be true or false");
    p.include_stop_str_in_output = j["include_stop_str_in_output"].get<bool>();
  }
  if (present("logit_bias")) {
    const json& v = j["logit_bias"];
    if (!v.is_object()) return invalid_argument("\"logit_bias\" must be an object {\"token id\": bias, ...}");
    for (const auto& [key, bias] : v.items()) {
      char* end = nullptr;
      const long long id = std::strtoll(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX)
        return invalid_argument("\"logit_bias\" keys must be token ids (whole numbers >= 0), got \"" + key + "\"");
      if (!bias.is_number()) return invalid_argument("\"logit_bias\" for token " + key + " must be a number");
      KV_ASSIGN_OR_RETURN(p.logit_bias[static_cast<int32_t>(id)], as_float(bias, "\"logit_bias\" for token " + key));
    }
  }
  return {};
}

}  // namespace

// A chat line's conversation and template options (render them with the model's template later).
Result<ChatLine> read_chat_line(const json& j) {
  json conversation = json::object();
  std::string error;
  if (!read_chat_messages(j["messages"], conversation["messages"], error)) return invalid_argument(error);
  ChatLine chat;
  chat.options.tool_arguments_as_objects = true;  // as vLLM's chat, and the server
  for (auto [key, field] : {std::pair<const char*, bool*>{"add_generation_prompt", &chat.options.add_generation_prompt},
                            {"continue_final_message", &chat.options.continue_final_message}}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_boolean()) return invalid_argument(std::string("\"") + key + "\" must be true or false");
    *field = j[key].get<bool>();
  }
  if (chat.options.continue_final_message) {
    if (j.contains("add_generation_prompt") && chat.options.add_generation_prompt)
      return invalid_argument("\"continue_final_message\" and \"add_generation_prompt\" cannot both be true");
    chat.options.add_generation_prompt = false;
  }
  for (const char* key : {"tools", "documents"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& list = j[key];
    if (!list.is_array() || !std::all_of(list.begin(), list.end(), [](const json& v) { return v.is_object(); }))
      return invalid_argument(std::string("\"") + key + "\" must be a list of objects");
    conversation[key] = list;
  }
  if (j.contains("chat_template_kwargs")) {  // more variables for the template; they win over tools, as in vLLM
    if (!j["chat_template_kwargs"].is_object())
      return invalid_argument("\"chat_template_kwargs\" must be an object");
    for (const auto& [key, value] : j["chat_template_kwargs"].items())
      if (key != "messages") conversation[key] = value;
  }
  chat.conversation = conversation.dump(-1, ' ', false, json::error_handler_t::strict);
  return chat;
}

Status check_request_line_size(uint64_t bytes) {
  if (bytes <= kMaxRequestLineBytes) return {};
  return invalid_argument("the line is " + std::to_string(bytes) + " bytes, more than a request line may have (" +
                          std::to_string(kMaxRequestLineBytes >> 20) + " MiB); split the prompt or send token ids");
}

LineRead read_request_line(std::istream& in, std::string& line, uint64_t& bytes) {
  line.clear();
  bytes = 0;
  char buffer[1 << 16];
  for (bool any = false;; any = true) {
    in.getline(buffer, sizeof buffer);
    const auto got = static_cast<uint64_t>(in.gcount());
    const bool newline = !in.fail() && !in.eof();  // the newline was taken (and counted in gcount), not kept
    const bool full = in.fail() && !in.eof();      // the buffer filled before a newline: the line goes on
    const uint64_t kept = newline ? got - 1 : got;
    if (bytes + kept <= kMaxRequestLineBytes) line.append(buffer, kept);
    else std::string().swap(line);  // too long: what was kept goes, the length is still counted
    bytes += kept;
    if (newline) return LineRead::kLine;
    if (!full) return any || got > 0 ? LineRead::kLine : LineRead::kEnd;  // the end of the input
    if (bytes > kMaxSkippedLineBytes) return LineRead::kEndless;
    in.clear();
  }
}

Result<Request> parse_request_line(const std::string& line, const SamplingParams& defaults,
                                   std::optional<ChatLine>* chat) {
  KV_RETURN_IF_ERROR(check_request_line_size(line.size()));
  KV_RETURN_IF_ERROR(check_json_limits(line, "the line", kMaxRequestJsonValues));
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded()) return invalid_argument("not valid JSON" + json_syntax_error(line));
  if (!j.is_object()) return invalid_argument("a line must be a JSON object");
  for (const auto& item : j.items()) {
    const std::string& key = item.key();  // (clang 14 cannot capture a structured binding in a lambda)
    if (std::find_if(std::begin(kRequestFields), std::end(kRequestFields),
                     [&](const char* f) { return key == f; }) == std::end(kRequestFields))
      return invalid_argument("unknown field \"" + key + "\" (a line holds \"prompt\", \"prompt_token_ids\" or "
                              "\"messages\" and sampling fields: max_tokens, temperature, top_p, top_k, min_p, seed, "
                              "stop, n, ...)");
  }
  if (j.contains("prompt") + j.contains("prompt_token_ids") + j.contains("messages") > 1)
    return invalid_argument("a line holds one of \"prompt\", \"prompt_token_ids\" and \"messages\"");
  for (const char* key : kChatFields)
    if (j.contains(key) && !j.contains("messages"))
      return invalid_argument(std::string("\"") + key + "\" belongs to a chat line, one with \"messages\"");
  Request r;
  r.params = defaults;
  if (j.contains("messages")) {
    KV_ASSIGN_OR_RETURN(ChatLine c, read_chat_line(j));
    if (chat != nullptr) *chat = std::move(c);
  } else if (j.contains("prompt_token_ids")) {
    const json& ids = j["prompt_token_ids"];
    if (!ids.is_array() || ids.empty()) return invalid_argument("\"prompt_token_ids\" must be a non-empty array of integers");
    for (const json& v : ids) {
      if (!v.is_number_integer()) return invalid_argument("\"prompt_token_ids\" must hold integers only");
      KV_ASSIGN_OR_RETURN(r.prompt_token_ids.emplace_back(), whole32(v, "a prompt token id"));
    }
  } else if (j.contains("prompt")) {
    if (!j["prompt"].is_string()) return invalid_argument("\"prompt\" must be a string");
    r.prompt = j["prompt"].get<std::string>();
  } else {
    return invalid_argument("a line needs \"prompt\", \"prompt_token_ids\" or \"messages\"");
  }
  for (auto [key, field] : {std::pair<const char*, int32_t*>{"max_tokens", &r.params.max_tokens},
                            {"top_k", &r.params.top_k}}) {
    KV_ASSIGN_OR_RETURN(const json* v, number_field(j, key));
    if (v != nullptr) {
      KV_ASSIGN_OR_RETURN(*field, whole32(*v, std::string("\"") + key + "\""));
    }
  }
  for (auto [key, field] : {std::pair<const char*, float*>{"temperature", &r.params.temperature},
                            {"top_p", &r.params.top_p}}) {
    KV_ASSIGN_OR_RETURN(const json* v, number_field(j, key));
    if (v != nullptr) {
      KV_ASSIGN_OR_RETURN(*field, as_float(*v, std::string("\"") + key + "\""));
    }
  }
  KV_ASSIGN_OR_RETURN(const json* seed, number_field(j, "seed"));
  if (seed != nullptr) {
    KV_ASSIGN_OR_RETURN(const int64_t value, whole(*seed, "\"seed\"", 0, INT64_MAX));
    r.params.seed = static_cast<uint64_t>(value);
  }
  if (j.contains("ignore_eos")) {
    if (!j["ignore_eos"].is_boolean()) return invalid_argument("\"ignore_eos\" must be true or false");
    r.params.ignore_eos = j["ignore_eos"].get<bool>();
  }
  if (j.contains("cache_salt")) {
    if (!j["cache_salt"].is_string()) return invalid_argument("\"cache_salt\" must be a string");
    r.cache_salt = j["cache_salt"].get<std::string>();
  }
  if (j.contains("stop_token_ids")) {
    if (!j["stop_token_ids"].is_array()) return invalid_argument("\"stop_token_ids\" must be an array of integers");
    for (const json& v : j.at("stop_token_ids")) {
      KV_ASSIGN_OR_RETURN(r.params.stop_token_ids.emplace_back(), whole32(v, "a stop token id"));
    }
  }
  KV_RETURN_IF_ERROR(parse_sampling_extras(j, r.params));
  KV_RETURN_IF_ERROR(r.params.validate());
  return r;
}

}  // namespace kvshare::cli
