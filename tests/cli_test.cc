// The kvshare binary end to end, run as a user runs it: each test spawns the real executable, captures its
// stdout, stderr and exit status, and checks what a user would see. The tiny models are made with
// `kvshare make-model`, so that command is tested too. Bad input must fail with a message naming the
// problem and a non-zero exit code, never with a crash (a signal).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/mapped_file.h"
#include "kvshare/tokenizer.h"
#include "sampling/sampler.h"
#include "test_util.h"

extern char** environ;

namespace kvshare {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int32_t kGpt2Bos = 50256;

// This process's scratch folder (ctest runs each test in its own process); removed at the end when every
// test passed, kept for a look otherwise.
const std::string& scratch() {
  static const std::string dir = testing::temp_dir("cli");
  return dir;
}

class RemoveScratchWhenAllPassed : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->Passed()) std::filesystem::remove_all(scratch());
  }
};
const auto* const kRemoveScratch = ::testing::AddGlobalTestEnvironment(new RemoveScratchWhenAllPassed);

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

struct CliRun {
  int exit_code = -1;  // the exit status when the process exited
  int signal = 0;      // the signal that killed it, 0 when it exited
  std::string out, err;
  std::string command;
};

std::ostream& operator<<(std::ostream& os, const CliRun& r) {
  os << "\n$ " << r.command << "\n";
  if (r.signal != 0)
    os << "killed by signal " << r.signal;
  else
    os << "exit code " << r.exit_code;
  return os << "\n--- stdout:\n" << r.out.substr(0, 3000) << "\n--- stderr:\n" << r.err.substr(0, 3000) << "\n";
}

// Runs `kvshare ARGS...` with stdin from /dev/null and waits for it.
CliRun kvshare(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string base = scratch() + "/run" + std::to_string(++counter);
  const std::string out_path = base + ".out", err_path = base + ".err";
  CliRun r;
  r.command = "kvshare";
  for (const std::string& a : args) r.command += " " + (a.size() > 80 ? a.substr(0, 80) + "..." : a);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const std::string bin = testing::kvshare_binary();
  std::vector<std::string> argv_s = {bin};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << bin << ": " << std::strerror(rc);
    return r;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A failure as a user should see it: a non-zero exit (not a signal), and stderr naming the problem.
void expect_clean_failure(const CliRun& r, const std::vector<std::string>& in_stderr) {
  EXPECT_EQ(r.signal, 0) << "crashed" << r;
  EXPECT_NE(r.exit_code, 0) << "should have failed" << r;
  EXPECT_FALSE(contains(r.err, "terminate called")) << r;
  EXPECT_TRUE(contains(r.err, "kvshare")) << "messages start with the program name" << r;
  for (const std::string& s : in_stderr) EXPECT_TRUE(contains(r.err, s)) << "stderr should mention '" << s << "'" << r;
}

void expect_success(const CliRun& r) {
  EXPECT_EQ(r.signal, 0) << "crashed" << r;
  EXPECT_EQ(r.exit_code, 0) << r;
}

// A tiny model of `arch` made by `kvshare make-model`, once per process; "" when that failed.
const std::string& tiny_model(const std::string& arch) {
  static std::map<std::string, std::string> made;
  auto it = made.find(arch);
  if (it != made.end()) return it->second;
  const std::string dir = scratch() + "/tiny-" + arch;
  const CliRun r = kvshare({"make-model", "--arch", arch, "--shape", "tiny", "--tokenizer", testing::gpt2_tokenizer_dir(),
                         "--out", dir, "--seed", "5"});
  expect_success(r);
  EXPECT_TRUE(contains(r.out, "wrote")) << r;
  for (const char* f : {"config.json", "model.safetensors", "model.gguf"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << "make-model did not write " << f << r;
  const bool ok = r.exit_code == 0 && fs::exists(dir + "/model.gguf");
  return made[arch] = ok ? dir : "";
}

// A copy of the tiny llama Hugging Face folder (without its .gguf) to break.
std::string copy_of_tiny(const std::string& name) {
  const std::string dst = scratch() + "/" + name;
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(tiny_model("llama")))
    if (e.path().extension() != ".gguf") fs::copy_file(e.path(), dst + "/" + e.path().filename().string());
  return dst;
}

void truncate_to_half(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

std::string words(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "word ";
  return s;
}

json parse_json(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not valid JSON:\n" << text;
  return j;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(parse_json(line));
  return lines;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KV_REQUIRE_GPT2_TOKENIZER();
    model_ = tiny_model("llama");
    ASSERT_FALSE(model_.empty()) << "kvshare make-model failed";
  }
  std::string model_;
};

// ---- usage ------------------------------------------------------------------------------------------

TEST(CliUsage, NoArgumentsPrintsUsageAndFailsHelpSucceeds) {
  const CliRun none = kvshare({});
  expect_clean_failure(none, {"usage: kvshare COMMAND"});
  EXPECT_EQ(none.exit_code, 2) << none;
  const CliRun help = kvshare({"--help"});
  expect_success(help);
  EXPECT_TRUE(contains(help.out, "generate")) << help;
  for (const char* cmd : {"generate", "tokenize", "chat-template", "make-model", "bench"}) {
    const CliRun r = kvshare({cmd, "--help"});
    expect_success(r);
    EXPECT_TRUE(contains(r.out, std::string("usage: kvshare ") + cmd)) << r;
  }
}

// ---- 1. one prompt ----------------------------------------------------------------------------------

class CliGenerate : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    KV_REQUIRE_GPT2_TOKENIZER();
    model_ = tiny_model(GetParam());
    ASSERT_FALSE(model_.empty()) << "kvshare make-model failed";
  }
  std::string model_;
};

TEST_P(CliGenerate, GreedyJsonIsTheSameFromGgufAndMatchesTokenize) {
  const std::string prompt = "The quick brown fox jumps over";
  const std::vector<std::string> flags = {"--prompt", prompt, "--json", "--temperature", "0", "--max-tokens", "5",
                                          "--ignore-eos"};
  std::vector<std::string> hf = {"generate", "--model", model_};
  hf.insert(hf.end(), flags.begin(), flags.end());
  const CliRun a = kvshare(hf);
  expect_success(a);
  const json j = parse_json(a.out);
  ASSERT_TRUE(j.is_object()) << a;
  ASSERT_TRUE(j.contains("text") && j["text"].is_string()) << a;
  ASSERT_TRUE(j.contains("token_ids") && j["token_ids"].is_array()) << a;
  ASSERT_TRUE(j.contains("prompt_token_ids") && j["prompt_token_ids"].is_array()) << a;
  EXPECT_EQ(j["token_ids"].size(), 5u) << a;
  EXPECT_FALSE(j["prompt_token_ids"].empty()) << a;
  EXPECT_EQ(j.value("finish_reason", ""), "length") << a;

  std::vector<std::string> gguf = {"generate", "--model", model_ + "/model.gguf"};
  gguf.insert(gguf.end(), flags.begin(), flags.end());
  const CliRun b = kvshare(gguf);
  expect_success(b);
  const json jb = parse_json(b.out);
  EXPECT_EQ(jb["token_ids"], j["token_ids"]) << "HF folder and GGUF disagree" << a << b;
  EXPECT_EQ(jb["prompt_token_ids"], j["prompt_token_ids"]) << a << b;
  EXPECT_EQ(jb["text"], j["text"]) << a << b;

  const CliRun t = kvshare({"tokenize", "--model", model_, prompt});
  expect_success(t);
  EXPECT_EQ(parse_json(t.out), j["prompt_token_ids"]) << t << a;
  const CliRun tg = kvshare({"tokenize", "--model", model_ + "/model.gguf", prompt});
  expect_success(tg);
  EXPECT_EQ(parse_json(tg.out), j["prompt_token_ids"]) << tg;

  // Without --json the text alone is printed.
  std::vector<std::string> plain = {"generate", "--model", model_, "--prompt", prompt, "--temperature", "0",
                                    "--max-tokens", "5", "--ignore-eos"};
  const CliRun p = kvshare(plain);
  expect_success(p);
  EXPECT_EQ(p.out, j["text"].get<std::string>() + "\n") << p;
}

TEST_P(CliGenerate, EmptyPromptStartsFromBosAlone) {
  const CliRun r = kvshare({"generate", "--model", model_, "--prompt", "", "--json", "--temperature", "0",
                         "--max-tokens", "4", "--ignore-eos"});
  expect_success(r);
  const json j = parse_json(r.out);
  EXPECT_EQ(j["prompt_token_ids"], json::array({kGpt2Bos})) << r;
  EXPECT_EQ(j["token_ids"].size(), 4u) << r;
}

INSTANTIATE_TEST_SUITE_P(Arch, CliGenerate, ::testing::Values("llama", "gpt2"));

// ---- 2. batch jobs ----------------------------------------------------------------------------------

