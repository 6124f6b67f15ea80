// libFuzzer target: config.json (parse_hf_config) and generation_config.json. The input is up to two parts cut
// at "\n--8<--\n". config.json is parsed on its own: a config that parses must validate, and the sizes derived
// from it (parameters, K/V bytes per token, RoPE frequencies) must be computable without overflow (UBSan).
// generation_config.json's EOS ids are read the way a model folder's are, against a fixed small GPT-2 style
// tokenizer loaded once.
#include "fuzz_util.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using namespace kvshare;

// A byte-level vocabulary of the 256 byte symbols plus one merge and <|endoftext|>, loaded once: each input's
// generation_config.json is read against it as from_hf_dir reads the file beside the tokenizer's.
const BpeTokenizer& tokenizer() {
  static const std::unique_ptr<BpeTokenizer> tok = [] {
    auto d = fuzz::scratch_dir() / "config";
    std::filesystem::create_directories(d);
    std::string vocab = "{";
    int id = 0;
    for (const std::string& symbol : byte_level_chars()) {
      const bool quote = symbol == "\"" || symbol == "\\";
      vocab += "\"" + (quote ? "\\" + symbol : symbol) + "\": " + std::to_string(id++) + ", ";
    }
    vocab += "\"ab\": " + std::to_string(id) + ", ";
    vocab += "\"<|endoftext|>\": " + std::to_string(id + 1) + "}";
    std::ofstream(d / "vocab.json") << vocab;
    std::ofstream(d / "merges.txt") << "#version: 0.2\na b\n";
    auto loaded = BpeTokenizer::from_hf_dir(d.string());
    if (!loaded.ok()) fuzz::fail("the fixed tokenizer does not load: " + loaded.status().to_string());
    return std::move(*loaded);
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_parts(data, size, 2);
  auto config = parse_hf_config(std::string(parts[0]));
  if (!config.ok()) {
    fuzz::check_error(config.status(), "parse_hf_config");
  } else {
    fuzz::check(config->validate().ok(), "a parsed config does not validate");
    fuzz::check(config->num_parameters() > 0, "a parsed config has no parameters");
    fuzz::check(config->kv_bytes_per_token() > 0, "a parsed config has no K/V bytes per token");
    fuzz::check(config->rope_inv_freq().size() == static_cast<size_t>(config->head_dim / 2),
                "RoPE frequencies of the wrong count");
  }
  if (parts.size() < 2) return 0;
  const BpeTokenizer& tok = tokenizer();
  const std::string path = fuzz::write_scratch("generation_config.json", parts[1]);
  auto eos = tok.read_generation_eos_ids(path);
  if (!eos.ok()) {
    fuzz::check_error(eos.status(), "read_generation_eos_ids");
    return 0;
  }
  for (int32_t id : *eos) fuzz::check(id >= 0 && id < tok.vocab_size(), "an EOS id outside the vocabulary");
  return 0;
}
