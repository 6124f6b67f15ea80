#include "server/tool_calls.h"

#include <functional>

namespace kvshare::server {

namespace {

// The function object of tool `i`, or an error message.
const json* function_of(const json& tools, size_t i, std::string& error) {
  const json& tool = tools[i];
  const std::string at = "tools[" + std::to_string(i) + "]";
  const auto type = tool.find("type");
  const auto fn = tool.find("function");
  if (type == tool.end() || *type != "function" || fn == tool.end() || !fn->is_object()) {
    error = at + " must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}";
    return nullptr;
  }
  const auto name = fn->find("name");
  if (name == fn->end() || !name->is_string() || name->get<std::string>().empty()) {
    error = at + ".function.name must be a non-empty string";
    return nullptr;
  }
  const auto parameters = fn->find("parameters");
  if (parameters != fn->end() && !parameters->is_null() && !parameters->is_object()) {
    error = at + ".function.parameters must be a JSON schema object";
    return nullptr;
  }
  return &*fn;
}

// A function's parameters as a schema: an object with no keys when it has none (its arguments are then {}).
json parameters_of(const json& fn) {
  const auto p = fn.find("parameters");
  if (p == fn.end() || p->is_null() || p->empty()) return json{{"type", "object"}, {"properties", json::object()}};
  return *p;
}

}  // namespace

bool tool_call_schema(const json& tools, const std::string* name, std::string& schema, std::string& error) {
  if (!tools.is_array() || tools.empty()) {
    error = "tool_choice " + std::string(name != nullptr ? "names a function" : "\"required\"") +
            ", which needs tools: a non-empty list of the functions to call";
    return false;
  }
  std::vector<const json*> functions;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json* fn = function_of(tools, i, error);
    if (fn == nullptr) return false;
    functions.push_back(fn);
  }
  if (name != nullptr) {
    for (const json* fn : functions) {
      if ((*fn)["name"] == *name) {
        schema = parameters_of(*fn).dump();
        return true;
      }
    }
    error = "tool_choice names the function \"" + *name + "\", which tools does not list";
    return false;
  }
  json alternatives = json::array();
  json defs = json::object(), definitions = json::object();
  for (const json* fn : functions) {
    json parameters = parameters_of(*fn);
    const std::string fname = (*fn)["name"].get<std::string>();
    // Every $ref (in its $defs too) must point into $defs or definitions, which move to the top, where
    // "#/$defs/..." points once the tools are put together.
    std::string bad_ref;
    std::function<void(const json&)> check_refs = [&](const json& v) {
      if (v.is_object()) {
        const auto ref = v.find("$ref");
        if (ref != v.end() && ref->is_string() && !ref->get<std::string>().starts_with("#/$defs/") &&
            !ref->get<std::string>().starts_with("#/definitions/") && bad_ref.empty())
          bad_ref = ref->get<std::string>();
      }
      if (v.is_structured())
        for (const json& item : v) check_refs(item);
    };
    check_refs(parameters);
    if (!bad_ref.empty()) {
      error = "the parameters of function \"" + fname + "\" hold the $ref \"" + bad_ref + "\"; tool_choice "
              "\"required\" puts the tools together, where only $refs into $defs or definitions keep their meaning";
      return false;
    }
    for (auto [key, gathered] : {std::pair<const char*, json*>{"$defs", &defs}, {"definitions", &definitions}}) {
      const auto d = parameters.find(key);
      if (d == parameters.end()) continue;
      if (!d->is_object()) {
        error = "the parameters of function \"" + fname + "\": " + key + " must be an object";
        return false;
      }
      for (const auto& [k, v] : d->items()) {
        if (gathered->contains(k) && (*gathered)[k] != v) {
          error = "the parameters of functions hold two different " + std::string(key) + " named \"" + k +
                  "\"; tool_choice \"required\" puts the tools together, so give them different names";
          return false;
        }
        (*gathered)[k] = v;
      }
      parameters.erase(key);
    }
    alternatives.push_back(json{{"type", "object"},
                                {"properties", {{"name", {{"const", fname}}}, {"parameters", std::move(parameters)}}},
                                {"required", {"name", "parameters"}}});
  }
  json s = {{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", std::move(alternatives)}}}};
  if (!defs.empty()) s["$defs"] = std::move(defs);
  if (!definitions.empty()) s["definitions"] = std::move(definitions);
  schema = s.dump();
  return true;
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
// Where the whitespace before `end` begins; where the text after its leading whitespace begins. A reply's content
// and a stream's settled part end alike (settled_content's promise: a prefix of the finished reply's content).
size_t trim_back(std::string_view text, size_t end) {
  while (end > 0 && is_space(text[end - 1])) --end;
  return end;
}
size_t skip_front(std::string_view text) {
  size_t at = 0;
  while (at < text.size() && is_space(text[at])) ++at;
  return at;
}

// A reader of JSON as tool calls write it, with JSON's whitespace: a required list of calls (it follows
// tool_call_schema's schema), [{"name": "...", "parameters": VALUE}, ...], and the calls models write of their own
// choosing. A VALUE's text is kept as written (a JSON parser would round a number past a double's range, or refuse
// 1e999 outright).
class JsonTextReader {
 public:
  explicit JsonTextReader(std::string_view text) : t_(text) {}

  // A required list's calls, or false when the text is not a whole list (cut short).
  bool read(std::vector<std::pair<std::string, std::string>>& calls) {
    if (!take('[')) return false;
    do {
      std::string name;
      std::string_view arguments;
      if (!take('{') || !key("name") || !string(name) || !take(',') || !key("parameters") || !value(arguments) ||
          !take('}'))
        return false;
      calls.emplace_back(std::move(name), std::string(arguments));
    } while (take(','));
    return take(']') && at_end();
  }

  // One call as a model writes it: an object with a non-empty string "name" and an object "arguments" (hermes) or
  // "parameters" (llama3_json), in any order, other members ignored. False when the text here is not such an object
  // (a JSON answer with a "name" is not a call), or not JSON.
  bool call(std::string& name, std::string& arguments) {
    name.clear();
    arguments.clear();
    if (!take('{')) return false;
    do {
      std::string k;
      std::string_view v;
      if (!string(k) || !take(':') || !value(v)) return false;
      if (k == "name") {
        JsonTextReader n(v);
        if (!n.string(name)) return false;
      } else if (k == "arguments" || k == "parameters") {
        if (v[0] != '{') return false;
        arguments = std::string(v);
      }
    } while (take(','));
    return take('}') && !name.empty() && !arguments.empty();
  }

  bool take(char c) {
    skip_space();
    if (at_ >= t_.size() || t_[at_] != c) return false;
    ++at_;
    return true;
  }
  bool at_end() {
    skip_space();
    return at_ == t_.size();
  }

 private:
  void skip_space() {
    while (at_ < t_.size() && is_space(t_[at_])) ++at_;
  }
  bool key(const char* name) {
    std::string k;
    return string(k) && k == name && take(':');
  }
  // A string's end past `at_` (which is its opening quote), or npos.
  size_t string_end() const {
    for (size_t i = at_ + 1; i < t_.size(); ++i) {
      if (t_[i] == '\\') ++i;
      else if (t_[i] == '"') return i + 1;
    }
    return std::string_view::npos;
  }
  bool string(std::string& out) {
    skip_space();
    if (at_ >= t_.size() || t_[at_] != '"') return false;
    const size_t end = string_end();
    if (end == std::string_view::npos) return false;
    const json s = json::parse(t_.substr(at_, end - at_), nullptr, /*allow_exceptions=*/false);
    if (!s.is_string()) return false;
    out = s.get<std::string>();
    at_ = end;
    return true;
  }
  // Any JSON value, its text kept as written; false where the text here is not one (or nests past kMaxDepth).
  bool value(std::string_view& out, int depth = 0) {
    skip_space();
    const size_t begin = at_;
    if (at_ >= t_.size() || depth > kMaxDepth) return false;
    std::string s;
    std::string_view v;
    if (t_[at_] == '{') {
      ++at_;
      if (!take('}')) {
        do {
          if (!string(s) || !take(':') || !value(v, depth + 1)) return false;
        } while (take(','));
        if (!take('}')) return false;
      }
    } else if (t_[at_] == '[') {
      ++at_;
      if (!take(']')) {
        do {
          if (!value(v, depth + 1)) return false;
        } while (take(','));
        if (!take(']')) return false;
      }
    } else if (t_[at_] == '"') {
      if (!string(s)) return false;
    } else if (!literal() && !number()) {
      return false;
    }
    out = t_.substr(begin, at_ - begin);
    return true;
  }
  bool literal() {
    for (std::string_view word : {"true", "false", "null"}) {
      if (t_.substr(at_).starts_with(word)) {
        at_ += word.size();
        return true;
      }
    }
    return false;
  }
  // -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?, any size (1e999 too: JSON allows it).
  bool number() {
    auto digits = [this] {
      const size_t from = at_;
      while (at_ < t_.size() && t_[at_] >= '0' && t_[at_] <= '9') ++at_;
      return at_ > from;
    };
    auto next_is = [this](std::string_view chars) {
      return at_ < t_.size() && chars.find(t_[at_]) != std::string_view::npos;
    };
    if (next_is("-")) ++at_;
    if (next_is("0")) ++at_;
    else if (!digits()) return false;
    if (next_is(".") && (++at_, !digits())) return false;
    if (next_is("eE")) {
      ++at_;
      if (next_is("+-")) ++at_;
      if (!digits()) return false;
    }
    return true;
  }

  static constexpr int kMaxDepth = 256;
  std::string_view t_;
  size_t at_ = 0;
};

json call_json(const std::string& id_prefix, size_t index, const std::string& name, std::string arguments) {
  return json{{"id", id_prefix + std::to_string(index)},
              {"type", "function"},
              {"function", {{"name", name}, {"arguments", std::move(arguments)}}}};
}

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";

// hermes: every <tool_call> block (the last may be left open, where the model stopped without closing it).
bool read_hermes(std::string_view text, size_t first, const std::string& id_prefix, ParsedReply& out) {
  for (size_t at = first; at != std::string_view::npos;) {
    const size_t body = at + kHermesOpen.size();
    const size_t close = text.find(kHermesClose, body);
    JsonTextReader r(text.substr(body, close == std::string_view::npos ? close : close - body));
    std::string name, arguments;
    if (!r.call(name, arguments) || !r.at_end()) return false;
    out.calls.push_back(call_json(id_prefix, out.calls.size(), name, std::move(arguments)));
    at = close == std::string_view::npos ? close : text.find(kHermesOpen, close + kHermesClose.size());
  }
  out.content = text.substr(0, trim_back(text, first));
  return true;
}

// llama3_json: the reply is calls separated by ';' (vLLM's writes "; "), after <|python_tag|> or not.
bool read_llama3_json(std::string_view text, const std::string& id_prefix, ParsedReply& out) {
  size_t at = skip_front(text);
  if (text.substr(at).starts_with(kPythonTag)) at += kPythonTag.size();
  else if (at == text.size() || text[at] != '{') return false;
  JsonTextReader r(text.substr(at));
  do {
    std::string name, arguments;
    if (!r.call(name, arguments)) return false;
    out.calls.push_back(call_json(id_prefix, out.calls.size(), name, std::move(arguments)));
  } while (r.take(';'));
  return r.at_end();
}

}  // namespace

json tool_calls_of(const std::string& text, const std::string* name, const std::string& id_prefix) {
  if (name != nullptr) return json::array({call_json(id_prefix, 0, *name, text)});
  std::vector<std::pair<std::string, std::string>> read;
  json calls = json::array();
  if (!JsonTextReader(text).read(read)) return calls;  // cut short (the schema allows nothing else)
  for (auto& [fname, arguments] : read)
    calls.push_back(call_json(id_prefix, calls.size(), fname, std::move(arguments)));
  return calls;
}

bool tool_call_parser_named(std::string_view name, ToolCallParser& parser) {
  if (name == "hermes") parser = ToolCallParser::kHermes;
  else if (name == "llama3_json") parser = ToolCallParser::kLlama3Json;
  else return false;
  return true;
}

const char* tool_call_parser_name(ToolCallParser parser) {
  switch (parser) {
    case ToolCallParser::kHermes: return "hermes";
    case ToolCallParser::kLlama3Json: return "llama3_json";
    case ToolCallParser::kNone: break;
  }
  return "none";
}

ToolCallParser tool_call_parser_suggested(const std::function<bool(std::string_view)>& template_mentions) {
  if (template_mentions(kHermesOpen)) return ToolCallParser::kHermes;
  if (template_mentions("{\"name\": function name, \"parameters\"")) return ToolCallParser::kLlama3Json;
  return ToolCallParser::kNone;
}

ParsedReply parse_tool_calls(ToolCallParser parser, std::string_view text, const std::string& id_prefix) {
  ParsedReply out;
  bool read = false;
  if (parser == ToolCallParser::kHermes) {
    const size_t first = text.find(kHermesOpen);
    read = first != std::string_view::npos && read_hermes(text, first, id_prefix, out);
  } else if (parser == ToolCallParser::kLlama3Json) {
    read = read_llama3_json(text, id_prefix, out);
  }
  if (!read) return ParsedReply{std::string(text), json::array()};
  return out;
}

size_t settled_content(ToolCallParser parser, std::string_view text, size_t from) {
  if (parser == ToolCallParser::kLlama3Json) {  // a reply that begins as a call may be one until it ends
    const std::string_view rest = text.substr(skip_front(text));
    const bool may_call =
        rest.empty() || rest[0] == '{' || rest.starts_with(kPythonTag) || kPythonTag.starts_with(rest);
    return may_call ? 0 : text.size();
  }
  if (parser != ToolCallParser::kHermes) return text.size();
  size_t end = text.find(kHermesOpen, std::min(from, text.size()));
  if (end == std::string_view::npos) {  // a tail that may still become <tool_call> waits
    end = text.size();
    for (size_t k = std::min(kHermesOpen.size() - 1, text.size()); k > 0; --k) {
      if (kHermesOpen.starts_with(text.substr(text.size() - k))) {
        end = text.size() - k;
        break;
      }
    }
  }
  return trim_back(text, end);
}

}  // namespace kvshare::server
