#include "core/det_math.h"
#include "model/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/json_limits.h"
#include "core/number_text.h"
#include "formats/gguf.h"
#include "formats/json_error.h"

namespace kvshare {

const char* arch_name(Arch arch) { return arch == Arch::kGpt2 ? "gpt2" : "llama"; }

Status ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) -> Status {
    if (v <= 0) return invalid_argument(std::string("model config: ") + name + " must be positive, got " + std::to_string(v));
    return {};
  };
  KV_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  KV_RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  KV_RETURN_IF_ERROR(positive(num_layers, "num_layers"));
  KV_RETURN_IF_ERROR(positive(num_heads, "num_heads"));
  KV_RETURN_IF_ERROR(positive(num_kv_heads, "num_kv_heads"));
  KV_RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  KV_RETURN_IF_ERROR(positive(ffn_size, "ffn_size"));
  KV_RETURN_IF_ERROR(positive(max_context, "max_context"));
  if (num_heads % num_kv_heads != 0)
    return invalid_argument("model config: num_attention_heads (" + std::to_string(num_heads) +
                            ") must be a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  if (arch == Arch::kGpt2 && head_dim * num_heads != hidden_size)
    return invalid_argument("model config: n_embd (" + std::to_string(hidden_size) + ") must be a multiple of n_head (" +
                            std::to_string(num_heads) + ") for GPT-2");
  if (head_dim % 2 != 0)
    return invalid_argument("model config: head_dim (" + std::to_string(head_dim) + ") must be even" +
                            (arch == Arch::kLlama ? " for RoPE" : ", as in every GPT-2 model"));
  // Limits far above any real model, which keep every size derived from them (parameters, K/V bytes per token,
  // a layer's weights) well inside 64 bits and positions inside 32.
  auto at_most = [](int64_t v, int64_t limit, const char* name) -> Status {
    if (v > limit)
      return invalid_argument(std::string("model config: ") + name + " is " + std::to_string(v) +
                              ", more than the limit of " + std::to_string(limit));
    return {};
  };
  KV_RETURN_IF_ERROR(at_most(vocab_size, kMaxConfigVocabSize, "vocab_size"));
  KV_RETURN_IF_ERROR(at_most(hidden_size, int64_t{1} << 20, "hidden_size"));
  KV_RETURN_IF_ERROR(at_most(num_layers, 4096, "num_layers"));
  KV_RETURN_IF_ERROR(at_most(num_heads, 4096, "num_heads"));
  KV_RETURN_IF_ERROR(at_most(head_dim, int64_t{1} << 16, "head_dim"));
  KV_RETURN_IF_ERROR(at_most(ffn_size, int64_t{1} << 22, "ffn_size"));
  KV_RETURN_IF_ERROR(at_most(max_context, int64_t{1} << 30, "max_context (max_position_embeddings)"));
  // Real numbers that divide or take powers: zero, negative, infinite or NaN values give NaN or empty text.
  auto finite_positive = [](double v, const std::string& name) -> Status {
    if (!std::isfinite(v) || v <= 0)
      return invalid_argument("model config: " + name + " must be a finite number greater than 0, got " +
                              number_text(v));
    return {};
  };
  KV_RETURN_IF_ERROR(finite_positive(norm_eps, arch == Arch::kGpt2 ? "norm_eps (layer_norm_epsilon)"
                                                                  : "norm_eps (rms_norm_eps)"));
  KV_RETURN_IF_ERROR(finite_positive(rope_theta, "rope_theta"));
  if (const float theta = static_cast<float>(rope_theta); !std::isnormal(theta))
    return invalid_argument("model config: rope_theta is " + number_text(rope_theta) + ", which is " +
                            (std::isinf(theta) ? "infinite" : theta > 0 ? "subnormal" : "0") +
                            " as a float32, the type RoPE frequencies are computed in; it must be between 1.2e-38 and "
                            "3.4e38");
  if (rope_scaling.enabled) {
    KV_RETURN_IF_ERROR(finite_positive(rope_scaling.factor, "rope_scaling.factor"));
    KV_RETURN_IF_ERROR(finite_positive(rope_scaling.low_freq_factor, "rope_scaling.low_freq_factor"));
    KV_RETURN_IF_ERROR(finite_positive(rope_scaling.high_freq_factor, "rope_scaling.high_freq_factor"));
    KV_RETURN_IF_ERROR(finite_positive(rope_scaling.original_max_position_embeddings,
                                       "rope_scaling.original_max_position_embeddings"));
    if (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor))
      return invalid_argument("model config: rope_scaling.high_freq_factor (" +
                              number_text(rope_scaling.high_freq_factor) +
                              ") must be greater than rope_scaling.low_freq_factor (" +
                              number_text(rope_scaling.low_freq_factor) + ")");
  }
  for (size_t i = 0; i < rope_freq_factors.size(); ++i)
    KV_RETURN_IF_ERROR(finite_positive(rope_freq_factors[i], "rope_freq_factors[" + std::to_string(i) + "]"));
  // Each value above may be finite and still give a frequency (float32, as Hugging Face computes it) or an angle
  // at the last position that is not finite, or past the 2^30 below which det::sincos computes the RoPE tables: a
  // rope_theta past float's range, a scaling factor of 1e-300, rope_freqs of 1e-30. The model then computed NaN.
  // Real models' frequencies are at most 1, and max_context at most 2^30.
  if (arch == Arch::kLlama) {
    const std::vector<float> inv = rope_inv_freq();
    for (size_t i = 0; i < inv.size(); ++i) {
      const double last_angle = static_cast<double>(inv[i]) * static_cast<double>(max_context);
      if (!(last_angle < 1073741824.0))  // also NaN
        return invalid_argument("model config: RoPE frequency " + std::to_string(i) + " is " + number_text(inv[i]) +
                                " (from rope_theta " + number_text(rope_theta) +
                                (rope_scaling.enabled ? ", rope_scaling.factor " + number_text(rope_scaling.factor) : "") +
                                (rope_freq_factors.empty() ? "" : " and rope_freqs") + "), so the angle at position " +
                                std::to_string(max_context) + " would be " + number_text(last_angle) +
                                ", not a finite number below 2^30: the config's RoPE values are out of range");
    }
  }
  return {};
}

