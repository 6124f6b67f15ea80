// Loading what a model path names: a Hugging Face folder (config.json, safetensors, tokenizer files,
// generation_config.json) or a single .gguf file (weights, metadata and the tokenizer in one).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::shared_ptr<const BpeTokenizer> tokenizer;  // shared with the public Tokenizer
  std::vector<int32_t> eos_ids;  // every token that ends generation: the tokenizer's and generation_config's
};

Result<LoadedModel> load_pretrained(const std::string& path);
// Only the tokenizer (for `kvshare tokenize`): no weights are read.
Result<std::unique_ptr<BpeTokenizer>> load_tokenizer(const std::string& path);

}  // namespace kvshare
