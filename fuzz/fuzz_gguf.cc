// libFuzzer target: a .gguf file, opened (GgufFile::open) and, when it opens, loaded as a model the way
// `kvshare generate --model FILE.gguf` loads it (Engine::create: config, tokenizer, weights). A model that loads
// must run: one short greedy generation, whose tokens must lie in the vocabulary.
#include <algorithm>

#include "formats/gguf.h"
#include "fuzz_util.h"
#include "kvshare/engine.h"
#include "kvshare/tokenizer.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const std::string path = fuzz::write_scratch("model.gguf", {reinterpret_cast<const char*>(data), size});
  auto gguf = GgufFile::open(path);
  if (!gguf.ok()) {
    fuzz::check_error(gguf.status(), "GgufFile::open");
    return 0;
  }
  fuzz::check_store(gguf->tensors(), size);
  for (const std::string& key : gguf->keys()) {
    const GgufValue* v = gguf->find(key);
    fuzz::check(v != nullptr, "a listed key cannot be found: " + key);
    (void)v->to_string();
  }
  // The engine loads the model as load_pretrained does (config, tokenizer, weights); only the config is read
  // here first, for the context length (reading the whole model twice would halve the executions).
  auto model_config = config_from_gguf(*gguf);
  if (!model_config.ok()) {
    fuzz::check_error(model_config.status(), "config_from_gguf");
    return 0;
  }
  EngineConfig ec;
  ec.model_path = path;
  ec.kv_cache_bytes = 4 << 20;
  ec.max_model_len = static_cast<int32_t>(std::min<int64_t>(32, model_config->max_context));
  auto engine = Engine::create(ec);
  if (!engine.ok()) {
    fuzz::check_error(engine.status(), "Engine::create");
    return 0;
  }
  const ModelConfig& config = (*engine)->model_config();
  fuzz::check(config.validate().ok(), "a loaded model's config does not validate");
  const int32_t vocab = (*engine)->tokenizer().vocab_size();
  fuzz::check(vocab <= config.vocab_size, "the tokenizer is larger than the model's vocabulary");
  for (int32_t id : (*engine)->tokenizer().encode("Once upon a time"))
    fuzz::check(id >= 0 && id < vocab, "encode gave an id outside the vocabulary");

  Request r;
  r.prompt_token_ids = {0, 1};
  r.params.temperature = 0;
  r.params.max_tokens = 2;
  for (const Output& o : (*engine)->generate({r})) {
    if (o.finish_reason == FinishReason::kError) {
      fuzz::check_error(o.error, "generate");
      continue;
    }
    for (int32_t id : o.token_ids)
      fuzz::check(id >= 0 && id < config.vocab_size, "generated a token outside the vocabulary");
  }
  return 0;
}
