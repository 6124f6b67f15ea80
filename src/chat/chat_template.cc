#include "chat/chat_template.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>

#include "core/json_limits.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/json_error.h"

namespace kvshare {

namespace {

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<nlohmann::ordered_json> read_json(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::string text, read_model_text_file(path));
  KV_RETURN_IF_ERROR(check_json_limits(text, path));
  auto j = nlohmann::ordered_json::parse(text, nullptr, false);
  if (j.is_discarded()) return invalid_argument(path + " is not valid JSON" + json_syntax_error(text));
  return j;
}

// "<s>" or {"content": "<s>", ...}; "" when absent or null.
std::string config_token(const nlohmann::ordered_json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) return v.at("content").get<std::string>();
  return "";
}

using NamedSources = std::vector<std::pair<std::string, std::string>>;  // name ("" for a single one), source

// `chat_template` as a string, or a list of {name, template}.
Result<NamedSources> template_sources(const nlohmann::ordered_json& value, const std::string& where) {
  if (value.is_string()) return NamedSources{{"", value.get<std::string>()}};
  if (!value.is_array() || value.empty())
    return invalid_argument(where + ": chat_template must be a string or a list of {name, template}");
  NamedSources out;
  for (const auto& entry : value) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
        !entry.at("name").is_string() || !entry.at("template").is_string() || entry.at("name") == "")
      return invalid_argument(where + ": chat_template list entries must be {\"name\": ..., \"template\": ...}");
    out.emplace_back(entry.at("name").get<std::string>(), entry.at("template").get<std::string>());
  }
  return out;
}

// Parses each source with the model's BOS/EOS texts.
Result<ModelChatTemplates> parse_all(const NamedSources& sources, const std::string& bos, const std::string& eos,
                                     const std::string& where) {
  std::vector<std::pair<std::string, ChatTemplate>> parsed;
  for (const auto& [name, source] : sources) {
    auto t = ChatTemplate::from_string(source, bos, eos);
    if (!t.ok()) return t.status().with_context(where + (name.empty() ? "" : " (template '" + name + "')"));
    parsed.emplace_back(name, std::move(t).value());
  }
  return ModelChatTemplates::from_parsed(std::move(parsed));
}

Result<ModelChatTemplates> from_hf_dir(const std::string& dir) {
  const std::string config_path = dir + "/tokenizer_config.json";
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (path_entry_exists(config_path)) {
    KV_ASSIGN_OR_RETURN(config, read_json(config_path));
    if (!config.is_object()) return invalid_argument(config_path + " is not a JSON object");
  }
  NamedSources sources;
  std::string where;  // the file the template came from, for its errors
  if (config.contains("chat_template") && !config.at("chat_template").is_null()) {
    KV_ASSIGN_OR_RETURN(sources, template_sources(config.at("chat_template"), config_path));
    where = config_path + "'s chat_template";
  } else if (path_entry_exists(dir + "/chat_template.jinja")) {
    KV_ASSIGN_OR_RETURN(std::string source, read_model_text_file(dir + "/chat_template.jinja"));
    sources.emplace_back("", std::move(source));
    where = dir + "/chat_template.jinja";
  } else if (path_entry_exists(dir + "/chat_template.json")) {
    KV_ASSIGN_OR_RETURN(auto j, read_json(dir + "/chat_template.json"));
    if (j.is_object() && j.contains("chat_template")) {
      KV_ASSIGN_OR_RETURN(sources, template_sources(j.at("chat_template"), dir + "/chat_template.json"));
    }
    where = dir + "/chat_template.json's chat_template";
  }
  if (sources.empty())
    return not_found(dir + " has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja)");
  return parse_all(sources, config_token(config, "bos_token"), config_token(config, "eos_token"), where);
}

