// kvshare generate: one prompt (--prompt), or a JSONL batch job (--input/--output).
#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/progress.h"
#include "cli/request_line.h"
#include "core/mapped_file.h"
#include "kvshare/engine.h"

namespace kvshare::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<FlagSpec> generate_specs() {
  std::vector<FlagSpec> specs = engine_flag_specs();
  for (auto& s : sampling_flag_specs()) specs.push_back(s);
  specs.push_back({"prompt", true, "the prompt text (an empty prompt starts from BOS alone)"});
  specs.push_back({"json", false, "print one JSON object {text, token_ids, prompt_token_ids, finish_reason} (and stop_reason)"});
  specs.push_back({"input", true, "a JSONL file of requests: {\"prompt\": ...}, {\"prompt_token_ids\": [...]} or "
                                  "{\"messages\": [...]} per line"});
  specs.push_back({"output", true,
                   "where to write the results, one JSON line per input line in input order (n lines for a line "
                   "asking n completions)"});
  specs.push_back({"chat-template", true,
                   "a Jinja chat template file for the lines that hold \"messages\", instead of the model's own"});
  specs.push_back({"no-progress", false, "no progress bar on stderr"});
  specs.push_back({"dump-logits", true,
                   "write the float32 logits each generated token was sampled from to FILE: raw little-endian rows "
                   "of vocab floats, request by request (input order), token by token"});
  specs.push_back({"help", false, "show this help"});
  return specs;
}

// --dump-logits: opened once the model is loaded (check_paths has checked the path before), before the run.
class LogitsDump {
 public:
  Status open(const Args& args) {
    auto path = args.get("dump-logits");
    if (!path) return {};
    path_ = *path;
    out_.open(path_, std::ios::binary | std::ios::trunc);
    if (!out_) return invalid_argument("cannot write the logits file " + path_);
    return {};
  }
  bool wanted() const { return !path_.empty(); }
  void write(const Output& o) {
    if (wanted()) out_.write(reinterpret_cast<const char*>(o.logits.data()), static_cast<std::streamsize>(o.logits.size() * 4));
  }
  Status close() {
    if (!wanted()) return {};
    out_.close();
    if (!out_) return internal_error("writing the logits file " + path_ + " failed (disk full?)");
    return {};
  }

 private:
  std::string path_;
  std::ofstream out_;
};

// [{"token_id", "logprob", "top_logprobs": [{"token_id", "logprob"}, ...]}, ...], one per token.
json logprobs_json(const std::vector<GeneratedTokenLogprobs>& logprobs) {
  json lps = json::array();
  for (const GeneratedTokenLogprobs& t : logprobs) {
    json top = json::array();
    for (const TokenLogprob& a : t.top) top.push_back({{"token_id", a.token_id}, {"logprob", a.logprob}});
    lps.push_back({{"token_id", t.chosen.token_id}, {"logprob", t.chosen.logprob}, {"top_logprobs", top}});
  }
  return lps;
}

// One completion's answer fields: text, tokens, why it stopped, and log-probabilities when asked for.
void put_completion(json& o, const Output& r) {
  o["text"] = r.text;
  o["token_ids"] = r.token_ids;
  o["prompt_tokens"] = r.prompt_token_ids.size();
  o["cached_tokens"] = r.num_cached_tokens;
  if (!r.stop_str.empty()) o["stop_reason"] = r.stop_str;
  else if (r.stop_token_id >= 0) o["stop_reason"] = r.stop_token_id;
  if (!r.logprobs.empty()) o["logprobs"] = logprobs_json(r.logprobs);
  // The request's prompt logprobs (completion 0 carries them): null for the first prompt token, as vLLM's.
  if (!r.prompt_logprobs.empty()) {
    json lps = logprobs_json(r.prompt_logprobs);
    lps.insert(lps.begin(), nullptr);
    o["prompt_logprobs"] = lps;
  }
}

// True when `a` and `b` name one file: the same file if both exist (through links too), else the same path once
// made absolute and normalized.
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) {
    const bool same = fs::equivalent(a, b, ec);
    return !ec && same;
  }
  const fs::path ca = fs::weakly_canonical(a, ec);
  if (ec) return false;
  const fs::path cb = fs::weakly_canonical(b, ec);
  return !ec && ca == cb;
}

