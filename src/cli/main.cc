// kvshare's command line: generate | serve | tokenize | chat-template | make-model | bench.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "kernels/isa.h"

namespace {

const char* kUsage =
    "kvshare: batched LLM inference that computes every shared prompt prefix once\n"
    "\n"
    "usage: kvshare COMMAND [flags]   (kvshare COMMAND --help for its flags)\n"
    "\n"
    "commands:\n"
    "  generate     complete one prompt (--prompt) or a JSONL batch job (--input/--output)\n"
    "  serve        an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, ...)\n"
    "  bench        run a benchmark workload (gsp, prefix-repetition, long-doc-qa, multi-turn, control)\n"
    "  tokenize     print a text's token ids as a JSON array\n"
    "  chat-template  print the prompt a model's chat template makes of a conversation\n"
    "  make-model   write a model with random weights (Hugging Face folder + GGUF) for tests and benchmarks\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (kvshare::Status isa = kvshare::check_isa_env(); !isa.ok()) {
    std::fprintf(stderr, "kvshare: %s\n", kvshare::cli::printable(isa.message()).c_str());
    return 2;
  }
  std::vector<std::string> rest(argv + 2, argv + argc);
  using namespace kvshare::cli;
  if (command == "generate") return run_generate(rest);
  if (command == "serve") return run_serve(rest);
  if (command == "tokenize") return run_tokenize(rest);
  if (command == "chat-template") return run_chat_template(rest);
  if (command == "make-model") return run_make_model(rest);
  if (command == "bench") return run_bench(rest);
  std::fprintf(stderr, "kvshare: unknown command '%s'\n\n%s", printable(command).c_str(), kUsage);
  return 2;
}
