// kvshare tokenize --model PATH TEXT: the token ids as a JSON array, special tokens added as the model's
// tokenizer adds them by default.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "engine/loader.h"

namespace kvshare::cli {

int run_tokenize(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      {"model", true, "a Hugging Face folder or a .gguf file (only the tokenizer is read)"},
      {"no-special", false, "add no BOS/EOS"},
      {"help", false, "show this help"},
  };
  auto args = Args::parse("tokenize", specs, argv);
  if (!args.ok()) return usage_error("tokenize", args.status());
  if (args->has("help")) {
    std::fputs(usage("tokenize --model PATH TEXT", "Print TEXT's token ids as a JSON array.", specs).c_str(), stdout);
    return 0;
  }
  auto model = args->get("model");
  if (!model) return fail("tokenize", invalid_argument("--model is required"));
  if (args->positional().size() != 1)
    return fail("tokenize", invalid_argument("give exactly one TEXT to tokenize (quote it)"));
  auto tok = load_tokenizer(*model);
  if (!tok.ok()) return fail("tokenize", tok.status());
  const std::vector<int32_t> ids = (*tok)->encode(args->positional()[0], !args->has("no-special"));
  std::cout << nlohmann::json(ids).dump() << "\n";
  return 0;
}

}  // namespace kvshare::cli