Result<ModelChatTemplates> from_gguf(const std::string& path) {
  KV_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
  NamedSources sources;
  if (const GgufValue* tpl = file.find("tokenizer.chat_template")) {
    if (!tpl->is_string()) return invalid_argument(path + ": tokenizer.chat_template is not a string");
    sources.emplace_back("", tpl->string_ref());
  }
  // Named templates beside it, as llama.cpp's converter writes them: tokenizer.chat_templates lists the names,
  // tokenizer.chat_template.NAME holds each.
  if (const GgufValue* names = file.find("tokenizer.chat_templates"); names && names->is_array()) {
    for (const std::string& name : names->strings()) {
      const GgufValue* named = file.find("tokenizer.chat_template." + name);
      if (name.empty() || named == nullptr || !named->is_string())
        return invalid_argument(path + ": tokenizer.chat_templates names '" + name +
                                "', but tokenizer.chat_template." + name + " is not a string");
      sources.emplace_back(name, named->string_ref());
    }
    // The unnamed one is the default.
    if (!sources.empty() && sources.front().first.empty()) sources.front().first = "default";
  }
  if (sources.empty()) return not_found(path + " has no tokenizer.chat_template");
  std::string bos, eos;
  if (const GgufValue* tokens = file.find("tokenizer.ggml.tokens"); tokens && tokens->is_array()) {
    const auto& names = tokens->strings();
    auto token = [&](const char* key) -> std::string {
      auto id = file.get_int(key);
      if (!id.ok() || *id < 0 || static_cast<size_t>(*id) >= names.size()) return "";
      return names[static_cast<size_t>(*id)];
    };
    bos = token("tokenizer.ggml.bos_token_id");
    eos = token("tokenizer.ggml.eos_token_id");
  }
  return parse_all(sources, bos, eos, path);
}

// Whether `j` nests arrays and objects more than `limit` levels (recursion stops at the limit).
bool json_depth_exceeds(const nlohmann::ordered_json& j, int limit) {
  if (!j.is_structured()) return false;
  if (limit == 0) return true;
  for (const auto& child : j)
    if (json_depth_exceeds(child, limit - 1)) return true;
  return false;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::from_string(const std::string& source, std::string bos_token,
                                               std::string eos_token) {
  KV_ASSIGN_OR_RETURN(jinja::Template parsed, jinja::Template::parse(source));
  ChatTemplate t;
  t.source_ = source;
  t.template_ = std::move(parsed);
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  return t;
}

Result<ChatTemplate> ChatTemplate::from_model(const std::string& path) {
  KV_ASSIGN_OR_RETURN(ModelChatTemplates all, ModelChatTemplates::from_model(path));
  KV_ASSIGN_OR_RETURN(const ChatTemplate* t, all.pick("", /*has_tools=*/false));
  return *t;
}

Result<std::string> read_chat_template_file(const std::string& path) {
  Result<std::string> source = read_text_file(path, jinja::Limits{}.max_template_bytes);
  if (!source.ok()) return source.status();
  if (source->empty()) return invalid_argument(path + " is empty; give a chat template's Jinja source");
  return source;
}

Result<ModelChatTemplates> ModelChatTemplates::from_model(const std::string& path) {
  if (is_directory(path)) return from_hf_dir(path);
  if (!file_exists(path)) return not_found(path + " does not exist");
  return from_gguf(path);
}

ModelChatTemplates ModelChatTemplates::from_parsed(std::vector<std::pair<std::string, ChatTemplate>> templates) {
  ModelChatTemplates m;
  m.templates_ = std::move(templates);
  return m;
}

ModelChatTemplates ModelChatTemplates::single(ChatTemplate t) {
  std::vector<std::pair<std::string, ChatTemplate>> one;
  one.emplace_back("", std::move(t));
  return from_parsed(std::move(one));
}

const ChatTemplate* ModelChatTemplates::find(const std::string& name) const {
  if (name.empty()) return nullptr;
  for (const auto& [n, t] : templates_)
    if (n == name) return &t;
  return nullptr;
}

bool ModelChatTemplates::has(const std::string& name) const { return find(name) != nullptr; }

Result<const ChatTemplate*> ModelChatTemplates::pick(const std::string& name, bool has_tools) const {
  if (templates_.size() == 1 && templates_.front().first.empty() && name.empty()) return &templates_.front().second;
  std::string names;
  for (const auto& [n, t] : templates_) names += (names.empty() ? "'" : ", '") + n + "'";
  if (!name.empty()) {
    if (const ChatTemplate* t = find(name)) return t;
    if (templates_.size() == 1 && templates_.front().first.empty())
      return not_found("the model has one chat template, without a name: none is named '" + name + "'");
    return not_found("the model has no chat template named '" + name + "' (it has " + names + ")");
  }
  if (has_tools)
    if (const ChatTemplate* t = find("tool_use")) return t;
  if (const ChatTemplate* t = find("default")) return t;
  return not_found("the model's chat templates (" + names + ") include none named 'default'; name one");
}

namespace {

// Whether `j` writes back as the same JSON from a template's value (see tool_arguments_as_objects), within `depth`.
bool writes_back(const nlohmann::ordered_json& j, int depth) {
  if (depth < 0) return false;
  constexpr uint64_t kExact = uint64_t{1} << 53;
  if (j.is_number_integer() || j.is_number_unsigned()) {
    return j.is_number_unsigned() ? j.get<uint64_t>() <= kExact
                                  : j.get<int64_t>() <= int64_t{kExact} && j.get<int64_t>() >= -int64_t{kExact};
  }
  if (j.is_number_float()) {  // an integer past 64 bits is read as a double: written back, it would be rounded
    const double d = j.get<double>();
    return std::floor(d) != d || std::fabs(d) <= static_cast<double>(kExact);
  }
  if (j.is_array())
    return std::all_of(j.begin(), j.end(), [&](const nlohmann::ordered_json& e) { return writes_back(e, depth - 1); });
  if (!j.is_object()) return true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const bool index_like = !key.empty() && key.size() <= 10 && (key == "0" || key[0] != '0') &&
                            std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (index_like || !writes_back(it.value(), depth - 1)) return false;
  }
  return true;
}

}  // namespace