TEST_F(CliTest, BatchJobAnswersEveryLineInOrderAndReportsBadLines) {
  std::string system;
  for (int i = 0; i < 10; ++i) system += "You are a helpful assistant. ";
  auto line = [](const json& j) { return j.dump() + "\n"; };
  std::string in;
  in += line({{"prompt", system + "What is one?"}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}});
  in += line({{"prompt_token_ids", {15496, 995, 11, 703}}, {"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true}});
  in += "{\"prompt\": \"malformed\", \n";                              // line 3
  in += line({{"max_tokens", 3}});                                     // line 4: no prompt
  in += line({{"prompt", "bad top p"}, {"top_p", 0}});                 // line 5
  in += line({{"prompt", words(600)}, {"max_tokens", 2}});             // line 6: longer than the context
  in += line({{"prompt", system + "What is two?"}, {"max_tokens", 5}, {"temperature", 0.8}, {"seed", 7},
              {"cache_salt", "tenant-b"}, {"ignore_eos", true}});
  in += line({{"prompt", system + "What is three?"}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}});
  in += line({{"prompt", "Short one"}, {"max_tokens", 6}, {"temperature", 0}});  // may stop early at EOS
  const std::string in_path = scratch() + "/batch.jsonl";
  write_file(in_path, in);
  const std::vector<int> bad_lines = {3, 4, 5, 6};
  const std::vector<int> good_lines = {1, 2, 7, 8, 9};
  const std::map<int, size_t> max_tokens = {{1, 4}, {2, 3}, {7, 5}, {8, 4}, {9, 6}};

  auto check = [&](const CliRun& r, const std::vector<json>& outs, bool prefix_cache) {
    EXPECT_EQ(r.signal, 0) << r;
    EXPECT_EQ(r.exit_code, 1) << "bad lines make the job fail" << r;
    ASSERT_EQ(outs.size(), 9u) << r;
    for (size_t i = 0; i < outs.size(); ++i) {
      const json& o = outs[i];
      const int ln = static_cast<int>(i) + 1;
      SCOPED_TRACE("output line " + std::to_string(ln) + ": " + o.dump());
      EXPECT_EQ(o.value("index", -1), static_cast<int>(i));
      EXPECT_EQ(o.value("line", -1), ln);
      EXPECT_TRUE(o.contains("finish_reason"));
      if (std::find(bad_lines.begin(), bad_lines.end(), ln) != bad_lines.end()) {
        EXPECT_EQ(o.value("finish_reason", ""), "error");
        ASSERT_TRUE(o.contains("error") && o["error"].is_string());
        EXPECT_TRUE(contains(o["error"].get<std::string>(), "line " + std::to_string(ln)));
        EXPECT_FALSE(o.contains("token_ids"));
        EXPECT_TRUE(contains(r.err, "line " + std::to_string(ln) + ":")) << "stderr should name line " << ln << r;
      } else {
        EXPECT_FALSE(o.contains("error"));
        for (const char* key : {"text", "token_ids", "prompt_tokens", "cached_tokens"}) EXPECT_TRUE(o.contains(key)) << key;
        const size_t n = o["token_ids"].size();
        if (ln == 9) {
          EXPECT_GE(n, 1u);
          EXPECT_LE(n, max_tokens.at(ln));
        } else {
          EXPECT_EQ(n, max_tokens.at(ln)) << "per-line max_tokens with ignore_eos";
          EXPECT_EQ(o.value("finish_reason", ""), "length");
        }
        if (!prefix_cache) {
          EXPECT_EQ(o.value("cached_tokens", -1), 0);
        }
      }
    }
    // What each bad line's error says.
    EXPECT_TRUE(contains(outs[2].value("error", ""), "JSON"));
    EXPECT_TRUE(contains(outs[3].value("error", ""), "prompt"));
    EXPECT_TRUE(contains(outs[4].value("error", ""), "top_p"));
    EXPECT_TRUE(contains(outs[5].value("error", ""), "context"));
    EXPECT_EQ(outs[1].value("prompt_tokens", -1), 4);
    // The summary.
    EXPECT_TRUE(contains(r.err, "hit rate")) << r;
    EXPECT_TRUE(contains(r.err, "6 requests (3 bad lines, 1 failed)")) << r;
  };

  const std::string out_on = scratch() + "/batch-on.jsonl";
  const CliRun on = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_on});
  const std::vector<json> a = read_jsonl(out_on);
  {
    SCOPED_TRACE("prefix cache on");
    check(on, a, true);
  }
  ASSERT_EQ(a.size(), 9u);
  // Lines 1 and 8 share a 60-token system prompt: one of them finds it cached. Line 7 has its own salt.
  EXPECT_GT(a[0].value("cached_tokens", 0) + a[7].value("cached_tokens", 0), 0) << on;
  EXPECT_EQ(a[6].value("cached_tokens", -1), 0) << "a request with another cache_salt shares nothing" << on;
  EXPECT_FALSE(contains(on.err, "hit rate 0.0%")) << on;
  EXPECT_TRUE(contains(on.err, "progress: 6/6 requests")) << "progress lines when stderr is not a terminal" << on;

  const std::string out_off = scratch() + "/batch-off.jsonl";
  const CliRun off = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_off, "--no-prefix-cache",
                           "--no-progress", "--kv-cache-memory", "64MiB"});
  const std::vector<json> b = read_jsonl(out_off);
  {
    SCOPED_TRACE("prefix cache off");
    check(off, b, false);
  }
  ASSERT_EQ(b.size(), 9u);
  EXPECT_TRUE(contains(off.err, "hit rate 0.0%")) << off;
  EXPECT_FALSE(contains(off.err, "progress:")) << "--no-progress" << off;
  for (int ln : good_lines)
    EXPECT_EQ(a[ln - 1]["token_ids"], b[ln - 1]["token_ids"]) << "line " << ln << " differs with the prefix cache off";
}

// The sampling fields of a request line: n completions as adjacent lines, stop strings, logprobs, and each bad
// value refused with the field's name.
TEST_F(CliTest, BatchLinesTakeEverySamplingField) {
  auto line = [](const json& j) { return j.dump() + "\n"; };
  std::string in;
  in += line({{"prompt", "Once upon a time"}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true}});
  in += line({{"prompt", "Once upon a time"}, {"max_tokens", 5}, {"temperature", 0.9}, {"seed", 4}, {"n", 3},
              {"ignore_eos", true}, {"min_p", 0.05}, {"presence_penalty", 0.5}, {"frequency_penalty", 0.5},
              {"repetition_penalty", 1.2}, {"logprobs", 2}, {"min_tokens", 2}, {"prompt_logprobs", 1}});
  in += line({{"prompt", "Once upon a time"}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true},
              {"logit_bias", {{"1000", 100}}}});
  in += line({{"prompt", "x"}, {"n", 0}});
  in += line({{"prompt", "x"}, {"logprobs", 21}});
  in += line({{"prompt", "x"}, {"logit_bias", {{"abc", 1}}}});
  in += line({{"prompt", "x"}, {"stop", 5}});
  in += line({{"prompt", "x"}, {"min_p", 2}});
  in += line({{"prompt", "x"}, {"presence_penalty", "high"}});
  in += line({{"prompt", "x"}, {"prompt_logprobs", -1}});
  const std::string in_path = scratch() + "/fields.jsonl", out_path = scratch() + "/fields-out.jsonl";
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path,
                            "--kv-cache-memory", "64MiB"});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << "bad lines make the job fail" << r;
  // The progress lines count completions when a line asks for several: 1 + 3 + 1 of the three good lines.
  EXPECT_TRUE(contains(r.err, "progress: 5/5 completions")) << r;
  EXPECT_FALSE(contains(r.err, "/3 requests")) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 1u + 3u + 1u + 7u) << r;
  // Line 1 greedy, then a stop string cut from its text: the same run, cut before it.
  const std::string text = outs[0].value("text", "");
  ASSERT_GE(text.size(), 4u);
  for (int c = 0; c < 3; ++c) {
    const json& o = outs[1 + c];
    SCOPED_TRACE(o.dump());
    EXPECT_EQ(o.value("line", 0), 2);
    EXPECT_EQ(o.value("completion", -1), c);
    EXPECT_EQ(o["token_ids"].size(), 5u);
    ASSERT_TRUE(o.contains("logprobs"));
    ASSERT_EQ(o["logprobs"].size(), 5u);
    for (size_t t = 0; t < 5; ++t) {
      EXPECT_EQ(o["logprobs"][t]["token_id"], o["token_ids"][t]);
      EXPECT_LE(o["logprobs"][t]["logprob"].get<double>(), 0.0);
      EXPECT_EQ(o["logprobs"][t]["top_logprobs"].size(), 2u);
    }
  }
  EXPECT_NE(outs[1]["token_ids"], outs[2]["token_ids"]) << "each completion draws its own tokens";
  // The request's prompt logprobs come with completion 0: null for the first prompt token, then each token's.
  ASSERT_TRUE(outs[1].contains("prompt_logprobs")) << outs[1].dump();
  const json& plp = outs[1]["prompt_logprobs"];
  ASSERT_EQ(plp.size(), outs[1]["prompt_tokens"].get<size_t>());
  EXPECT_TRUE(plp[0].is_null());
  for (size_t t = 1; t < plp.size(); ++t) {
    EXPECT_LE(plp[t]["logprob"].get<double>(), 0.0);
    EXPECT_EQ(plp[t]["top_logprobs"].size(), 1u);
  }
  EXPECT_FALSE(outs[2].contains("prompt_logprobs"));
  EXPECT_EQ(outs[4]["token_ids"], json(std::vector<int>(6, 1000))) << "a +100 bias makes token 1000 certain";
  const std::vector<std::string> want = {"n (completions", "logprobs", "logit_bias", "stop", "min_p", "presence_penalty",
                                         "prompt_logprobs"};
  for (size_t i = 0; i < want.size(); ++i) {
    const json& o = outs[5 + i];
    SCOPED_TRACE(o.dump());
    EXPECT_EQ(o.value("finish_reason", ""), "error");
    EXPECT_TRUE(contains(o.value("error", ""), want[i]));
  }

  // A stop string from line 1's text ends the same request there.
  std::string stop;
  for (size_t i = text.size() / 2; i + 1 < text.size() && stop.empty(); ++i)
    if (std::isalnum(static_cast<unsigned char>(text[i])) && std::isalnum(static_cast<unsigned char>(text[i + 1])))
      stop = text.substr(i, 2);
  if (stop.empty()) GTEST_SKIP() << "no two plain characters to stop at in " << text;
  const size_t cut = text.find(stop);
  write_file(in_path, line({{"prompt", "Once upon a time"}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true},
                            {"stop", stop}}));
  const CliRun s = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--kv-cache-memory", "64MiB"});
  expect_success(s);
  const std::vector<json> stopped = read_jsonl(out_path);
  ASSERT_EQ(stopped.size(), 1u) << s;
  EXPECT_EQ(stopped[0].value("text", "?"), text.substr(0, cut)) << "stop '" << stop << "' in '" << text << "'";
  EXPECT_EQ(stopped[0].value("finish_reason", ""), "stop");
  EXPECT_EQ(stopped[0].value("stop_reason", ""), stop);
}