// Every file a generate run reads, with what it is: the input, the chat template, the JSON schema, and the model
// (its file, or each file in its folder).
std::vector<std::pair<std::string, std::string>> files_read(const Args& args) {
  std::vector<std::pair<std::string, std::string>> read;
  if (auto p = args.get("input")) read.emplace_back("the input file", *p);
  if (auto p = args.get("chat-template")) read.emplace_back("the --chat-template file", *p);
  if (auto p = args.get("json-schema")) read.emplace_back("the --json-schema file", *p);
  if (auto p = args.get("model")) {
    std::error_code ec;
    if (!fs::is_directory(*p, ec)) {
      read.emplace_back("the model file", *p);
    } else {
      // A model folder holds a few files (shards, configs, tokenizer); the walk is bounded all the same.
      int entries = 0;
      for (fs::recursive_directory_iterator it(*p, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end && ++entries <= 10000; it.increment(ec)) {
        std::error_code file_ec;
        if (it->is_regular_file(file_ec)) read.emplace_back("a file of the model folder " + *p, it->path().string());
      }
    }
  }
  return read;
}

// Whether `path` can be written, without creating or truncating it.
Status check_writable(const std::string& what, const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) {
    if (::access(path.c_str(), W_OK) != 0)
      return invalid_argument("cannot write " + what + " " + path + ": " + std::strerror(errno));
    return {};
  }
  fs::path folder = fs::path(path).parent_path();
  if (folder.empty()) folder = ".";
  if (!fs::is_directory(folder, ec))
    return invalid_argument("cannot write " + what + " " + path + ": the folder " + folder.string() +
                            " does not exist");
  if (::access(folder.c_str(), W_OK) != 0)
    return invalid_argument("cannot write " + what + " " + path + ": the folder " + folder.string() + " is not " +
                            "writable (" + std::strerror(errno) + ")");
  return {};
}

// The files a run writes (--output, --dump-logits), checked before anything is read or written: each must be a
// writable file, not a folder, not another output, and none of the files the run reads (an output is emptied when
// it is opened: the input's requests, a model file, a template would be lost). The input must be a file, not a
// folder. The outputs are opened only once the model is loaded.
Status check_paths(const Args& args) {
  std::error_code ec;
  if (auto in = args.get("input"); in && fs::is_directory(*in, ec))
    return invalid_argument("--input " + *in + " is a folder; give a JSONL file of requests, one per line");
  std::vector<std::pair<std::string, std::string>> written;
  if (auto out = args.get("output")) written.emplace_back("--output", *out);
  if (auto dump = args.get("dump-logits")) written.emplace_back("--dump-logits", *dump);
  if (written.empty()) return {};
  const auto read = files_read(args);
  for (size_t i = 0; i < written.size(); ++i) {
    const auto& [flag, path] = written[i];
    if (fs::is_directory(path, ec))
      return invalid_argument(flag + " " + path + " is a folder; give the path of a file to write");
    for (const auto& [what, file] : read) {
      if (!same_file(path, file)) continue;
      const std::string lost = what == "the input file" ? "the requests" : "it";
      return invalid_argument(flag + " " + path + " is " + what + (file == path ? "" : " (" + file + ")") +
                              "; writing it would destroy " + lost + ": give another path");
    }
    for (size_t j = 0; j < i; ++j) {
      if (same_file(path, written[j].second))
        return invalid_argument(flag + " " + path + " is the same file as " + written[j].first + " " +
                                written[j].second + "; give each its own path");
    }
    KV_RETURN_IF_ERROR(check_writable(flag == "--output" ? "the output file" : "the logits file", path));
  }
  return {};
}