std::vector<float> ModelConfig::rope_inv_freq() const {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // As Hugging Face computes it: 1 / theta^(2i/d) in float32 (the power by det::powf: the same bits on
    // every CPU, where the C library's may differ between CPUs).
    inv[i] = 1.0f / det::powf(static_cast<float>(rope_theta), static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
  if (!rope_freq_factors.empty()) {
    for (int64_t i = 0; i < half && i < static_cast<int64_t>(rope_freq_factors.size()); ++i) inv[i] /= rope_freq_factors[i];
  }
  if (rope_scaling.enabled) {
    const double low_wavelen = rope_scaling.original_max_position_embeddings / rope_scaling.low_freq_factor;
    const double high_wavelen = rope_scaling.original_max_position_embeddings / rope_scaling.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rope_scaling.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (rope_scaling.original_max_position_embeddings / wavelen - rope_scaling.low_freq_factor) /
                              (rope_scaling.high_freq_factor - rope_scaling.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / rope_scaling.factor + smooth * f);
      }
    }
  }
  return inv;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t d = hidden_size, kv = num_kv_heads * head_dim, q = num_heads * head_dim;
  int64_t per_layer;
  if (arch == Arch::kGpt2) {
    per_layer = 4 * d + d * 3 * d + 3 * d + d * d + d + d * ffn_size + ffn_size + ffn_size * d + d;
  } else {
    per_layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * ffn_size + (qkv_bias ? q + 2 * kv : 0);
  }
  int64_t total = num_layers * per_layer + vocab_size * d + d * (arch == Arch::kGpt2 ? 2 : 1);
  if (arch == Arch::kGpt2) total += max_context * d;
  if (!tie_embeddings) total += vocab_size * d;
  return total;
}

namespace {

using nlohmann::json;

// A JSON value for an error message, shortened.
std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() <= 40 ? s : s.substr(0, 40) + "...";
}

