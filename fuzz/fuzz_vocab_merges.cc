// libFuzzer target: a GPT-2 style tokenizer folder, vocab.json + merges.txt (BpeTokenizer::from_hf_dir). The input
// is up to four parts cut at "\n--8<--\n": vocab.json, merges.txt, tokenizer_config.json, and a text to encode.
// A tokenizer that loads must encode and decode consistently (tokenizer_checks.h).
#include "tokenizer_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  static const std::filesystem::path dir = [] {
    auto d = fuzz::scratch_dir() / "vocab_merges";
    std::filesystem::create_directories(d);
    return d;
  }();
  const auto parts = fuzz::split_parts(data, size, 4);
  fuzz::write_parts(dir, parts, {"vocab.json", "merges.txt", "tokenizer_config.json"});
  auto tok = BpeTokenizer::from_hf_dir(dir.string());
  if (!tok.ok()) {
    fuzz::check_error(tok.status(), "BpeTokenizer::from_hf_dir");
    return 0;
  }
  fuzz::check_tokenizer(**tok, parts.size() == 4 ? parts[3] : std::string_view());
  return 0;
}