// Each chat line's prompt: its conversation rendered with the model's chat template and tokenized as vLLM tokenizes
// a chat (special tokens read, no BOS added: the template writes its own). A line whose rendering fails (no
// template, a template error, raise_exception) becomes a bad line: reported with its line number, answered with
// the error, taken out of `requests`.
void render_chat_lines(const Tokenizer& tokenizer, const std::vector<std::optional<ChatLine>>& chats,
                       std::vector<Request>& requests, std::vector<int64_t>& request_of_line,
                       std::vector<std::string>& errors, const std::string& in_path, size_t& bad) {
  std::vector<size_t> line_of(requests.size());
  for (size_t line = 0; line < request_of_line.size(); ++line)
    if (request_of_line[line] >= 0) line_of[static_cast<size_t>(request_of_line[line])] = line;
  std::vector<int64_t> new_index(requests.size(), -1);
  std::vector<Request> kept;
  const Status own = tokenizer.chat_template_status();  // the model's template: none, or why it did not load
  for (size_t i = 0; i < requests.size(); ++i) {
    if (chats[i].has_value()) {
      Result<std::string> prompt =
          own.code() == StatusCode::kNotFound && chats[i]->options.chat_template.empty()
              ? invalid_argument("the model has no chat template for the lines that hold \"messages\"; give one with "
                                 "--chat-template FILE")
              : tokenizer.apply_chat_template(chats[i]->conversation, chats[i]->options);
      if (prompt.ok()) {
        requests[i].prompt_token_ids = tokenizer.encode(*prompt, /*add_special=*/false);
        if (requests[i].prompt_token_ids.empty())
          prompt = invalid_argument("the chat template made an empty prompt of these messages");
      }
      if (!prompt.ok()) {
        const size_t line = line_of[i];
        std::fprintf(stderr, "kvshare generate: %s line %zu: %s\n", in_path.c_str(), line + 1,
                     printable(prompt.status().message()).c_str());
        request_of_line[line] = -1;
        errors[line] = "line " + std::to_string(line + 1) + ": " + prompt.status().message();
        ++bad;
        continue;
      }
    }
    new_index[i] = static_cast<int64_t>(kept.size());
    kept.push_back(std::move(requests[i]));
  }
  for (int64_t& r : request_of_line)
    if (r >= 0) r = new_index[static_cast<size_t>(r)];
  requests = std::move(kept);
}

