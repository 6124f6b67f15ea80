// libFuzzer target: a Hugging Face tokenizer folder with tokenizer.json (BpeTokenizer::from_hf_dir). The input is
// up to four parts cut at "\n--8<--\n": tokenizer.json, tokenizer_config.json, generation_config.json, and a
// text to encode. A tokenizer that loads must encode and decode consistently (tokenizer_checks.h).
#include "tokenizer_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kvshare::fuzz::run_tokenizer_folder("tokenizer_json", {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}, data, size);
}
