#include "engine/loader.h"

#include <filesystem>

#include "core/mapped_file.h"
#include "formats/gguf.h"

namespace kvshare {
namespace {

bool is_dir(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

Status check_exists(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return not_found("model path '" + path + "' does not exist; give a Hugging Face model folder or a .gguf file");
  return {};
}

}  // namespace

Result<LoadedModel> load_pretrained(const std::string& path) {
  KV_RETURN_IF_ERROR(check_exists(path));
  LoadedModel loaded;
  if (is_dir(path)) {
    if (!path_entry_exists((std::filesystem::path(path) / "config.json").string()))
      return not_found(path + " is not a model folder: it has no config.json (a Hugging Face model folder holds "
                       "config.json, model.safetensors and tokenizer files)");
    auto tok = BpeTokenizer::from_hf_dir(path);
    if (!tok.ok()) return tok.status().with_context("loading the tokenizer of " + path);
    loaded.tokenizer = std::move(tok).value();
    KV_ASSIGN_OR_RETURN(loaded.model, load_model(path));
    loaded.eos_ids = loaded.tokenizer->eos_ids();  // generation_config.json's eos_token_id included
  } else {
    auto gguf = GgufFile::open(path);
    if (!gguf.ok()) return gguf.status();
    auto config = config_from_gguf(*gguf);
    if (!config.ok()) return config.status().with_context(path);
    auto tok = BpeTokenizer::from_gguf(*gguf);
    if (!tok.ok()) return tok.status().with_context("loading the tokenizer stored in " + path);
    loaded.tokenizer = std::move(tok).value();
    auto model = build_model(*config, gguf->tensors(), WeightSource::kGguf);
    if (!model.ok()) return model.status().with_context(path);
    loaded.model = std::move(model).value();
    loaded.eos_ids = loaded.tokenizer->eos_ids();
  }
  if (loaded.tokenizer->vocab_size() > loaded.model->config().vocab_size)
    return invalid_argument(path + ": the tokenizer has " + std::to_string(loaded.tokenizer->vocab_size()) +
                            " tokens but the model only " + std::to_string(loaded.model->config().vocab_size));
  return loaded;
}

Result<std::unique_ptr<BpeTokenizer>> load_tokenizer(const std::string& path) {
  KV_RETURN_IF_ERROR(check_exists(path));
  if (is_dir(path)) return BpeTokenizer::from_hf_dir(path);
  KV_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(path));
  return BpeTokenizer::from_gguf(gguf);
}

}  // namespace kvshare