int run_batch(const Args& args, const SamplingParams& defaults) {
  const std::string in_path = *args.get("input");
  auto out_path = args.get("output");
  if (!out_path) return fail("generate", invalid_argument("--input needs --output FILE for the results"));
  if (Status st = check_paths(args); !st.ok()) return fail("generate", st);
  std::ifstream in(in_path);
  if (!in) return fail("generate", not_found("cannot open the input file " + in_path));
  std::string chat_template;  // --chat-template: the chat lines' template instead of the model's
  if (auto path = args.get("chat-template")) {
    Result<std::string> source = read_chat_template_file(*path);
    if (!source.ok()) return fail("generate", source.status().with_context("--chat-template " + *path));
    chat_template = std::move(source).value();
  }

  // Parse every line first; bad lines are reported with their line number and answered with an error.
  std::vector<std::string> errors;
  std::vector<Request> requests;
  std::vector<std::optional<ChatLine>> chats;  // per request: its conversation, for a chat line
  std::string line;
  size_t line_no = 0, bad = 0;
  std::vector<int64_t> request_of_line;  // -1 for a bad or blank line
  uint64_t bytes = 0;
  for (LineRead read; (read = read_request_line(in, line, bytes)) != LineRead::kEnd;) {
    ++line_no;
    if (read == LineRead::kEndless) {  // not a JSONL file: the lines before this one still run
      const std::string error = "the line has no end within " + std::to_string(kMaxSkippedLineBytes >> 30) +
                                " GiB; the input is not a JSONL file of requests, and nothing after it was read";
      std::fprintf(stderr, "kvshare generate: %s line %zu: %s\n", in_path.c_str(), line_no, error.c_str());
      request_of_line.push_back(-1);
      errors.push_back("line " + std::to_string(line_no) + ": " + error);
      ++bad;
      break;
    }
    if (bytes <= kMaxRequestLineBytes && line.find_first_not_of(" \t\r") == std::string::npos) {
      request_of_line.push_back(-2);
      errors.emplace_back();
      continue;
    }
    std::optional<ChatLine> chat;
    const Status size = check_request_line_size(bytes);
    Result<Request> r = size.ok() ? parse_request_line(line, defaults, &chat) : Result<Request>(size);
    if (!r.ok()) {
      std::fprintf(stderr, "kvshare generate: %s line %zu: %s\n", in_path.c_str(), line_no,
                   printable(r.status().message()).c_str());
      request_of_line.push_back(-1);
      errors.push_back("line " + std::to_string(line_no) + ": " + r.status().message());
      ++bad;
      continue;
    }
    request_of_line.push_back(static_cast<int64_t>(requests.size()));
    errors.emplace_back();
    requests.push_back(std::move(r).value());
    if (chat.has_value() && !chat_template.empty()) chat->options.chat_template = chat_template;
    chats.push_back(std::move(chat));
  }

  auto config = engine_config_from(args);
  if (!config.ok()) return fail("generate", config.status());
  auto engine = Engine::create(*config);
  if (!engine.ok()) return fail("generate", engine.status());
  // Opened once the model is loaded (check_paths has made sure they can be written), before the work.
  std::ofstream out(*out_path);
  if (!out) return fail("generate", invalid_argument("cannot write the output file " + *out_path));
  LogitsDump dump;
  if (Status st = dump.open(args); !st.ok()) return fail("generate", st);
  for (Request& r : requests) r.keep_logits = dump.wanted();
  // Chat lines: rendered with the model's chat template; one that fails is a bad line, the others run.
  render_chat_lines((*engine)->tokenizer(), chats, requests, request_of_line, errors, in_path, bad);

  // One output per completion: n adjacent ones (completion 0..n-1) for a request with n > 1, each an output line.
  std::vector<size_t> first_output(requests.size());
  size_t completions = 0;
  for (size_t i = 0; i < requests.size(); completions += static_cast<size_t>(requests[i].params.num_outputs()), ++i)
    first_output[i] = completions;
  // The engine reports each completion as it finishes: a line with "n": N counts N times.
  Progress progress(completions, completions == requests.size() ? "requests" : "completions",
                    !args.has("no-progress"));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Output> outputs = (*engine)->generate(requests, [&](const Output&) { progress.advance(); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.done();

  int64_t index = 0, failed = 0, out_tokens = 0, prompt_tokens = 0;
  for (size_t i = 0; i < request_of_line.size(); ++i) {
    if (request_of_line[i] == -2) continue;  // blank lines are skipped, not answered
    const int32_t n = request_of_line[i] < 0 ? 1 : requests[request_of_line[i]].params.num_outputs();
    bool line_failed = false, prompt_counted = false;
    for (int32_t c = 0; c < n; ++c) {
      json o;
      o["index"] = index++;
      o["line"] = i + 1;
      o["completion"] = c;
      if (request_of_line[i] < 0) {
        o["error"] = errors[i];
        o["finish_reason"] = "error";
      } else {
        const Output& r = outputs[first_output[request_of_line[i]] + static_cast<size_t>(c)];
        if (r.finish_reason == FinishReason::kError) {
          // A line counts and is reported once, whichever of its completions failed: each draws its own tokens,
          // so one may fail alone (the masks leaving it no token) while the others finish.
          if (!line_failed)
            std::fprintf(stderr, "kvshare generate: %s line %zu%s: %s\n", in_path.c_str(), i + 1,
                         n > 1 ? (" completion " + std::to_string(c)).c_str() : "", printable(r.error.message()).c_str());
          failed += line_failed ? 0 : 1;
          line_failed = true;
          o["error"] = "line " + std::to_string(i + 1) + ": " + r.error.message();
        } else {
          put_completion(o, r);
          out_tokens += static_cast<int64_t>(r.token_ids.size());
          dump.write(r);
          if (!prompt_counted) prompt_tokens += static_cast<int64_t>(r.prompt_token_ids.size());
          prompt_counted = true;
        }
        o["finish_reason"] = finish_reason_name(r.finish_reason);
      }
      out << o.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
  }
  out.close();
  if (!out) return fail("generate", internal_error("writing the output file " + *out_path + " failed (disk full?)"));
  if (Status st = dump.close(); !st.ok()) return fail("generate", st);
  const EngineMetrics m = (*engine)->metrics();
  const double hit = m.prefix_queried_tokens > 0 ? 100.0 * static_cast<double>(m.prefix_hit_tokens) /
                                                       static_cast<double>(m.prefix_queried_tokens)
                                                 : 0.0;
  std::fprintf(stderr,
               "kvshare generate: %zu requests (%zu bad lines, %ld failed) in %.2f s: %.2f requests/s, "
               "%.1f output tokens/s, %.1f total tokens/s\n"
               "  prompt tokens %ld, served from the prefix cache %ld (hit rate %.1f%%), tokens computed %ld, "
               "preemptions %ld%s\n",
               requests.size(), bad, static_cast<long>(failed), seconds, static_cast<double>(requests.size()) / seconds,
               static_cast<double>(out_tokens) / seconds, static_cast<double>(out_tokens + prompt_tokens) / seconds,
               static_cast<long>(m.prefix_queried_tokens), static_cast<long>(m.prefix_hit_tokens), hit,
               static_cast<long>(m.computed_tokens), static_cast<long>(m.preemptions),
               config->enable_prefix_caching ? "" : " (prefix cache off)");
  return bad + failed > 0 ? 1 : 0;
}

}  // namespace

int run_generate(const std::vector<std::string>& argv) {
  const auto specs = generate_specs();
  auto args = Args::parse("generate", specs, argv);
  if (!args.ok()) return usage_error("generate", args.status());
  if (args->has("help")) {
    std::fputs(usage("generate", "Complete one prompt, or run a JSONL file of prompts as a batch job.", specs).c_str(),
               stdout);
    return 0;
  }
  if (!args->positional().empty())
    return fail("generate", invalid_argument("unexpected argument '" + args->positional()[0] +
                                             "'; pass the prompt with --prompt TEXT"));
  auto defaults = sampling_params_from(*args);
  if (!defaults.ok()) return fail("generate", defaults.status());
  if (args->has("input")) {
    if (args->has("prompt") || args->has("json"))
      return fail("generate", invalid_argument("--input runs a batch job from a file: it takes no --prompt or --json "
                                               "(results go to --output as JSON lines)"));
    return run_batch(*args, *defaults);
  }
  if (!args->has("prompt"))
    return fail("generate", invalid_argument("give --prompt TEXT, or --input FILE --output FILE for a batch job"));
  if (args->has("output"))
    return fail("generate", invalid_argument("--output goes with --input (a batch job); with --prompt the text goes "
                                             "to stdout (--json for a JSON object)"));

  auto config = engine_config_from(*args);
  if (!config.ok()) return fail("generate", config.status());
  // One prompt needs little KV memory: size the cache for it rather than taking a share of the machine.
  if (!args->has("kv-cache-memory")) config->kv_cache_bytes = int64_t{256} << 20;
  if (Status st = check_paths(*args); !st.ok()) return fail("generate", st);
  auto engine = Engine::create(*config);
  if (!engine.ok()) return fail("generate", engine.status());
  LogitsDump dump;
  if (Status st = dump.open(*args); !st.ok()) return fail("generate", st);
  Request r;
  r.prompt = *args->get("prompt");
  r.params = *defaults;
  r.keep_logits = dump.wanted();
  std::vector<Output> outs = (*engine)->generate({r});
  const Output& o = outs[0];
  if (o.finish_reason == FinishReason::kError) return fail("generate", o.error);
  dump.write(o);
  if (Status st = dump.close(); !st.ok()) return fail("generate", st);
  if (args->has("json")) {
    json j;
    j["text"] = o.text;
    j["token_ids"] = o.token_ids;
    j["prompt_token_ids"] = o.prompt_token_ids;
    if (!o.stop_str.empty()) j["stop_reason"] = o.stop_str;
    else if (o.stop_token_id >= 0) j["stop_reason"] = o.stop_token_id;
    j["finish_reason"] = finish_reason_name(o.finish_reason);
    std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    std::cout << o.text << "\n";
  }
  return 0;
}

}  // namespace kvshare::cli
