// The same bits on every CPU: the logits of real and generated models, under every kernel path this CPU
// has, hash to checksums committed in tests/goldens/logits_checksums.json. A machine of another kind (AVX-512
// or AVX2-only) must reproduce them bit for bit. To record the checksums of a new case, run this test with
// KVSHARE_WRITE_CHECKSUMS=1 (it rewrites the file from what this machine computes).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/hash.h"
#include "core/mapped_file.h"
#include "isa_paths.h"
#include "kvshare/engine.h"
#include "make_model/make_model.h"
#include "test_util.h"

namespace kvshare {
namespace {

using nlohmann::json;

std::string checksums_path() { return testing::source_dir() + "/tests/goldens/logits_checksums.json"; }

// Generated tokens and the logits they came from: greedy, EOS ignored, prompts that share a prefix run in
// one batch with the prefix cache on, so reuse is part of what must not change a bit.
struct Generation {
  std::vector<std::vector<int32_t>> tokens;
  std::string checksum;  // FNV-1a of every request's logits, in request order, as 16 hex digits
  size_t floats = 0;
};

Generation run(const std::string& model, const std::vector<std::vector<int32_t>>& prompts, int steps) {
  EngineConfig config;
  config.model_path = model;
  config.kv_cache_bytes = int64_t{64} << 20;
  auto engine = Engine::create(config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  Generation r;
  if (!engine.ok()) return r;
  std::vector<Request> requests;
  for (const auto& p : prompts) {
    Request q;
    q.prompt_token_ids = p;
    q.params.temperature = 0;
    q.params.max_tokens = steps;
    q.params.ignore_eos = true;
    q.keep_logits = true;
    requests.push_back(q);
  }
  uint64_t h = fnv1a64(nullptr, 0);
  for (const Output& o : (*engine)->generate(requests)) {
    EXPECT_NE(o.finish_reason, FinishReason::kError) << o.error.to_string();
    r.tokens.push_back(o.token_ids);
    h = fnv1a64(o.logits.data(), o.logits.size() * sizeof(float), h);
    r.floats += o.logits.size();
  }
  std::ostringstream hex;
  hex << std::hex << std::setw(16) << std::setfill('0') << h;
  r.checksum = hex.str();
  return r;
}

// Prompts from a base prompt: itself, and two that share its first half and then differ.
std::vector<std::vector<int32_t>> prompts_from(std::vector<int32_t> base) {
  std::vector<std::vector<int32_t>> out = {base};
  for (int32_t change : {1, 2}) {
    std::vector<int32_t> p(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(base.size() / 2 + 1));
    for (size_t i = p.size(); i < base.size(); ++i) p.push_back(base[(i * 7 + change) % base.size()]);
    out.push_back(p);
  }
  return out;
}

struct Case {
  std::string name, model;
  std::vector<std::vector<int32_t>> prompts;
};

class LogitsChecksums : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    if (std::getenv("KVSHARE_WRITE_CHECKSUMS") == nullptr || found_.empty()) return;
    json j = json::object();
    if (file_exists(checksums_path())) j = json::parse(std::ifstream(checksums_path()));
    for (const auto& [k, v] : found_) j[k] = v;
    std::ofstream(checksums_path()) << j.dump(2) << "\n";
    std::fprintf(stderr, "wrote %zu checksums to %s\n", found_.size(), checksums_path().c_str());
  }

  void check(const Case& c) {
    json want = json::object();
    if (file_exists(checksums_path())) want = json::parse(std::ifstream(checksums_path()));
    Generation first;
    Isa first_isa = Isa::kScalar;
    for (Isa isa : testing::supported_isas()) {
      testing::IsaScope scope(isa);
      const Generation r = run(c.model, c.prompts, 12);
      ASSERT_GT(r.floats, 0u);
      if (first.floats == 0) {
        first = r;
        first_isa = isa;
        continue;
      }
      EXPECT_EQ(r.tokens, first.tokens) << c.name << ": " << isa_name(isa) << " vs " << isa_name(first_isa);
      EXPECT_EQ(r.checksum, first.checksum) << c.name << ": logits differ between the " << isa_name(isa) << " and "
                                            << isa_name(first_isa) << " paths";
    }
    found_[c.name] = first.checksum;
    if (std::getenv("KVSHARE_WRITE_CHECKSUMS") != nullptr) return;
    ASSERT_TRUE(want.contains(c.name)) << "no committed checksum for " << c.name << " (this machine computes "
                                       << first.checksum << "; KVSHARE_WRITE_CHECKSUMS=1 records it)";
    EXPECT_EQ(first.checksum, want[c.name].get<std::string>())
        << c.name << ": this machine's logits differ from the committed checksum";
  }

  static inline std::map<std::string, std::string> found_;
};

TEST_F(LogitsChecksums, Stories260K) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  // "Once upon a time" with BOS, as in the model's golden continuation.
  check({"stories260K", testing::shared_dir() + "/models/stories260K/stories260K.gguf",
         prompts_from({1, 403, 407, 261, 378, 165, 261, 2, 59, 500, 77, 300})});
}

TEST_F(LogitsChecksums, TinyStories656K) {
  KV_REQUIRE_SHARED("models/tinystories-656k/model.safetensors");
  check({"tinystories-656k", testing::shared_dir() + "/models/tinystories-656k",
         prompts_from({1, 401, 1043, 1120, 300, 277, 10, 500, 33, 1999, 42, 7})});
}

TEST_F(LogitsChecksums, GeneratedModels) {
  KV_REQUIRE_GPT2_TOKENIZER();
  struct Gen {
    const char *arch, *shape, *dtype;
  };
  for (const Gen& g : {Gen{"gpt2", "tiny", "f32"}, Gen{"gpt2", "tiny", "bf16"}, Gen{"llama", "tiny", "f32"},
                       Gen{"llama", "tiny", "f16"}, Gen{"qwen2", "tiny", "f32"}, Gen{"llama", "tiny-llama3", "f32"}}) {
    const std::string name = std::string(g.arch) + "-" + g.shape + "-" + g.dtype;
    SCOPED_TRACE(name);
    MakeModelOptions o;
    o.arch = g.arch;
    o.shape = g.shape;
    o.dtype = g.dtype;
    o.seed = 7;
    o.tokenizer_dir = testing::gpt2_tokenizer_dir();
    o.out_dir = testing::temp_dir("checksum-" + name);
    ASSERT_TRUE(make_model(o).ok());
    const json golden = json::parse(std::ifstream(testing::source_dir() + "/tests/goldens/" + name + ".json"));
    const auto prompts = prompts_from(golden["prompt_token_ids"].get<std::vector<int32_t>>());
    check({name, o.out_dir, prompts});
    check({name + ".gguf", o.out_dir + "/model.gguf", prompts});
  }
}

}  // namespace
}  // namespace kvshare