// The first of `keys` present (and not null), as an integer. Absent, or not an integer: invalid_argument naming
// the key (and what it holds).
Result<int64_t> get_int(const json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer())
      return invalid_argument(std::string("config.json: \"") + k + "\" must be an integer, got " + shown(*it));
    // 2^63 and above are read as unsigned; as int64 they wrapped to negative ("must be positive, got -9223...").
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return invalid_argument(std::string("config.json: \"") + k + "\" is " + shown(*it) + ", far too large");
    return it->get<int64_t>();
  }
  return invalid_argument(std::string("config.json: missing integer \"") + *keys.begin() + "\"");
}

// An integer that may be absent (or null): `fallback` then; any other non-integer is an error.
Result<int64_t> get_int_or(const json& j, const char* key, int64_t fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return get_int(j, {key});
}

// A number that may be absent (or null): `fallback` then; a string, bool, array or object is an error naming
// the key. (Whether its value makes sense is ModelConfig::validate's business.)
Result<double> get_number(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number())
    return invalid_argument(std::string("config.json: \"") + key + "\" must be a number, got " + shown(*it));
  return it->get<double>();
}

// A boolean that may be absent (or null): `fallback` then; anything else but true/false is an error.
Result<bool> get_bool_or(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    return invalid_argument(std::string("config.json: \"") + key + "\" must be true or false, got " + shown(*it));
  return it->get<bool>();
}

// A string that may be absent (or null): `fallback` then; anything else but a string is an error.
Result<std::string> get_string_or(const json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string())
    return invalid_argument(std::string("config.json: \"") + key + "\" must be a string, got " + shown(*it));
  return it->get<std::string>();
}

// A finite number > 0 that may be absent: the check names the key as config.json spells it.
Result<double> get_positive_number(const json& j, const char* key, double fallback) {
  KV_ASSIGN_OR_RETURN(const double v, get_number(j, key, fallback));
  if (!std::isfinite(v) || v <= 0)
    return invalid_argument(std::string("config.json: \"") + key + "\" must be a finite number greater than 0, got " +
                            shown(j.at(key)));
  return v;
}

// A number a llama3 rope_scaling must hold: absent or null is an error naming it (it took a default, so a model
// trained with another value ran with the wrong frequencies; transformers refuses such a config, "Missing required
// keys in `rope_scaling`"), as is one of another type or not finite and greater than 0.
Result<double> llama3_scaling_number(const json& rs, const char* key) {
  auto it = rs.find(key);
  if (it == rs.end() || it->is_null())
    return invalid_argument(std::string("config.json: rope_scaling of type \"llama3\" has no \"") + key +
                            "\"; it needs factor, low_freq_factor, high_freq_factor and "
                            "original_max_position_embeddings (transformers refuses it too)");
  return get_positive_number(rs, key, 0);
}

// The class names transformers gives the models of each model_type kvshare runs: PREFIX + "For" + a task
// ("LlamaForCausalLM", "GPT2ForSequenceClassification"), or PREFIX + "Model", "LMHeadModel", "DoubleHeadsModel".
// ("LLaMA": the first Llama conversions' spelling.)
struct ModelClasses {
  const char* model_type;
  const char* language_model;  // the class of the model with its language-modelling head
  std::vector<const char*> prefixes;
};
const std::vector<ModelClasses>& model_classes() {
  static const std::vector<ModelClasses> classes = {{"gpt2", "GPT2LMHeadModel", {"GPT2"}},
                                                    {"llama", "LlamaForCausalLM", {"Llama", "LLaMA"}},
                                                    {"qwen2", "Qwen2ForCausalLM", {"Qwen2"}},
                                                    {"mistral", "MistralForCausalLM", {"Mistral"}}};
  return classes;
}

bool is_class_of(const std::string& name, const ModelClasses& classes) {
  for (const std::string prefix : classes.prefixes) {
    if (!name.starts_with(prefix)) continue;
    const std::string rest = name.substr(prefix.size());
    if (rest == "Model" || rest == "LMHeadModel" || rest == "DoubleHeadsModel") return true;
    if (rest.size() > 3 && rest.starts_with("For") && std::isupper(static_cast<unsigned char>(rest[3]))) return true;
  }
  return false;
}

