#include "model/model.h"

#include <algorithm>
#include <filesystem>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"

namespace kvshare {

Result<std::unique_ptr<Model>> build_gpt2(const ModelConfig& c, TensorStore store, WeightSource src);
Result<std::unique_ptr<Model>> build_llama(const ModelConfig& c, TensorStore store, WeightSource src);

double Model::forward_flops(int64_t tokens, double mean_context) const {
  const ModelConfig& c = config_;
  const double d = static_cast<double>(c.hidden_size), hd = static_cast<double>(c.head_dim);
  const double qd = static_cast<double>(c.num_heads) * hd, kvd = static_cast<double>(c.num_kv_heads) * hd;
  const double ffn_mats = c.arch == Arch::kGpt2 ? 2.0 : 3.0;
  const double per_token_layer = 2.0 * (d * qd + 2 * d * kvd + qd * d + ffn_mats * d * static_cast<double>(c.ffn_size)) +
                                 4.0 * static_cast<double>(c.num_heads) * hd * mean_context;  // q·K and p·V
  return static_cast<double>(tokens) * static_cast<double>(c.num_layers) * per_token_layer;
}

namespace {

// The layer a tensor belongs to by its name ("blk.3.attn_q.weight" -> 3, "model.layers.3...", "[transformer.]h.3..."),
// or -1 for a tensor outside the layers (embeddings, final norm, head).
int64_t layer_of(const std::string& name, const ModelConfig& config, WeightSource source) {
  std::vector<std::string> prefixes;
  if (source == WeightSource::kGguf) prefixes = {"blk."};
  else if (config.arch == Arch::kGpt2) prefixes = {"h.", "transformer.h."};
  else prefixes = {"model.layers."};
  for (const std::string& prefix : prefixes) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    int64_t layer = 0;
    size_t i = prefix.size();
    for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i)
      layer = std::min<int64_t>(layer * 10 + (name[i] - '0'), int64_t{1} << 40);  // past any count; no overflow
    if (i > prefix.size() && i < name.size() && name[i] == '.') return layer;
  }
  return -1;
}

// Refuses a file that stores layers past the config's count: running the first layers only would give garbage
// (llama.cpp refuses such files too). Extra tensors inside the layers the model runs (GPT-2's attn.bias
// buffers, rotary_emb.inv_freq) are not this check's business.
Status check_no_layers_past_count(const ModelConfig& config, const TensorStore& store, WeightSource source) {
  const std::string* first = nullptr;
  int64_t first_layer = 0;
  for (const auto& [name, view] : store.tensors()) {
    const int64_t layer = layer_of(name, config, source);
    if (layer >= config.num_layers && (first == nullptr || layer < first_layer)) {
      first = &name;
      first_layer = layer;
    }
  }
  if (first == nullptr) return {};
  const std::string key = source == WeightSource::kGguf ? "GGUF " + config.model_type + ".block_count"
                          : config.arch == Arch::kGpt2  ? "config.json's n_layer"
                                                        : "config.json's num_hidden_layers";
  return invalid_argument("the weights hold tensor '" + *first + "' of layer " + std::to_string(first_layer) +
                          ", but " + key + " is " + std::to_string(config.num_layers) +
                          ": the config's layer count disagrees with the file");
}

}  // namespace

Result<std::unique_ptr<Model>> build_model(const ModelConfig& config, TensorStore store, WeightSource source) {
  KV_RETURN_IF_ERROR(config.validate());
  KV_RETURN_IF_ERROR(check_no_layers_past_count(config, store, source));
  switch (config.arch) {
    case Arch::kGpt2: return build_gpt2(config, std::move(store), source);
    case Arch::kLlama: return build_llama(config, std::move(store), source);
  }
  return unimplemented("unknown architecture");
}

Result<std::unique_ptr<Model>> load_model(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string config_path = (fs::path(path) / "config.json").string();
    auto text = read_model_text_file(config_path);
    if (!text.ok()) {
      if (path_entry_exists(config_path)) return text.status();  // there, but a folder, a pipe, unreadable, ...
      return not_found(path + " has no config.json; a model folder needs config.json and safetensors");
    }
    auto config = parse_hf_config(*text);
    if (!config.ok()) return config.status().with_context(path);
    KV_ASSIGN_OR_RETURN(TensorStore store, load_safetensors_dir(path));
    auto model = build_model(*config, std::move(store), WeightSource::kHuggingFace);
    if (!model.ok()) return model.status().with_context(path);
    return model;
  }
  if (!fs::exists(path, ec)) return not_found("model path " + path + " does not exist; give a model folder or a .gguf file");
  KV_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(path));
  auto config = config_from_gguf(gguf);
  if (!config.ok()) return config.status().with_context(path);
  auto model = build_model(*config, gguf.tensors(), WeightSource::kGguf);
  if (!model.ok()) return model.status().with_context(path);
  return model;
}

}  // namespace kvshare
