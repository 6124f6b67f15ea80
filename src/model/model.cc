#include "model/model.h"

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

Result<std::unique_ptr<Model>> build_model(const ModelConfig& config, TensorStore store, WeightSource source) {
  KV_RETURN_IF_ERROR(config.validate());
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