// config.json's architectures (the model classes the checkpoint was saved from) must be classes of model_type.
// kvshare picks the architecture by model_type, vLLM and llama.cpp's converter by architectures: a config whose
// two disagree (GPT2LMHeadModel beside model_type "llama", or a variant's class such as Qwen2MoeForCausalLM beside
// "qwen2") describes two different models, and loaded as model_type said without a word.
Status check_architectures(const json& j, const std::string& model_type) {
  auto own = std::find_if(model_classes().begin(), model_classes().end(),
                          [&](const ModelClasses& c) { return model_type == c.model_type; });
  auto it = j.find("architectures");
  if (own == model_classes().end() || it == j.end() || it->is_null()) return {};
  const bool strings =
      it->is_array() && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_string(); });
  if (!strings)
    return invalid_argument("config.json: \"architectures\" must be a list of class names (such as "
                            "[\"LlamaForCausalLM\"]), got " + shown(*it));
  for (const json& v : *it) {
    const std::string name = v.get<std::string>();
    if (is_class_of(name, *own)) continue;
    auto other = std::find_if(model_classes().begin(), model_classes().end(),
                              [&](const ModelClasses& c) { return is_class_of(name, c); });
    const std::string whose = other != model_classes().end() ? std::string("a ") + other->model_type + " class"
                                                              : "not a class of " + model_type;
    return invalid_argument("config.json: architectures names \"" + name + "\" (" + whose + ") but model_type is \"" +
                            model_type + "\" (whose classes are " + own->language_model +
                            " and the like): the two name different models; correct whichever is wrong");
  }
  return {};
}

}  // namespace

namespace {
Result<ModelConfig> parse_hf_config_json(const json& j);
}  // namespace

Result<ModelConfig> parse_hf_config(const std::string& text) {
  KV_RETURN_IF_ERROR(check_json_limits(text, "config.json"));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("config.json is not valid JSON" + json_syntax_error(text));
  if (!j.is_object()) return invalid_argument("config.json is not a JSON object");
  try {
    return parse_hf_config_json(j);
  } catch (const json::exception& e) {  // a field of the wrong type
    return invalid_argument(std::string("config.json: a field has the wrong type: ") + e.what());
  }
}