void tool_arguments_as_objects(jinja::Value& messages) {
  if (!messages.is_array()) return;
  auto member = [](jinja::Value& v, const char* key) { return v.is_mapping() ? v.obj->map.find(key) : nullptr; };
  for (jinja::Value& message : messages.arr->items) {
    jinja::Value* calls = member(message, "tool_calls");
    if (calls == nullptr || !calls->is_array()) continue;
    for (jinja::Value& call : calls->arr->items) {
      jinja::Value* fn = member(call, "function");
      jinja::Value* arguments = fn != nullptr ? member(*fn, "arguments") : nullptr;
      if (arguments == nullptr || !arguments->is_string() || !check_json_limits(arguments->str, "arguments").ok())
        continue;
      const auto parsed = nlohmann::ordered_json::parse(arguments->str, nullptr, /*allow_exceptions=*/false);
      if (!parsed.is_object() || !writes_back(parsed, 64)) continue;
      jinja::Value object = jinja::Value::from_json(parsed);
      object.obj->text = std::move(arguments->str);
      *arguments = std::move(object);
    }
  }
}

bool ModelChatTemplates::mention(std::string_view text) const {
  return std::any_of(templates_.begin(), templates_.end(),
                     [&](const auto& t) { return t.second.source().find(text) != std::string::npos; });
}

Result<std::string> ChatTemplate::apply(const nlohmann::ordered_json& conversation, bool add_generation_prompt,
                                        const jinja::RenderOptions& options, bool tool_arguments_as_objects) const {
  // Converting the conversation is recursive: a document nested deeper than any JSON kvshare reads is refused.
  if (json_depth_exceeds(conversation, kMaxJsonDepth))
    return invalid_argument("the conversation nests lists and objects more than " + std::to_string(kMaxJsonDepth) +
                            " levels deep, the limit for any JSON kvshare reads");
  std::vector<std::pair<std::string, jinja::Value>> vars;
  if (conversation.is_array()) {
    vars.emplace_back("messages", jinja::Value::from_json(conversation));
  } else if (conversation.is_object()) {
    if (!conversation.contains("messages"))
      return invalid_argument("the conversation object has no \"messages\" list");
    for (auto it = conversation.begin(); it != conversation.end(); ++it) {
      if (it.key() == "add_generation_prompt" || it.key() == "bos_token" || it.key() == "eos_token") continue;
      vars.emplace_back(it.key(), jinja::Value::from_json(it.value()));
    }
  } else {
    return invalid_argument("the conversation must be a list of messages or an object with \"messages\"");
  }
  if (tool_arguments_as_objects)
    for (auto& [name, value] : vars)
      if (name == "messages") kvshare::tool_arguments_as_objects(value);
  vars.emplace_back("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  vars.emplace_back("bos_token", jinja::Value::string(bos_token_));
  vars.emplace_back("eos_token", jinja::Value::string(eos_token_));
  return template_.render(vars, options);
}

}  // namespace kvshare
