// kvshare make-model: a model with random weights in the real layout (Hugging Face folder + GGUF).
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "make_model/make_model.h"

namespace kvshare::cli {

int run_make_model(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      {"arch", true, "gpt2 | llama | qwen2"},
      {"shape", true, "gpt2: micro, tiny, gpt2-small; llama/qwen2: micro, tiny, tiny-llama3, smollm-135m, llama-1b"},
      {"tokenizer", true, "a GPT-2-style tokenizer folder (vocab.json + merges.txt, or encoder.json + vocab.bpe)"},
      {"out", true, "the folder to write (config.json, model.safetensors, tokenizer files, model.gguf)"},
      {"dtype", true, "f32 | f16 | bf16 (f32)"},
      {"seed", true, "weights seed (0)"},
      {"overwrite", false, "write into --out even if it is a folder that already holds files"},
      {"help", false, "show this help"},
  };
  auto args = Args::parse("make-model", specs, argv);
  if (!args.ok()) return usage_error("make-model", args.status());
  if (args->has("help")) {
    std::fputs(usage("make-model", "Write a model with random weights for tests and benchmarks.", specs).c_str(), stdout);
    return 0;
  }
  if (!args->positional().empty())
    return fail("make-model", invalid_argument("unexpected argument '" + args->positional()[0] + "'"));
  MakeModelOptions o;
  for (const char* required : {"arch", "shape", "tokenizer", "out"})
    if (!args->has(required)) return fail("make-model", invalid_argument(std::string("--") + required + " is required"));
  o.arch = *args->get("arch");
  o.shape = *args->get("shape");
  o.tokenizer_dir = *args->get("tokenizer");
  o.out_dir = *args->get("out");
  // Writing random weights over a real model's files would destroy it (and leave a folder that no longer loads).
  std::error_code ec;
  if (std::filesystem::is_directory(o.out_dir, ec) && !std::filesystem::is_empty(o.out_dir, ec) &&
      !args->has("overwrite"))
    return fail("make-model", invalid_argument("--out " + o.out_dir + " is a folder that already holds files; "
                                               "give an empty or new folder, or --overwrite to replace its model files"));
  o.dtype = args->get_or("dtype", "f32");
  auto seed = args->get_int("seed", 0);
  if (!seed.ok()) return fail("make-model", seed.status());
  if (*seed < 0) return fail("make-model", invalid_argument("--seed must not be negative"));
  o.seed = static_cast<uint64_t>(*seed);
  Status st = make_model(o);
  if (!st.ok()) return fail("make-model", st);
  std::printf("wrote %s (%s %s, %s): config.json, model.safetensors, tokenizer files, model.gguf\n", o.out_dir.c_str(),
              o.arch.c_str(), o.shape.c_str(), o.dtype.c_str());
  return 0;
}

}  // namespace kvshare::cli