namespace {
Result<ModelConfig> parse_hf_config_json(const json& j) {
  ModelConfig c;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    return invalid_argument("config.json has no \"model_type\"; kvshare needs it to pick the architecture");
  c.model_type = j.at("model_type").get<std::string>();
  KV_RETURN_IF_ERROR(check_architectures(j, c.model_type));
  if (c.model_type == "gpt2") {
    c.arch = Arch::kGpt2;
    KV_ASSIGN_OR_RETURN(c.vocab_size, get_int(j, {"vocab_size"}));
    KV_ASSIGN_OR_RETURN(c.hidden_size, get_int(j, {"n_embd", "hidden_size"}));
    KV_ASSIGN_OR_RETURN(c.num_layers, get_int(j, {"n_layer", "num_hidden_layers"}));
    KV_ASSIGN_OR_RETURN(c.num_heads, get_int(j, {"n_head", "num_attention_heads"}));
    KV_ASSIGN_OR_RETURN(c.max_context, get_int(j, {"n_positions", "max_position_embeddings"}));
    c.num_kv_heads = c.num_heads;
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
    KV_ASSIGN_OR_RETURN(c.ffn_size, get_int_or(j, "n_inner", 4 * c.hidden_size));
    KV_ASSIGN_OR_RETURN(const double eps, get_positive_number(j, "layer_norm_epsilon", 1e-5));
    c.norm_eps = static_cast<float>(eps);
    c.tie_embeddings = true;
    KV_ASSIGN_OR_RETURN(const bool scale_by_layer, get_bool_or(j, "scale_attn_by_inverse_layer_idx", false));
    KV_ASSIGN_OR_RETURN(const bool upcast, get_bool_or(j, "reorder_and_upcast_attn", false));
    if (scale_by_layer || upcast)
      return unimplemented("config.json: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported");
    KV_ASSIGN_OR_RETURN(const bool scale_attn, get_bool_or(j, "scale_attn_weights", true));
    if (!scale_attn)
      return unimplemented("config.json: scale_attn_weights false (attention scores not divided by sqrt(head_dim)) "
                           "is not supported");
    KV_ASSIGN_OR_RETURN(const std::string act, get_string_or(j, "activation_function", "gelu_new"));
    if (act != "gelu_new")
      return unimplemented("config.json: GPT-2 activation_function '" + act + "' is not supported (only gelu_new)");
  } else if (c.model_type == "llama" || c.model_type == "qwen2" || c.model_type == "mistral") {
    c.arch = Arch::kLlama;
    KV_ASSIGN_OR_RETURN(c.vocab_size, get_int(j, {"vocab_size"}));
    KV_ASSIGN_OR_RETURN(c.hidden_size, get_int(j, {"hidden_size"}));
    KV_ASSIGN_OR_RETURN(c.num_layers, get_int(j, {"num_hidden_layers"}));
    KV_ASSIGN_OR_RETURN(c.num_heads, get_int(j, {"num_attention_heads"}));
    KV_ASSIGN_OR_RETURN(c.ffn_size, get_int(j, {"intermediate_size"}));
    KV_ASSIGN_OR_RETURN(c.max_context, get_int(j, {"max_position_embeddings"}));
    KV_ASSIGN_OR_RETURN(c.num_kv_heads, get_int_or(j, "num_key_value_heads", c.num_heads));
    if (!j.contains("head_dim") && c.num_heads > 0 && c.hidden_size % c.num_heads != 0)
      return invalid_argument("config.json: hidden_size (" + std::to_string(c.hidden_size) +
                              ") is not a multiple of num_attention_heads (" + std::to_string(c.num_heads) +
                              ") and there is no head_dim");
    KV_ASSIGN_OR_RETURN(c.head_dim,
                        get_int_or(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0));
    KV_ASSIGN_OR_RETURN(const double eps, get_positive_number(j, "rms_norm_eps", 1e-6));
    c.norm_eps = static_cast<float>(eps);
    KV_ASSIGN_OR_RETURN(const bool use_sliding_window, get_bool_or(j, "use_sliding_window", c.model_type == "mistral"));
    if (j.contains("sliding_window") && !j["sliding_window"].is_null() && use_sliding_window)
      return unimplemented("config.json: sliding-window attention is not supported");
    KV_ASSIGN_OR_RETURN(c.rope_theta, get_positive_number(j, "rope_theta", 10000.0));
    // transformers rotates the first head_dim * partial_rotary_factor dimensions of each head; kvshare rotates
    // them all, so any other factor would run the model with the wrong positions.
    KV_ASSIGN_OR_RETURN(const double rotary, get_number(j, "partial_rotary_factor", 1.0));
    if (rotary != 1.0)
      return unimplemented("config.json: partial_rotary_factor " + number_text(rotary) +
                           " is not supported: kvshare rotates the whole head (partial_rotary_factor 1)");
    KV_ASSIGN_OR_RETURN(c.tie_embeddings, get_bool_or(j, "tie_word_embeddings", false));
    KV_ASSIGN_OR_RETURN(const bool attention_bias, get_bool_or(j, "attention_bias", false));
    c.qkv_bias = c.model_type == "qwen2" || attention_bias;
    c.o_bias = c.model_type != "qwen2" && attention_bias;
    KV_ASSIGN_OR_RETURN(const bool mlp_bias, get_bool_or(j, "mlp_bias", false));
    if (mlp_bias) return unimplemented("config.json: mlp_bias is not supported");
    KV_ASSIGN_OR_RETURN(const std::string hidden_act, get_string_or(j, "hidden_act", "silu"));
    if (hidden_act != "silu")
      return unimplemented("config.json: hidden_act '" + hidden_act + "' is not supported (only silu)");
    auto rs = j.find("rope_scaling");
    if (rs != j.end() && !rs->is_null() && !rs->is_object())
      return invalid_argument("config.json: rope_scaling must be an object (such as {\"rope_type\": \"llama3\", ...}) "
                              "or null, got " + rs->dump());
    if (rs != j.end() && rs->is_object()) {
      KV_ASSIGN_OR_RETURN(const std::string legacy_type, get_string_or(*rs, "type", ""));
      KV_ASSIGN_OR_RETURN(const std::string type, get_string_or(*rs, "rope_type", legacy_type));
      if (type.empty())
        return invalid_argument("config.json: rope_scaling has no \"rope_type\" (or \"type\"), got " + shown(*rs) +
                                "; kvshare runs \"llama3\" and \"default\"");
      if (type == "llama3") {
        // Every number is required (the "default" type needs none).
        c.rope_scaling.enabled = true;
        KV_ASSIGN_OR_RETURN(c.rope_scaling.factor, llama3_scaling_number(*rs, "factor"));
        KV_ASSIGN_OR_RETURN(c.rope_scaling.low_freq_factor, llama3_scaling_number(*rs, "low_freq_factor"));
        KV_ASSIGN_OR_RETURN(c.rope_scaling.high_freq_factor, llama3_scaling_number(*rs, "high_freq_factor"));
        KV_ASSIGN_OR_RETURN(c.rope_scaling.original_max_position_embeddings,
                            llama3_scaling_number(*rs, "original_max_position_embeddings"));
      } else if (type != "default") {
        return unimplemented("config.json: rope_scaling type '" + type + "' is not supported (only llama3)");
      }
    }
  } else {
    return unimplemented("config.json: model_type '" + c.model_type +
                         "' is not supported; kvshare runs gpt2, llama and qwen2 models");
  }
  KV_RETURN_IF_ERROR(c.validate());
  return c;
}
}  // namespace

