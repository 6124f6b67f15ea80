// A C++ user of kvshare: many questions over one long shared instruction, run as one offline batch.
//   build/examples/shared_prefix MODEL
#include <cstdio>
#include <string>
#include <vector>

#include "kvshare/engine.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL (a Hugging Face folder or a .gguf file)\n", argv[0]);
    return 2;
  }
  kvshare::EngineConfig config;
  config.model_path = argv[1];
  config.kv_cache_bytes = int64_t{512} << 20;
  auto engine = kvshare::Engine::create(config);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().to_string().c_str());
    return 1;
  }
  const std::string instruction =
      "You answer questions about a small bookshop in one sentence. It opens at nine and closes at six, "
      "every day but Sunday, and sells new and second-hand books, maps and postcards.\n";
  std::vector<kvshare::Request> requests;
  for (const char* q : {"When does it open?", "Is it open on Sunday?", "Does it sell maps?"}) {
    kvshare::Request r;
    r.prompt = instruction + "Question: " + q + "\nAnswer:";
    r.params.temperature = 0;
    r.params.max_tokens = 24;
    requests.push_back(r);
  }
  for (const kvshare::Output& out : (*engine)->generate(requests)) {
    if (out.finish_reason == kvshare::FinishReason::kError) {
      std::fprintf(stderr, "request %ld failed: %s\n", static_cast<long>(out.request_id), out.error.message().c_str());
      continue;
    }
    std::printf("[%ld of %zu prompt tokens from the cache]%s\n", static_cast<long>(out.num_cached_tokens),
                out.prompt_token_ids.size(), out.text.c_str());
  }
  const kvshare::EngineMetrics m = (*engine)->metrics();
  std::printf("prefix cache: %ld of %ld prompt tokens hit\n", static_cast<long>(m.prefix_hit_tokens),
              static_cast<long>(m.prefix_queried_tokens));
  return 0;
}