// The sampling flags of one --prompt: --stop cuts the text (stop_reason in --json), bad values fail clearly.
TEST_F(CliTest, SamplingFlagsForOnePrompt) {
  const std::vector<std::string> base = {"generate", "--model", model_, "--prompt", "Once upon a time", "--json",
                                         "--temperature", "0", "--max-tokens", "8", "--ignore-eos"};
  const CliRun plain = kvshare(base);
  expect_success(plain);
  const json full = json::parse(plain.out);
  const std::string text = full.value("text", "");
  std::string stop;
  for (size_t i = text.size() / 2; i + 1 < text.size() && stop.empty(); ++i)
    if (std::isalnum(static_cast<unsigned char>(text[i])) && std::isalnum(static_cast<unsigned char>(text[i + 1])))
      stop = text.substr(i, 2);
  if (!stop.empty()) {
    std::vector<std::string> with_stop = base;
    with_stop.insert(with_stop.end(), {"--stop", stop, "--repetition-penalty", "1", "--min-p", "0.5"});
    const CliRun r = kvshare(with_stop);
    expect_success(r);
    const json j = json::parse(r.out);
    EXPECT_EQ(j.value("text", "?"), text.substr(0, text.find(stop))) << "stop '" << stop << "' in '" << text << "'";
    EXPECT_EQ(j.value("finish_reason", ""), "stop");
    EXPECT_EQ(j.value("stop_reason", ""), stop);
    // --stop again adds a stop string: the first to appear ends the text (given first here: not only the last
    // value counts).
    std::vector<std::string> two = base;
    two.insert(two.end(), {"--stop", stop, "--stop", "no such words"});
    const CliRun r2 = kvshare(two);
    expect_success(r2);
    EXPECT_EQ(json::parse(r2.out).value("stop_reason", ""), stop) << r2;
  }
  // --choice, given once for each: the text is one of them.
  std::vector<std::string> labelled = base;
  labelled.insert(labelled.end(), {"--choice", "yes", "--choice", "no, never"});
  const CliRun c = kvshare(labelled);
  expect_success(c);
  const std::string said = json::parse(c.out).value("text", "?");
  EXPECT_TRUE(said == "yes" || said == "no, never") << c;
  for (const auto& [flag, value, message] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--min-p", "2", "min_p"}, {"--presence-penalty", "9", "presence_penalty"},
           {"--repetition-penalty", "0", "repetition_penalty"}, {"--min-tokens", "9", "--min-tokens"},
           {"--stop", "", "--stop"}, {"--choice", "", "choice[0] is empty"}}) {
    std::vector<std::string> bad = base;
    bad.insert(bad.end(), {flag, value});
    expect_clean_failure(kvshare(bad), {message});
  }
}

// Numbers in a line are taken as they are or refused: never wrapped or cut to fit.
TEST_F(CliTest, BatchLineNumbersOutOfRangeAreRefusedNotWrapped) {
  std::string in;
  in += "{\"prompt_token_ids\": [4294967301, 6], \"max_tokens\": 2, \"temperature\": 0}\n";  // 2^32 + 5
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 4294967297, \"temperature\": 0}\n";  // 2^32 + 1
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 1e10, \"temperature\": 0}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2.7, \"temperature\": 0}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"seed\": -1}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"stop_token_ids\": 5}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"stop_token_ids\": [\"abc\"]}\n";
  in += "{\"prompt_token_ids\": [5, 60000], \"max_tokens\": 2}\n";  // outside the vocabulary
  // Accepted before, each changing what ran: a field misspelt (generated 16 tokens), both prompts (the text
  // ignored), a stop token outside the vocabulary, numbers a float cannot hold (became inf and 0).
  in += "{\"prompt_token_ids\": [5, 6], \"max_token\": 2}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"prompt\": \"hi\", \"max_tokens\": 2}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"stop_token_ids\": [999999]}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"temperature\": 1e308}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"top_p\": 1e-300}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"n\": -1}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"allowed_token_ids\": []}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"skip_special_tokens\": \"no\"}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"truncate_prompt_tokens\": 0}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"bad_words\": \"darn\"}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2, \"bad_words\": [\"\"]}\n";
  in += "{\"prompt_token_ids\": [5, 6], \"max_tokens\": 2.0, \"temperature\": 0, \"ignore_eos\": true, "
        "\"allowed_token_ids\": null}\n";  // fine (null: every token, as vLLM's None)
  const std::string in_path = scratch() + "/numbers.jsonl", out_path = scratch() + "/numbers-out.jsonl";
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                         "--kv-cache-memory", "64MiB"});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 20u) << r;
  const std::vector<std::string> want = {"token id", "max_tokens", "max_tokens", "max_tokens", "seed",
                                         "stop_token_ids", "stop token id", "vocabulary",
                                         "unknown field \"max_token\"",
                                         "holds one of \"prompt\", \"prompt_token_ids\" and \"messages\"",
                                         "stop_token_ids: token id 999999 is outside the vocabulary",
                                         "\"temperature\" is 1e+308, which a 32-bit float cannot hold",
                                         "\"top_p\" is 1e-300, which a 32-bit float cannot hold",
                                         "n (completions per prompt) must be in [1, 128], got -1",
                                         "allowed_token_ids must not be empty",
                                         "\"skip_special_tokens\" must be true or false",
                                         "truncate_prompt_tokens must be -1 (the context) or at least 1",
                                         "\"bad_words\" must be an array of strings",
                                         "bad_words[0] is empty or only whitespace"};
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("line " + std::to_string(i + 1) + ": " + outs[i].dump());
    EXPECT_EQ(outs[i].value("finish_reason", ""), "error");
    EXPECT_TRUE(contains(outs[i].value("error", ""), want[i]));
    EXPECT_TRUE(contains(r.err, "line " + std::to_string(i + 1) + ":")) << r;
    EXPECT_FALSE(contains(outs[i].value("error", ""), "json.exception")) << "a library message, not ours";
  }
  EXPECT_EQ(outs[19].value("finish_reason", ""), "length") << outs[19].dump();
  EXPECT_EQ(outs[19]["token_ids"].size(), 2u) << outs[19].dump();
}

