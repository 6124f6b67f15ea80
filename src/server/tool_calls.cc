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
    // $defs and definitions move to the top, where "#/$defs/..." points once the tools are put together.
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

// The end of the JSON value that begins at `at` in `text` (a value the parser took whole), past its last byte.
size_t value_end(std::string_view text, size_t at) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = at; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      if (!in_string && depth == 0) return i + 1;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') ++depth;
    else if (c == '}' || c == ']') --depth;
    else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) return i;
    if (depth == 0 && (c == '}' || c == ']')) return i + 1;
  }
  return text.size();
}

}  // namespace

json tool_calls_of(const std::string& text, const std::string* name, const std::string& id_prefix) {
  auto call = [&](size_t index, const std::string& fname, std::string arguments) {
    return json{{"id", id_prefix + std::to_string(index)},
                {"type", "function"},
                {"function", {{"name", fname}, {"arguments", std::move(arguments)}}}};
  };
  if (name != nullptr) return json::array({call(0, *name, text)});
  json calls = json::array();
  const json list = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!list.is_array()) return calls;  // cut short (the schema allows nothing else)
  // The arguments as written (a parse and dump would round numbers past a double's precision): each item is
  // {"name": ..., "parameters": ...} in that order (the schema's), so the text after each "parameters" key's colon
  // is the next item's arguments.
  size_t at = 0;
  auto value_after = [&](const char* key) {  // the place of the value of `key`, the next key from `at`
    at = text.find(key, at);
    if (at == std::string::npos) return false;
    at = text.find(':', at) + 1;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) ++at;
    return true;
  };
  for (const json& item : list) {
    if (!item.contains("name") || !item["name"].is_string() || !value_after("\"name\"")) return json::array();
    at = value_end(text, at);  // past the name's string, whatever it holds
    if (!value_after("\"parameters\"")) return json::array();
    const size_t end = value_end(text, at);
    calls.push_back(call(calls.size(), item["name"].get<std::string>(), text.substr(at, end - at)));
    at = end;
  }
  return calls;
}

}  // namespace kvshare::server
