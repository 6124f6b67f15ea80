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

// A reader of a required list of calls as the output writes it (it follows tool_call_schema's schema):
// [{"name": "...", "parameters": VALUE}, ...], with JSON's whitespace. Not a JSON parser: VALUE's text is kept as
// written (a parser would round a number past a double's range, or refuse 1e999 outright).
class CallsReader {
 public:
  explicit CallsReader(std::string_view text) : t_(text) {}

  // The calls, or false when the text is not a whole list (cut short).
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
    return take(']') && (skip_space(), at_ == t_.size());
  }

 private:
  void skip_space() {
    while (at_ < t_.size() && (t_[at_] == ' ' || t_[at_] == '\t' || t_[at_] == '\n' || t_[at_] == '\r')) ++at_;
  }
  bool take(char c) {
    skip_space();
    if (at_ >= t_.size() || t_[at_] != c) return false;
    ++at_;
    return true;
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
  // Any value: a string, an object or array (brackets counted outside strings), or a number or literal.
  bool value(std::string_view& out) {
    skip_space();
    const size_t begin = at_;
    if (at_ >= t_.size()) return false;
    if (t_[at_] == '"') {
      const size_t end = string_end();
      if (end == std::string_view::npos) return false;
      at_ = end;
    } else if (t_[at_] == '{' || t_[at_] == '[') {
      int depth = 0;
      for (; at_ < t_.size(); ++at_) {
        const char c = t_[at_];
        if (c == '"') {
          const size_t end = string_end();
          if (end == std::string_view::npos) return false;
          at_ = end - 1;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if ((c == '}' || c == ']') && --depth == 0) {
          ++at_;
          break;
        }
      }
      if (depth != 0) return false;
    } else {
      while (at_ < t_.size() && std::string_view(",}] \t\n\r").find(t_[at_]) == std::string_view::npos) ++at_;
    }
    out = t_.substr(begin, at_ - begin);
    return !out.empty();
  }

  std::string_view t_;
  size_t at_ = 0;
};

}  // namespace

json tool_calls_of(const std::string& text, const std::string* name, const std::string& id_prefix) {
  auto call = [&](size_t index, const std::string& fname, std::string arguments) {
    return json{{"id", id_prefix + std::to_string(index)},
                {"type", "function"},
                {"function", {{"name", fname}, {"arguments", std::move(arguments)}}}};
  };
  if (name != nullptr) return json::array({call(0, *name, text)});
  std::vector<std::pair<std::string, std::string>> read;
  json calls = json::array();
  if (!CallsReader(text).read(read)) return calls;  // cut short (the schema allows nothing else)
  for (auto& [fname, arguments] : read) calls.push_back(call(calls.size(), fname, std::move(arguments)));
  return calls;
}

}  // namespace kvshare::server