// A batch line's choices (vLLM's guided_choice or structured_outputs.choice): each completion's text is one of them;
// bad choices fail their own line.
TEST_F(CliTest, BatchLinesTakeChoices) {
  const std::vector<std::string> labels = {"positive", "negative", "neutral"};
  std::string in;
  in += json{{"prompt", "Review: great. Sentiment:"}, {"guided_choice", labels}, {"n", 4}, {"seed", 1}}.dump() + "\n";
  in += json{{"prompt", "Review: awful. Sentiment:"}, {"structured_outputs", {{"choice", labels}}}, {"temperature", 0}}
            .dump() + "\n";
  in += "{\"prompt\": \"x\", \"guided_choice\": \"yes\"}\n";
  in += "{\"prompt\": \"x\", \"guided_choice\": [\"a\"], \"structured_outputs\": {\"choice\": [\"a\"]}}\n";
  in += "{\"prompt\": \"x\", \"structured_outputs\": {\"regex\": \"a+\"}}\n";
  in += "{\"prompt\": \"x\", \"guided_choice\": []}\n";
  const std::string in_path = scratch() + "/choices.jsonl", out_path = scratch() + "/choices-out.jsonl";
  // With --choice for every line, a line's "guided_choice": null asks for free text.
  write_file(scratch() + "/free.jsonl", "{\"prompt\": \"Once\", \"guided_choice\": null, \"ignore_eos\": true}\n"
                                        "{\"prompt\": \"Once\"}\n");
  const CliRun free = kvshare({"generate", "--model", model_, "--input", scratch() + "/free.jsonl", "--output",
                               scratch() + "/free-out.jsonl", "--no-progress", "--choice", "zq", "--max-tokens", "5"});
  expect_success(free);
  const std::vector<json> frees = read_jsonl(scratch() + "/free-out.jsonl");
  ASSERT_EQ(frees.size(), 2u) << free;
  EXPECT_EQ(frees[0].value("finish_reason", ""), "length") << frees[0].dump();
  EXPECT_EQ(frees[1].value("text", ""), "zq") << frees[1].dump();
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--kv-cache-memory", "64MiB", "--max-tokens", "16"});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 9u) << r;
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE(outs[i].dump());
    EXPECT_EQ(outs[i].value("finish_reason", ""), "stop");
    EXPECT_NE(std::find(labels.begin(), labels.end(), outs[i].value("text", "")), labels.end());
  }
  const std::vector<std::string> want = {"must be an array of strings", "give the choices once",
                                         "regex is not supported, only choice", "choice must hold at least one string"};
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(outs[5 + i].dump());
    EXPECT_EQ(outs[5 + i].value("finish_reason", ""), "error");
    EXPECT_TRUE(contains(outs[5 + i].value("error", ""), want[i]));
  }
}

// Chat lines: {"messages": [...]} rendered with the chat template (--chat-template here: the tiny model has none)
// and tokenized as a chat is (no BOS added), so a line answers as the prompt the template makes; conversations
// that share a system prompt share its blocks; a line the template refuses fails alone.
TEST_F(CliTest, BatchLinesTakeChatMessages) {
  const std::string chat_template = scratch() + "/chat.jinja";
  write_file(chat_template, "{% if boom %}{{ raise_exception('boom was asked for') }}{% endif %}"
                            "{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
                            "{% if add_generation_prompt %}<assistant>{% endif %}");
  std::string system;
  for (int i = 0; i < 10; ++i) system += "You are a helpful assistant. ";
  auto line = [](const json& j) { return j.dump() + "\n"; };
  auto chat = [&](const std::string& question) {
    return json::array({{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", question}}});
  };
  std::string in;
  in += line({{"messages", chat("What is one?")}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}});
  in += line({{"messages", chat("What is two?")}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}});
  // the same prompt as line 2's, written out (GPT-2's tokenizer adds no BOS to text either)
  in += line({{"prompt", "<system> " + system + "\n<user> What is two?\n<assistant>"}, {"max_tokens", 4},
              {"temperature", 0}, {"ignore_eos", true}});
  const json parts = json::array({{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}});
  in += line({{"messages", json::array({{{"role", "user"}, {"content", parts}}})}, {"add_generation_prompt", false},
              {"max_tokens", 2}});
  in += line({{"messages", chat("x")}, {"chat_template_kwargs", {{"boom", true}}}});  // line 5
  in += line({{"messages", json::array({{{"content", "no role"}}})}});                   // line 6
  in += line({{"prompt", "x"}, {"add_generation_prompt", false}});                     // line 7
  in += line({{"prompt", "x"}, {"messages", chat("x")}});                              // line 8
  const std::string in_path = scratch() + "/chat.jsonl", out_path = scratch() + "/chat-out.jsonl";
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--chat-template", chat_template});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 8u) << r;
  for (size_t i = 0; i < 4; ++i) EXPECT_FALSE(outs[i].contains("error")) << outs[i].dump();
  EXPECT_EQ(outs[1].value("text", "?"), outs[2].value("text", "!"));
  EXPECT_EQ(outs[1]["prompt_tokens"], outs[2]["prompt_tokens"]);
  EXPECT_GE(outs[1].value("cached_tokens", 0), 48) << "the system prompt's blocks are shared";
  const std::vector<std::string> want = {"boom was asked for", "messages[0].role must be a string",
                                         "\"add_generation_prompt\" belongs to a chat line", "one of \"prompt\""};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(outs[4 + i].value("finish_reason", ""), "error") << outs[4 + i].dump();
    EXPECT_TRUE(contains(outs[4 + i].value("error", ""), want[i])) << outs[4 + i].dump();
  }
  EXPECT_TRUE(contains(r.err, "line 5: template error")) << r;
  // Without --chat-template, a model that has none: each chat line says how to give one, the others run.
  const CliRun none = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path,
                               "--no-progress"});
  EXPECT_EQ(none.exit_code, 1) << none;
  const std::vector<json> plain = read_jsonl(out_path);
  ASSERT_EQ(plain.size(), 8u) << none;
  EXPECT_TRUE(contains(plain[0].value("error", ""), "give one with --chat-template FILE")) << plain[0].dump();
  EXPECT_EQ(plain[2].value("text", "?"), outs[2].value("text", "!"));
  // A model whose own template does not parse: each chat line gives the template's error and where it is (it said
  // that the model had no template), the others run.
  const std::string broken = copy_of_tiny("broken-template");
  json tc = parse_json(read_file(broken + "/tokenizer_config.json"));
  tc["chat_template"] = "{% for m in messages %}{{ m.content }";
  write_file(broken + "/tokenizer_config.json", tc.dump());
  const CliRun bad = kvshare({"generate", "--model", broken, "--input", in_path, "--output", out_path,
                              "--no-progress"});
  EXPECT_EQ(bad.exit_code, 1) << bad;
  const std::vector<json> bad_outs = read_jsonl(out_path);
  ASSERT_EQ(bad_outs.size(), 8u) << bad;
  for (const char* part : {"tokenizer_config.json's chat_template", "template syntax error at line 1"})
    EXPECT_TRUE(contains(bad_outs[0].value("error", ""), part)) << part << " not in " << bad_outs[0].dump();
  EXPECT_FALSE(bad_outs[2].contains("error")) << bad_outs[2].dump();
  // An empty --chat-template file is refused: it would have left the model's template (or none) in use.
  write_file(scratch() + "/empty.jinja", "");
  expect_clean_failure(kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path,
                                "--chat-template", scratch() + "/empty.jinja"}),
                       {"--chat-template", "empty.jinja is empty"});
}

