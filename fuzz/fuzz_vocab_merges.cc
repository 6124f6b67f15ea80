// libFuzzer target: a GPT-2 style tokenizer folder, vocab.json + merges.txt (BpeTokenizer::from_hf_dir). The input
// is up to four parts cut at "\n--8<--\n": vocab.json, merges.txt, tokenizer_config.json, and a text to encode.
// A tokenizer that loads must encode and decode consistently (tokenizer_checks.h).
#include "tokenizer_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kvshare::fuzz::run_tokenizer_folder("vocab_merges", {"vocab.json", "merges.txt", "tokenizer_config.json"}, data, size);
}