namespace {
// Optional GGUF metadata: absent gives `fallback`; present with the wrong type is an error naming file and key.
Result<int64_t> gguf_int_or(const GgufFile& g, const std::string& key, int64_t fallback) {
  if (!g.contains(key)) return fallback;
  return g.get_int(key);
}

Result<double> gguf_positive_or(const GgufFile& g, const std::string& key, double fallback) {
  if (!g.contains(key)) return fallback;
  KV_ASSIGN_OR_RETURN(const double v, g.get_float(key));
  if (!std::isfinite(v) || v <= 0)
    return invalid_argument("GGUF " + g.path() + ": " + key + " must be a finite number greater than 0, got " +
                            number_text(v));
  return v;
}
}  // namespace

Result<ModelConfig> config_from_gguf(const GgufFile& g) {
  KV_ASSIGN_OR_RETURN(std::string arch, g.get_string("general.architecture"));
  ModelConfig c;
  c.model_type = arch;
  if (arch == "gpt2") {
    c.arch = Arch::kGpt2;
  } else if (arch == "llama") {
    c.arch = Arch::kLlama;
    c.rope_style = RopeStyle::kInterleaved;  // llama.cpp's converter permutes Q/K rows for Llama
  } else if (arch == "qwen2") {
    c.arch = Arch::kLlama;  // Qwen2 is Llama with Q/K/V biases; its Q/K rows are stored unpermuted
    c.qkv_bias = true;
  } else {
    return unimplemented("GGUF general.architecture '" + arch + "' is not supported; kvshare runs gpt2, llama and qwen2");
  }
  const std::string p = arch + ".";
  KV_ASSIGN_OR_RETURN(c.hidden_size, g.get_int(p + "embedding_length"));
  KV_ASSIGN_OR_RETURN(c.num_layers, g.get_int(p + "block_count"));
  KV_ASSIGN_OR_RETURN(c.num_heads, g.get_int(p + "attention.head_count"));
  KV_ASSIGN_OR_RETURN(c.ffn_size, g.get_int(p + "feed_forward_length"));
  KV_ASSIGN_OR_RETURN(c.max_context, g.get_int(p + "context_length"));
  KV_ASSIGN_OR_RETURN(c.num_kv_heads, gguf_int_or(g, p + "attention.head_count_kv", c.num_heads));
  // Mixtral and other mixtures of experts are stored under general.architecture "llama" with an expert count.
  KV_ASSIGN_OR_RETURN(const int64_t experts, gguf_int_or(g, p + "expert_count", 0));
  if (experts != 0)
    return unimplemented("GGUF: " + p + "expert_count is " + std::to_string(experts) +
                         ": mixture-of-experts models are not supported; kvshare runs dense gpt2, llama and qwen2");
  // The head size comes from these two: check them before anything derived from it.
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
    return invalid_argument("GGUF: " + p + "embedding_length (" + std::to_string(c.hidden_size) +
                            ") must be a positive multiple of " + p + "attention.head_count (" +
                            std::to_string(c.num_heads) + ")");
  c.head_dim = c.hidden_size / c.num_heads;
  if (c.arch == Arch::kGpt2) {
    KV_ASSIGN_OR_RETURN(const double eps, gguf_positive_or(g, p + "attention.layer_norm_epsilon", 1e-5));
    c.norm_eps = static_cast<float>(eps);
  } else {
    KV_ASSIGN_OR_RETURN(const double eps, gguf_positive_or(g, p + "attention.layer_norm_rms_epsilon", 1e-5));
    c.norm_eps = static_cast<float>(eps);
    KV_ASSIGN_OR_RETURN(c.rope_theta, gguf_positive_or(g, p + "rope.freq_base", 10000.0));
    KV_ASSIGN_OR_RETURN(const int64_t rot, gguf_int_or(g, p + "rope.dimension_count", c.head_dim));
    if (rot != c.head_dim)
      return unimplemented("GGUF: partial rotary embeddings (rope.dimension_count " + std::to_string(rot) +
                           " != head dim " + std::to_string(c.head_dim) + ") are not supported");
    // RoPE scaling as llama.cpp reads it: rope.scaling.type (none, linear, yarn, longrope; linear when absent)
    // with rope.scaling.factor, else the older rope.scale_linear (a factor of 0 or 1 scales nothing). llama3's
    // scaling is stored as rope_freqs.weight (below); as on the Hugging Face path, every other one is refused.
    std::string scaling = "linear";
    if (g.contains(p + "rope.scaling.type")) {
      KV_ASSIGN_OR_RETURN(scaling, g.get_string(p + "rope.scaling.type"));
    }
    const std::string factor_key =
        g.contains(p + "rope.scaling.factor") ? p + "rope.scaling.factor" : p + "rope.scale_linear";
    double factor = 0;
    if (g.contains(factor_key)) {
      KV_ASSIGN_OR_RETURN(factor, g.get_float(factor_key));
    }
    if (scaling != "none" && !(scaling == "linear" && (factor == 0 || factor == 1)))
      return unimplemented("GGUF: RoPE scaling type '" + scaling + "' (" + p + "rope.scaling.type, " + factor_key +
                           " " + number_text(factor) + ") is not supported (only llama3, stored as rope_freqs.weight)");
  }
  // As on the Hugging Face path, sliding-window attention is not implemented: refused when it would apply, that
  // is when the window is shorter than the context (no sequence is ever longer).
  KV_ASSIGN_OR_RETURN(const int64_t window, gguf_int_or(g, p + "attention.sliding_window", 0));
  if (window > 0 && window < c.max_context)
    return unimplemented("GGUF: " + p + "attention.sliding_window is " + std::to_string(window) + ", shorter than " +
                         p + "context_length (" + std::to_string(c.max_context) +
                         "): sliding-window attention is not supported");
  if (g.contains(p + "vocab_size")) {
    KV_ASSIGN_OR_RETURN(c.vocab_size, g.get_int(p + "vocab_size"));
  } else {
    KV_ASSIGN_OR_RETURN(auto tokens, g.get_string_array("tokenizer.ggml.tokens"));
    c.vocab_size = static_cast<int64_t>(tokens.size());
  }
  c.tie_embeddings = g.tensors().find("output.weight") == nullptr;
  if (const TensorView* f = g.tensors().find("rope_freqs.weight")) {
    if (f->dtype != DType::kF32 || f->num_elements() != c.head_dim / 2)
      return invalid_argument("GGUF: rope_freqs.weight must hold head_dim / 2 F32 factors, got " +
                              std::to_string(f->num_elements()) + " " + dtype_name(f->dtype));
    const auto* v = static_cast<const float*>(f->data);
    c.rope_freq_factors.assign(v, v + f->num_elements());
  }
  KV_RETURN_IF_ERROR(c.validate());
  return c;
}

}  // namespace kvshare