// A chat line's tool call, its arguments JSON text as OpenAI's clients write them, reaches the template as the
// object, as vLLM's chat passes it: tojson writes the call as the model wrote it, not as a quoted string.
TEST_F(CliTest, BatchChatLinesPassToolCallArgumentsAsObjects) {
  const std::string chat_template = scratch() + "/tools.jinja";
  write_file(chat_template, "{% for m in messages %}{% if m.tool_calls %}"
                            "{{ m.tool_calls[0].function.arguments | tojson }}{% else %}{{ m.content }}{% endif %}"
                            "{{ '|' }}{% endfor %}");
  const json call = {{"id", "c1"}, {"type", "function"},
                     {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"Oslo\"}"}}}};
  const json messages = json::array({{{"role", "user"}, {"content", "Hi"}},
                                     {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", {call}}},
                                     {{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "-3 C"}}});
  const json sampling = {{"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true}};
  json chat_line = sampling, prompt_line = sampling;
  chat_line["messages"] = messages;
  chat_line["add_generation_prompt"] = false;
  prompt_line["prompt"] = "Hi|{\"city\": \"Oslo\"}|-3 C|";
  const std::string in_path = scratch() + "/tools.jsonl", out_path = scratch() + "/tools-out.jsonl";
  write_file(in_path, chat_line.dump() + "\n" + prompt_line.dump() + "\n");
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--chat-template", chat_template});
  EXPECT_EQ(r.exit_code, 0) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 2u) << r;
  EXPECT_EQ(outs[0]["prompt_tokens"], outs[1]["prompt_tokens"]);
  EXPECT_EQ(outs[0].value("text", "?"), outs[1].value("text", "!"));
}

// JSON mode in a batch job: response_format {"type": "json_object"} or structured_outputs.json_object on a line,
// --json-object for every line (a line's {"type": "text"} asks for free text); bad requests fail their own line.
TEST_F(CliTest, BatchLinesTakeJsonMode) {
  // A few tokens only ({ } " : 1), so that the random test model closes its objects.
  auto tok = Tokenizer::load(model_);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  json few = json::array();
  int32_t close_brace = -1;
  for (const std::string piece : {"{", "}", "\"", ":", "1"}) {
    for (int32_t id = 0; id < (*tok)->vocab_size(); ++id)
      if ((*tok)->token_piece(id) == piece) {
        few.push_back(id);
        if (piece == "}") close_brace = id;
        break;
      }
  }
  ASSERT_EQ(few.size(), 5u);
  std::string in;
  in += json{{"prompt", "As JSON:"}, {"response_format", {{"type", "json_object"}}}, {"allowed_token_ids", few},
             {"n", 4}, {"seed", 1}, {"logit_bias", {{std::to_string(close_brace), -2}}}}.dump() + "\n";
  in += json{{"prompt", "As JSON:"}, {"structured_outputs", {{"json_object", true}, {"disable_any_whitespace", true}}},
             {"temperature", 0}}.dump() + "\n";
  in += R"({"prompt": "As JSON:", "temperature": 0, "response_format": {"type": "json_schema", "json_schema": {)"
        R"("name": "x", "schema": {"type": "object", "properties": {"b": {"enum": [1, 22]}, "a": {"type": "boolean"}},)"
        R"( "required": ["b", "a"]}}}})" "\n";
  in += "{\"prompt\": \"x\", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {}}}\n";
  in += "{\"prompt\": \"x\", \"structured_outputs\": {\"json\": {\"type\": \"object\", \"minProperties\": 1}}}\n";
  in += "{\"prompt\": \"x\", \"response_format\": {\"type\": \"json_object\"}, \"guided_choice\": [\"a\"]}\n";
  in += "{\"prompt\": \"x\", \"structured_outputs\": {\"json_object\": 1}}\n";
  in += "{\"prompt\": \"x\", \"response_format\": {\"type\": \"json_object\"}, \"min_tokens\": 2}\n";
  const std::string in_path = scratch() + "/json.jsonl", out_path = scratch() + "/json-out.jsonl";
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--max-tokens", "48"});
  EXPECT_EQ(r.signal, 0) << r;
  EXPECT_EQ(r.exit_code, 1) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 11u) << r;
  int whole = 0;
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE(outs[i].dump());
    const std::string text = outs[i].value("text", "");
    ASSERT_TRUE(outs[i].contains("text"));
    if (outs[i].value("finish_reason", "") == "stop") {
      const json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
      EXPECT_TRUE(parsed.is_object());
      ++whole;
    } else {
      EXPECT_EQ(outs[i].value("finish_reason", ""), "length");
    }
    EXPECT_NE(text.find('{'), std::string::npos);
  }
  EXPECT_GE(whole, 2);
  // Compact: no whitespace outside strings.
  bool in_string = false, escaped = false;
  for (char c : outs[4].value("text", "")) {
    EXPECT_TRUE(in_string || (c != ' ' && c != '\n' && c != '\t' && c != '\r')) << outs[4].dump();
    if (in_string && !escaped && c == '"') in_string = false;
    else if (!in_string && c == '"') in_string = true;
    escaped = in_string && !escaped && c == '\\';
  }
  // The schema's keys in the order the line gives them ("b" first), with values it allows.
  const json follows = json::parse(outs[5].value("text", ""), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(follows.is_object()) << outs[5].dump();
  EXPECT_EQ(outs[5].value("finish_reason", ""), "stop");
  EXPECT_TRUE(outs[5].value("text", "").find("\"b\"") < outs[5].value("text", "").find("\"a\"")) << outs[5].dump();
  EXPECT_TRUE(follows["a"].is_boolean() && (follows["b"] == 1 || follows["b"] == 22)) << outs[5].dump();
  const std::vector<std::string> want = {"needs \"json_schema\": {\"name\"",
                                         "the keyword \"minProperties\" is not supported", "cannot both be given",
                                         "json_object must be true or false", "cannot be combined with json_object"};
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(outs[6 + i].dump());
    EXPECT_EQ(outs[6 + i].value("finish_reason", ""), "error");
    EXPECT_TRUE(contains(outs[6 + i].value("error", ""), want[i]));
  }
  // --json-object for every line; a line's {"type": "text"}, json_object false or own choices replace it.
  write_file(scratch() + "/mixed.jsonl", "{\"prompt\": \"x\"}\n"
                                         "{\"prompt\": \"x\", \"response_format\": {\"type\": \"text\"}}\n"
                                         "{\"prompt\": \"x\", \"guided_choice\": [\"zq\"]}\n"
                                         "{\"prompt\": \"x\", \"structured_outputs\": {\"json_object\": false}}\n");
  const CliRun mixed = kvshare({"generate", "--model", model_, "--input", scratch() + "/mixed.jsonl", "--output",
                                scratch() + "/mixed-out.jsonl", "--no-progress", "--json-object",
                                "--disable-any-whitespace", "--max-tokens", "6", "--temperature", "0"});
  expect_success(mixed);
  const std::vector<json> m = read_jsonl(scratch() + "/mixed-out.jsonl");
  ASSERT_EQ(m.size(), 4u) << mixed;
  EXPECT_TRUE(m[0].value("text", "").starts_with("{")) << m[0].dump();
  EXPECT_FALSE(m[1].value("text", "").starts_with("{")) << m[1].dump();
  EXPECT_EQ(m[2].value("text", ""), "zq") << m[2].dump();
  EXPECT_EQ(m[3].value("text", ""), m[1].value("text", "")) << m[3].dump();  // free text, greedy: the same
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "x", "--disable-any-whitespace"}),
                       {"--disable-any-whitespace applies to JSON: give --json-object or --json-schema too"});
  // --json-schema FILE for every line; a line's own constraint replaces it. A schema it cannot follow fails the job
  // at its first line with the keyword named; a missing file is named too.
  write_file(scratch() + "/schema.json", R"({"type": "array", "items": {"enum": ["yes", "no"]}, "minItems": 1,
                                           "maxItems": 2})");
  const CliRun with_schema = kvshare({"generate", "--model", model_, "--input", scratch() + "/mixed.jsonl",
                                      "--output", scratch() + "/schema-out.jsonl", "--no-progress", "--json-schema",
                                      scratch() + "/schema.json", "--max-tokens", "12", "--temperature", "0"});
  expect_success(with_schema);
  const std::vector<json> sm = read_jsonl(scratch() + "/schema-out.jsonl");
  ASSERT_EQ(sm.size(), 4u) << with_schema;
  const json list = json::parse(sm[0].value("text", ""), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(list.is_array() && !list.empty() && list.size() <= 2) << sm[0].dump();
  for (const json& v : list) EXPECT_TRUE(v == "yes" || v == "no") << sm[0].dump();
  EXPECT_EQ(sm[1].value("text", ""), sm[3].value("text", "")) << sm[1].dump();  // free text, greedy: the same
  EXPECT_EQ(sm[2].value("text", ""), "zq") << sm[2].dump();
  write_file(scratch() + "/bad-schema.json", R"({"type": "string", "format": "uri"})");
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "x", "--json-schema",
                                scratch() + "/bad-schema.json"}),
                       {"the format \"uri\" is not supported"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "x", "--json-schema",
                                scratch() + "/no-such-schema.json"}),
                       {"--json-schema: ", "no-such-schema.json"});
}

// A completion that fails alone fails its line: counted, reported on stderr, exit 1. Here a completion fails when
// its first token is A: allowed_token_ids {A, B} and the bad words "A A" and "A B" leave it nothing to draw next.
// Each completion draws its own first token, so some lines fail in completion 1 only (this was counted only when
// completion 0 failed: the job exited 0).
TEST_F(CliTest, ACompletionThatFailsAloneFailsItsLine) {
  auto tok = Tokenizer::load(model_);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  auto encode = [&](const std::string& text) { return (*tok)->encode(text, /*add_special=*/false); };
  auto bans = [&](const std::vector<int32_t>& pair) {  // the phrase of `pair` bans `pair` itself
    const auto words = bad_word_tokens({(*tok)->decode(pair)}, encode);
    return std::find(words.begin(), words.end(), pair) != words.end();
  };
  int32_t a = -1, b = -1;
  for (int32_t x = 40; x < 400 && a < 0; ++x)
    for (int32_t y = x + 1; y < x + 40 && a < 0; ++y)
      if (!(*tok)->is_special(x) && !(*tok)->is_special(y) && bans({x, x}) && bans({x, y})) a = x, b = y;
  ASSERT_GE(a, 0) << "no two tokens whose phrases tokenize back to them";
  const json words = {(*tok)->decode({a, a}), (*tok)->decode({a, b})};
  std::string in;
  for (int seed = 0; seed < 24; ++seed)
    in += json{{"prompt_token_ids", {5, 6}}, {"max_tokens", 2}, {"n", 2}, {"temperature", 1.0}, {"seed", seed},
               {"allowed_token_ids", {a, b}}, {"bad_words", words}}.dump() + "\n";
  const std::string in_path = scratch() + "/alone.jsonl", out_path = scratch() + "/alone-out.jsonl";
  write_file(in_path, in);
  const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", out_path, "--no-progress",
                            "--kv-cache-memory", "64MiB"});
  EXPECT_EQ(r.signal, 0) << r;
  const std::vector<json> outs = read_jsonl(out_path);
  ASSERT_EQ(outs.size(), 48u) << r;
  int failed_lines = 0, alone = 0;
  for (int line = 0; line < 24; ++line) {
    const json& c0 = outs[2 * line];
    const json& c1 = outs[2 * line + 1];
    const bool f0 = c0.contains("error"), f1 = c1.contains("error");
    for (const json& c : {c0, c1})
      if (c.contains("error")) {
        EXPECT_TRUE(contains(c["error"], "no token can be generated after 1 tokens")) << c;
      }
    if (f0 || f1) {
      ++failed_lines;
      EXPECT_TRUE(contains(r.err, "line " + std::to_string(line + 1) + (f0 ? " completion 0:" : " completion 1:")))
          << r;
    }
    alone += !f0 && f1;
  }
  EXPECT_GT(alone, 0) << "no line failed in completion 1 alone: the case is not exercised";
  EXPECT_EQ(r.exit_code, failed_lines > 0 ? 1 : 0) << r;
  EXPECT_TRUE(contains(r.err, "(0 bad lines, " + std::to_string(failed_lines) + " failed)")) << r;
}

TEST_F(CliTest, BatchInputAndOutputProblemsFailClearly) {
  const std::string in_path = scratch() + "/small.jsonl";
  write_file(in_path, "{\"prompt\": \"hello\", \"max_tokens\": 2}\n");
  expect_clean_failure(kvshare({"generate", "--model", model_, "--input", scratch() + "/missing.jsonl", "--output",
                                scratch() + "/x.jsonl"}),
                       {"cannot open the input file", "missing.jsonl"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--input", in_path}), {"--output"});
  // An unwritable output fails before any work is done, not after the whole job.
  const CliRun unwritable =
      kvshare({"generate", "--model", model_, "--input", in_path, "--output", scratch() + "/no/such/dir/out.jsonl"});
  expect_clean_failure(unwritable, {"cannot write the output file"});
  EXPECT_FALSE(contains(unwritable.err, "progress:")) << "the job ran before the output was checked" << unwritable;
  // A folder as input is an error, not an empty job.
  const CliRun folder =
      kvshare({"generate", "--model", model_, "--input", scratch(), "--output", scratch() + "/folder-out.jsonl"});
  expect_clean_failure(folder, {"--input", "is a folder"});
  EXPECT_FALSE(fs::exists(scratch() + "/folder-out.jsonl")) << folder;
  // An output that is the input (by the same path, another spelling of it, or a link to it) is refused before
  // anything is written: the requests are still there afterwards.
  const std::string requests = read_file(in_path);
  fs::remove(scratch() + "/link-to-small.jsonl");
  fs::create_symlink(in_path, scratch() + "/link-to-small.jsonl");
  for (const std::string& same : {in_path, scratch() + "/./small.jsonl", scratch() + "/link-to-small.jsonl"}) {
    const CliRun r = kvshare({"generate", "--model", model_, "--input", in_path, "--output", same});
    expect_clean_failure(r, {"--output", "is the input file"});
    EXPECT_FALSE(contains(r.err, "progress:")) << r;
    EXPECT_EQ(read_file(in_path), requests) << "the input was overwritten by --output " << same;
  }
  const CliRun dump_over_input = kvshare({"generate", "--model", model_, "--input", in_path, "--output",
                                          scratch() + "/o.jsonl", "--dump-logits", in_path});
  expect_clean_failure(dump_over_input, {"--dump-logits", "is the input file"});
  EXPECT_EQ(read_file(in_path), requests);
  expect_clean_failure(kvshare({"generate", "--model", model_, "--input", in_path, "--output", scratch() + "/o.jsonl",
                                "--dump-logits", scratch() + "/o.jsonl"}),
                       {"--dump-logits", "same file as --output"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--input", in_path, "--output", scratch()}),
                       {"--output", "is a folder"});
  // Nor may an output be any other file the run reads: a file of the model folder, the model file, the chat
  // template, the JSON schema. It was emptied before the model was loaded, and the error then blamed that file.
  const std::string m = copy_of_tiny("outputs-over-inputs");
  const std::string config = read_file(m + "/config.json"), weights = read_file(m + "/model.safetensors");
  write_file(scratch() + "/t.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}");
  write_file(scratch() + "/s.json", R"({"type": "object"})");
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> over = {
      {{"--input", in_path, "--output", m + "/config.json"}, {"--output", "is a file of the model folder"}},
      {{"--input", in_path, "--output", scratch() + "/o.jsonl", "--dump-logits", m + "/model.safetensors"},
       {"--dump-logits", "is a file of the model folder"}},
      {{"--input", in_path, "--output", scratch() + "/t.jinja", "--chat-template", scratch() + "/t.jinja"},
       {"--output", "is the --chat-template file"}},
      {{"--prompt", "hi", "--json-schema", scratch() + "/s.json", "--dump-logits", scratch() + "/s.json"},
       {"--dump-logits", "is the --json-schema file"}},
      {{"--prompt", "hi", "--dump-logits", tiny_model("llama") + "/model.gguf"}, {"--dump-logits", "model file"}},
  };
  for (const auto& [flags, want] : over) {
    std::vector<std::string> argv = {"generate", "--model", m, "--no-progress"};
    if (flags.back().ends_with(".gguf")) argv[2] = flags.back();
    argv.insert(argv.end(), flags.begin(), flags.end());
    expect_clean_failure(kvshare(argv), want);
  }
  EXPECT_EQ(read_file(m + "/config.json"), config);
  EXPECT_EQ(read_file(m + "/model.safetensors"), weights);
  EXPECT_EQ(read_file(scratch() + "/t.jinja"), "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(read_file(scratch() + "/s.json"), R"({"type": "object"})");
  EXPECT_GT(fs::file_size(tiny_model("llama") + "/model.gguf"), 0u);
  // A new file in the model folder is fine: outputs are opened once the model is loaded.
  expect_success(kvshare({"generate", "--model", m, "--input", in_path, "--output", m + "/tokenizer.json.out",
                          "--no-progress", "--kv-cache-memory", "64MiB"}));
  // An input whose line never ends (a device, a binary file) is refused after a bounded read, not read into
  // memory until the process dies.
  if (fs::exists("/dev/zero")) {
    const CliRun endless = kvshare({"generate", "--model", model_, "--input", "/dev/zero", "--output",
                                    scratch() + "/o.jsonl", "--no-progress", "--kv-cache-memory", "64MiB"});
    EXPECT_EQ(endless.exit_code, 1) << endless;
    EXPECT_EQ(endless.signal, 0) << endless;
    EXPECT_TRUE(contains(endless.err, "line 1: the line has no end within 1 GiB")) << endless;
  }
  // A write that fails (disk full) is an error, not a silent success.
  if (fs::exists("/dev/full")) {
    const CliRun full = kvshare({"generate", "--model", model_, "--input", in_path, "--output", "/dev/full",
                              "--kv-cache-memory", "64MiB"});
    expect_clean_failure(full, {"/dev/full"});
  }
  // An empty input is an empty job.
  const std::string empty = scratch() + "/empty.jsonl", empty_out = scratch() + "/empty-out.jsonl";
  write_file(empty, "");
  const CliRun e = kvshare({"generate", "--model", model_, "--input", empty, "--output", empty_out, "--kv-cache-memory",
                         "64MiB"});
  expect_success(e);
  EXPECT_TRUE(fs::exists(empty_out) && fs::file_size(empty_out) == 0) << e;
}

// ---- 3. errors --------------------------------------------------------------------------------------

TEST_F(CliTest, UsageErrorsNameTheProblem) {
  const CliRun flag = kvshare({"generate", "--model", model_, "--prompt", "hi", "--bogus"});
  expect_clean_failure(flag, {"unknown flag --bogus"});
  EXPECT_EQ(flag.exit_code, 2) << flag;
  const CliRun cmd = kvshare({"frobnicate"});
  expect_clean_failure(cmd, {"unknown command 'frobnicate'"});
  EXPECT_EQ(cmd.exit_code, 2) << cmd;
  expect_clean_failure(kvshare({"generate", "--prompt", "hi"}), {"--model is required"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt"}), {"--prompt needs a value"});
  expect_clean_failure(kvshare({"generate", "--model", model_}), {"--prompt"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "stray"}), {"unexpected argument 'stray'"});
  expect_clean_failure(kvshare({"tokenize", "hi"}), {"--model is required"});
  expect_clean_failure(kvshare({"tokenize", "--model", model_}), {"TEXT"});
}

TEST_F(CliTest, BadModelFilesAreReportedNotCrashedOn) {
  expect_clean_failure(kvshare({"generate", "--model", scratch() + "/no-such-model", "--prompt", "hi"}),
                       {"no-such-model", "does not exist"});

  const std::string bert = copy_of_tiny("bert");
  {
    std::string config = read_file(bert + "/config.json");
    const std::string from = "\"model_type\": \"llama\"";
    ASSERT_NE(config.find(from), std::string::npos) << config;
    config.replace(config.find(from), from.size(), "\"model_type\": \"bert\"");
    write_file(bert + "/config.json", config);
  }
  expect_clean_failure(kvshare({"generate", "--model", bert, "--prompt", "hi"}), {"bert", "not supported"});

  const std::string trunc = copy_of_tiny("truncated");
  truncate_to_half(trunc + "/model.safetensors");
  expect_clean_failure(kvshare({"generate", "--model", trunc, "--prompt", "hi"}), {"model.safetensors", "past the end"});

  const std::string half_gguf = scratch() + "/half.gguf";
  fs::copy_file(model_ + "/model.gguf", half_gguf, fs::copy_options::overwrite_existing);
  truncate_to_half(half_gguf);
  expect_clean_failure(kvshare({"generate", "--model", half_gguf, "--prompt", "hi"}), {"half.gguf", "past the end"});

  const std::string bad_magic = scratch() + "/bad-magic.gguf";
  fs::copy_file(model_ + "/model.gguf", bad_magic, fs::copy_options::overwrite_existing);
  {
    std::fstream f(bad_magic, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("XXXX", 4);
  }
  expect_clean_failure(kvshare({"generate", "--model", bad_magic, "--prompt", "hi"}), {"not a GGUF file"});
  expect_clean_failure(kvshare({"tokenize", "--model", bad_magic, "hi"}), {"not a GGUF file"});

  const std::string shape = copy_of_tiny("wrong-shape");
  {
    std::string config = read_file(shape + "/config.json");
    const std::string from = "\"hidden_size\": 64";
    ASSERT_NE(config.find(from), std::string::npos) << config;
    config.replace(config.find(from), from.size(), "\"hidden_size\": 96");
    write_file(shape + "/config.json", config);
  }
  expect_clean_failure(kvshare({"generate", "--model", shape, "--prompt", "hi"}), {"shape"});

  const std::string notok = copy_of_tiny("no-tokenizer");
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer.json"}) fs::remove(notok + "/" + f);
  expect_clean_failure(kvshare({"generate", "--model", notok, "--prompt", "hi"}), {"tokenizer"});
  expect_clean_failure(kvshare({"tokenize", "--model", notok, "hi"}), {"tokenizer"});
}

TEST_F(CliTest, BadGenerateValuesNameTheProblem) {
  // The tiny model's context is 512 tokens.
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", words(600)}), {"601 tokens", "context"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hello there friend", "--max-model-len", "3"}),
                       {"context", "--max-model-len"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--max-tokens", "0"}), {"--max-tokens"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--max-tokens", "many"}),
                       {"--max-tokens", "many"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--temperature", "-1"}), {"temperature"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--top-p", "0"}), {"top_p"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--kv-cache-memory", "12apples"}),
                       {"--kv-cache-memory", "apples"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--kv-cache-memory", "1e30"}),
                       {"--kv-cache-memory", "too large"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--kv-cache-memory", "1"}),
                       {"--kv-cache-memory"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--block-size", "0"}), {"--block-size"});
  // A fraction above the engine's largest was refused without naming the flag.
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--kv-cache-memory", "0.97"}),
                       {"--kv-cache-memory", "(0, 0.95], got 0.97"});
  // A number with a decimal point is a fraction: 1.0 and 1.5 were taken as "1 byte".
  for (const char* frac : {"1.0", "1.5"})
    expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--kv-cache-memory", frac}),
                         {"--kv-cache-memory", "fraction of free memory below 1"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--max-model-len", "0"}),
                       {"--max-model-len must be from 1"});
  // Too large was reported as "must be at least 1".
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--max-tokens", "99999999999"}),
                       {"--max-tokens must be from 1 to 16777216, got 99999999999"});
  // A flag given twice was "last one wins"; --output beside --prompt was ignored (the text went to stdout).
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "a", "--prompt", "b"}),
                       {"--prompt is given twice"});
  expect_clean_failure(kvshare({"generate", "--model", model_, "--prompt", "hi", "--output", scratch() + "/o.jsonl"}),
                       {"--output goes with --input"});
}

TEST_F(CliTest, MakeModelRejectsBadArguments) {
  const std::string tok = testing::gpt2_tokenizer_dir();
  const std::string out = scratch() + "/mm";
  expect_clean_failure(kvshare({"make-model", "--arch", "bert", "--shape", "tiny", "--tokenizer", tok, "--out", out}),
                       {"unknown architecture 'bert'"});
  expect_clean_failure(kvshare({"make-model", "--arch", "llama", "--shape", "huge", "--tokenizer", tok, "--out", out}),
                       {"unknown shape 'huge'"});
  expect_clean_failure(kvshare({"make-model", "--arch", "llama", "--shape", "tiny", "--out", out}), {"--tokenizer"});
  expect_clean_failure(
      kvshare({"make-model", "--arch", "llama", "--shape", "tiny", "--tokenizer", scratch() + "/nope", "--out", out}),
      {"nope"});
  expect_clean_failure(
      kvshare({"make-model", "--arch", "llama", "--shape", "tiny", "--tokenizer", tok, "--out", out, "--dtype", "f64"}),
      {"f64"});
  expect_clean_failure(kvshare({"make-model", "--arch", "llama", "--shape", "tiny", "--tokenizer", tok, "--out", out,
                                "stray"}),
                       {"unexpected argument 'stray'"});
  EXPECT_FALSE(fs::exists(out + "/model.gguf"));
  // A folder that holds files (a real model, say) is not written over unless asked.
  fs::create_directories(out);
  write_file(out + "/config.json", "{}");
  expect_clean_failure(kvshare({"make-model", "--arch", "gpt2", "--shape", "micro", "--tokenizer", tok, "--out", out}),
                       {"already holds files", "--overwrite"});
  EXPECT_EQ(read_file(out + "/config.json"), "{}");
  expect_success(kvshare({"make-model", "--arch", "gpt2", "--shape", "micro", "--tokenizer", tok, "--out", out, "--overwrite"}));
  EXPECT_NE(read_file(out + "/config.json"), "{}");
}

// ---- 4. bench ---------------------------------------------------------------------------------------

TEST_F(CliTest, BenchGspCompareReportsReuse) {
  const CliRun r = kvshare({"bench", "--model", model_, "--workload", "gsp", "--compare", "--groups", "2",
                         "--prompts-per-group", "3", "--system-len", "64", "--question-len", "8", "--output-len", "4",
                         "--json", "--kv-cache-memory", "64MiB", "--kv-cache-prefault"});
  expect_success(r);
  const json j = parse_json(r.out);
  ASSERT_TRUE(j.is_object()) << r;
  ASSERT_TRUE(j.contains("runs") && j["runs"].is_array()) << r;
  ASSERT_EQ(j["runs"].size(), 2u) << r;
  EXPECT_EQ(j["workload"], "gsp");
  EXPECT_TRUE(j.value("kv_cache_prefault", false)) << r;  // the KV memory was made resident before the runs
  EXPECT_FALSE(j["runs"][0].value("prefix_cache", true)) << r;
  EXPECT_TRUE(j["runs"][1].value("prefix_cache", false)) << r;
  EXPECT_GT(j.value("ideal_speedup", 0.0), 1.0) << r;
  EXPECT_TRUE(j.value("outputs_identical", false)) << r;
  EXPECT_GT(j["runs"][1].value("prefix_hit_fraction", 0.0), 0.5) << r;
  EXPECT_EQ(j["runs"][0].value("prefix_hit_fraction", -1.0), 0.0) << r;
  for (const json& run : j["runs"]) {
    EXPECT_EQ(run.value("requests", 0), 6) << r;
    EXPECT_EQ(run.value("output_tokens", 0), 24) << r;
  }
  EXPECT_LT(j["runs"][1].value("computed_tokens", 0), j["runs"][0].value("computed_tokens", 0)) << r;
}

TEST_F(CliTest, BenchRunsEveryWorkload) {
  struct Case {
    std::string name;
    std::vector<std::string> flags;
    bool expect_hits;
  };
  const std::vector<Case> cases = {
      {"prefix-repetition",
       {"--num-prompts", "4", "--num-prefixes", "2", "--prefix-len", "32", "--suffix-len", "8", "--output-len", "2"},
       true},
      {"long-doc-qa", {"--order", "tile", "--num-docs", "2", "--doc-len", "64", "--repeats", "2", "--output-len", "2"}, true},
      {"multi-turn", {"--conversations", "2", "--turns", "2", "--user-len", "20", "--output-len", "2"}, true},
      {"control", {"--num-prompts", "3", "--input-len", "16", "--output-len", "2"}, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> args = {"bench", "--model", model_, "--workload", c.name, "--kv-cache-memory", "64MiB", "--json"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const CliRun r = kvshare(args);
    expect_success(r);
    const json j = parse_json(r.out);
    if (!j.is_object()) continue;
    EXPECT_EQ(j.value("workload", ""), c.name) << r;
    EXPECT_FALSE(j.value("kv_cache_prefault", true)) << r;
    ASSERT_TRUE(j.contains("runs") && j["runs"].size() == 1u) << r;
    const json& run = j["runs"][0];
    EXPECT_GT(run.value("requests", 0), 0) << r;
    EXPECT_GT(run.value("prompt_tokens", 0), 0) << r;
    EXPECT_GT(run.value("output_tokens", 0), 0) << r;
    if (c.expect_hits) {
      EXPECT_GT(run.value("cached_prompt_tokens", 0), 0) << r;
    } else {
      EXPECT_EQ(run.value("cached_prompt_tokens", -1), 0) << r;
    }
  }
  // The text report.
  const CliRun text = kvshare({"bench", "--model", model_, "--workload", "control", "--num-prompts", "2", "--input-len", "8",
                            "--output-len", "2", "--kv-cache-memory", "64MiB"});
  expect_success(text);
  EXPECT_TRUE(contains(text.out, "kvshare bench control")) << text;
  EXPECT_TRUE(contains(text.out, "prefix cache on")) << text;
  EXPECT_TRUE(contains(text.out, "ideal speedup")) << text;
}

TEST_F(CliTest, BenchRejectsBadWorkloadsAndSizes) {
  const std::vector<std::string> base = {"bench", "--model", model_, "--kv-cache-memory", "64MiB"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  expect_clean_failure(kvshare(with({"--workload", "nonsense"})), {"unknown workload 'nonsense'"});
  // A workload name given without --workload must not silently run gsp.
  expect_clean_failure(kvshare(with({"prefix-repetition"})), {"unexpected argument 'prefix-repetition'"});
  expect_clean_failure(kvshare(with({"--groups", "0"})), {"--groups"});
  expect_clean_failure(kvshare(with({"--output-len", "0"})), {"--output-len"});
  expect_clean_failure(kvshare(with({"--workload", "long-doc-qa", "--order", "sideways"})), {"sideways"});
  expect_clean_failure(kvshare(with({"--workload", "control", "--num-prompts", "-5"})), {"--num-prompts"});
  expect_clean_failure(kvshare({"bench", "--workload", "gsp"}), {"--model is required"});
  // 0 ran nothing and exited 0; 100M x 100M grew to 2.4 GB before anything ran.
  expect_clean_failure(kvshare(with({"--workload", "long-doc-qa", "--repeats", "0"})),
                       {"--repeats must be from 1 to"});
  expect_clean_failure(kvshare(with({"--groups", "100000000"})), {"--groups must be from 1 to 16777216"});
  expect_clean_failure(kvshare(with({"--groups", "10000", "--prompts-per-group", "10000"})),
                       {"the gsp workload would send 100000000 requests, more than a benchmark's limit of 1000000"});
}

// ---- chat-template ------------------------------------------------------------------------------------

const char* kChatMlTemplate =
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

TEST(CliChatTemplate, PrintsThePromptByteForByte) {
  const std::string dir = scratch() + "/chat";
  fs::create_directories(dir);
  write_file(dir + "/t.jinja", kChatMlTemplate);
  write_file(dir + "/m.json", R"([{"role": "user", "content": "Hi é"}])");
  const CliRun r = kvshare({"chat-template", "--template", dir + "/t.jinja", "--messages", dir + "/m.json"});
  expect_success(r);
  EXPECT_EQ(r.out, "<|im_start|>user\nHi é<|im_end|>\n<|im_start|>assistant\n") << r;
  const CliRun no_gp = kvshare({"chat-template", "--template", dir + "/t.jinja", "--messages", dir + "/m.json",
                                "--no-generation-prompt", "--bos-token", "<B>"});
  expect_success(no_gp);
  EXPECT_EQ(no_gp.out, "<B><|im_start|>user\nHi é<|im_end|>\n") << no_gp;
  // An object with "messages" passes other variables to the template.
  write_file(dir + "/t2.jinja", "{{ tools | length }} tools, {{ messages | length }} messages{{ eos_token }}");
  write_file(dir + "/m2.json", R"({"messages": [], "tools": [{"name": "a"}, {"name": "b"}]})");
  const CliRun vars = kvshare({"chat-template", "--template", dir + "/t2.jinja", "--messages", dir + "/m2.json",
                               "--eos-token", "</s>"});
  expect_success(vars);
  EXPECT_EQ(vars.out, "2 tools, 0 messages</s>") << vars;
}

TEST(CliChatTemplate, TemplateErrorsFailWithTheirMessageAndPosition) {
  const std::string dir = scratch() + "/chat-errors";
  fs::create_directories(dir);
  write_file(dir + "/m.json", R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  write_file(dir + "/raise.jinja",
             "{% for m in messages %}\n{% if loop.index0 > 0 and m.role == messages[loop.index0 - 1].role %}"
             "{{ raise_exception('Conversation roles must alternate') }}{% endif %}{% endfor %}");
  const CliRun raised = kvshare({"chat-template", "--template", dir + "/raise.jinja", "--messages", dir + "/m.json"});
  expect_clean_failure(raised, {"Conversation roles must alternate", "line 2, column"});
  EXPECT_EQ(raised.out, "") << raised;
  write_file(dir + "/syntax.jinja", "ok\n{% if x %}\n{{ 1 + }}\n{% endif %}");
  expect_clean_failure(kvshare({"chat-template", "--template", dir + "/syntax.jinja", "--messages", dir + "/m.json"}),
                       {"syntax error", "line 3, column 8"});
  write_file(dir + "/deep.jinja", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
  expect_clean_failure(kvshare({"chat-template", "--template", dir + "/deep.jinja", "--messages", dir + "/m.json"}),
                       {"nests deeper"});
  write_file(dir + "/bad.json", "[{");
  expect_clean_failure(kvshare({"chat-template", "--template", dir + "/deep.jinja", "--messages", dir + "/bad.json"}),
                       {"not valid JSON"});
  expect_clean_failure(kvshare({"chat-template", "--messages", dir + "/m.json"}), {"--model", "--template"});
  expect_clean_failure(kvshare({"chat-template", "--template", dir + "/nope.jinja", "--messages", dir + "/m.json"}),
                       {"nope.jinja"});
}

TEST(CliChatTemplate, RealTemplateMatchesTheReferenceGolden) {
  KV_REQUIRE_SHARED("chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja");
  const std::string goldens = testing::source_dir() + "/tests/goldens/chat_templates";
  const json expected = json::parse(read_file(goldens + "/expected/Qwen-Qwen2.5-7B-Instruct.json"));
  for (const char* c : {"multi_turn", "tool_calls"}) {
    const CliRun r = kvshare({"chat-template", "--template",
                              testing::shared_dir() + "/chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja", "--messages",
                              goldens + "/cases/" + c + ".json", "--bos-token", "<s>", "--eos-token", "</s>"});
    expect_success(r);
    EXPECT_EQ(r.out, expected.at(c).at("generation_prompt").at("output").get<std::string>()) << c << r;
  }
}

TEST(CliChatTemplate, ModelFolderAndGgufCarryTheTemplateAndTokens) {
  KV_REQUIRE_GPT2_TOKENIZER();
  const std::string tok = scratch() + "/chat-tokenizer";
  fs::remove_all(tok);
  fs::create_directories(tok);
  for (const auto& e : fs::directory_iterator(testing::gpt2_tokenizer_dir()))
    if (e.is_regular_file()) fs::copy_file(e.path(), tok + "/" + e.path().filename().string());
  json config = {{"bos_token", "<|endoftext|>"}, {"eos_token", "<|endoftext|>"},
                 {"chat_template", "[{{ bos_token }}]{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                                   "{% if add_generation_prompt %}assistant:{% endif %}"}};
  write_file(tok + "/tokenizer_config.json", config.dump());
  const std::string model = scratch() + "/chat-model";
  const CliRun made = kvshare({"make-model", "--arch", "llama", "--shape", "tiny", "--tokenizer", tok, "--out", model});
  expect_success(made);
  write_file(scratch() + "/chat-m.json", R"([{"role": "user", "content": "hello"}])");
  const std::string want = "[<|endoftext|>]user: hello\nassistant:";
  for (const std::string& m : {model, model + "/model.gguf"}) {
    const CliRun r = kvshare({"chat-template", "--model", m, "--messages", scratch() + "/chat-m.json"});
    expect_success(r);
    EXPECT_EQ(r.out, want) << m << r;
  }
  // A model without a chat template says so.
  expect_clean_failure(kvshare({"chat-template", "--model", tiny_model("llama"), "--messages", scratch() + "/chat-m.json"}),
                       {"no chat template"});
}

}  // namespace
}  // namespace kvshare
