// The resource limits of docs/limits.md, each held to its error: every input past a limit is refused with a
// message that names the limit, before the work it would cost is done.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "chat/chat_template.h"
#include "cli/request_line.h"
#include "core/json_limits.h"
#include "core/mapped_file.h"
#include "formats/json_error.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace kvshare {
namespace {

// `depth` nested arrays around `inner`.
std::string nested(int depth, const std::string& inner = "1") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

void expect_error_naming(const Status& st, const std::string& words) {
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(words), std::string::npos) << st.to_string();
}

const std::string kDepthWords = "more than " + std::to_string(kMaxJsonDepth) + " levels deep";

TEST(JsonDepth, CountsBracketsOutsideStringsOnly) {
  EXPECT_TRUE(check_json_limits(nested(kMaxJsonDepth), "x").ok());
  expect_error_naming(check_json_limits(nested(kMaxJsonDepth + 1), "the input"), "the input nests");
  expect_error_naming(check_json_limits(nested(kMaxJsonDepth + 1), "x"), kDepthWords);
  // Brackets inside strings, escaped quotes included, are text.
  const std::string in_string = "[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]";
  EXPECT_TRUE(check_json_limits(in_string, "x").ok());
  // Siblings do not add up: a long flat list is one level.
  std::string flat = "[";
  for (int i = 0; i < 10000; ++i) flat += "[1],";
  flat += "1]";
  EXPECT_TRUE(check_json_limits(flat, "x").ok());
}

TEST(JsonDepth, EveryJsonReaderRefusesDeepDocuments) {
  const std::string deep = nested(100000);
  // config.json
  expect_error_naming(parse_hf_config("{\"model_type\": \"llama\", \"x\": " + deep + "}").status(), kDepthWords);
  // A batch job's request line, e.g. in a field that is printed in its error message.
  expect_error_naming(cli::parse_request_line("{\"prompt\": \"a\", \"stop_token_ids\": " + deep + "}", {}).status(),
                      kDepthWords);
  // A safetensors header (a shape the error message would print).
  const std::string dir = testing::temp_dir("limits_json_depth");
  std::string header = "{\"t\": {\"dtype\": \"F32\", \"shape\": " + deep + ", \"data_offsets\": [0, 0]}}";
  std::string file(8, '\0');
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(len >> (8 * i));
  write(dir + "/model.safetensors", file + header);
  expect_error_naming(load_safetensors(dir + "/model.safetensors").status(), kDepthWords);
  // tokenizer.json, vocab.json and generation_config.json.
  write(dir + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": " + deep + "}}");
  expect_error_naming(BpeTokenizer::from_hf_dir(dir).status(), kDepthWords);
  std::filesystem::remove(dir + "/tokenizer.json");
  write(dir + "/vocab.json", "{\"a\": 0, \"b\": " + deep + "}");
  write(dir + "/merges.txt", "#version: 0.2\na b\n");
  expect_error_naming(BpeTokenizer::from_hf_dir(dir).status(), kDepthWords);
  write(dir + "/vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
  write(dir + "/generation_config.json", "{\"eos_token_id\": " + deep + "}");
  expect_error_naming(BpeTokenizer::from_hf_dir(dir).status(), kDepthWords);
}

TEST(JsonDepth, ChatConversationsAreBoundedToo) {
  auto tpl = ChatTemplate::from_string("{{ messages | length }}");
  ASSERT_TRUE(tpl.ok()) << tpl.status().to_string();
  nlohmann::ordered_json shallow = nlohmann::ordered_json::parse("[{\"role\": \"user\", \"content\": \"hi\"}]");
  ASSERT_TRUE(tpl->apply(shallow, false).ok());
  // Built in memory (as a server would), not parsed from text: apply checks the depth itself.
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 100000; ++i) deep = nlohmann::ordered_json::array({std::move(deep)});
  nlohmann::ordered_json conversation = nlohmann::ordered_json::array(
      {{{"role", "user"}, {"content", std::move(deep)}}});
  expect_error_naming(tpl->apply(conversation, false).status(), kDepthWords);
}

TEST(TextFiles, FoldersAndFilesPastTheLimitAreRefused) {
  const std::string dir = testing::temp_dir("limits_text_files");
  write(dir + "/config.json", std::string(1000, ' '));
  EXPECT_TRUE(read_text_file(dir + "/config.json", 1000).ok());
  expect_error_naming(read_text_file(dir + "/config.json", 999).status(), "larger than 999 bytes, the limit");
  expect_error_naming(read_text_file(dir).status(), "is a folder");
  EXPECT_EQ(read_text_file(dir + "/absent.json").status().code(), StatusCode::kNotFound);
}

// A model folder's files must be regular files: a FIFO with no writer blocked the load for good, /dev/zero
// streamed 1 GiB for 45 s, and either was then reported as "has no config.json". (This test would hang on the
// FIFO without the check; ctest's timeout fails it.)
TEST(TextFiles, ModelFolderFilesThatAreNotRegularFilesAreRefusedAtOnce) {
  const std::string dir = testing::temp_dir("limits_model_files");
  const std::string fifo = dir + "/config.json";
  std::filesystem::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error_naming(read_model_text_file(fifo).status(), "is not a regular file (a pipe, a socket or a device)");
  expect_error_naming(load_model(dir).status(), fifo + " is not a regular file");
  expect_error_naming(read_model_text_file("/dev/zero").status(), "is not a regular file");
  // A link to itself exists as an entry, so the error is the link's, not "no such file".
  const std::string loop = dir + "/tokenizer.json";
  std::filesystem::remove(loop);
  std::filesystem::create_symlink(loop, loop);
  EXPECT_FALSE(file_exists(loop));
  EXPECT_TRUE(path_entry_exists(loop));
  expect_error_naming(read_model_text_file(loop).status(), "Too many levels of symbolic links");
  // A regular file, and a link to one, read as before.
  write(dir + "/real.json", "{}");
  std::filesystem::remove(dir + "/link.json");
  std::filesystem::create_symlink(dir + "/real.json", dir + "/link.json");
  EXPECT_EQ(*read_model_text_file(dir + "/link.json"), "{}");
}

// A JSON syntax error says where, and quotes what it read as ASCII: bytes that are not valid UTF-8 in a request
// body once made the error answer itself unserializable (fuzz_http_body).
TEST(JsonErrors, SayWhereAndStayAscii) {
  EXPECT_EQ(json_syntax_error("{\"a\": 1}"), "");
  const std::string where = json_syntax_error("{\"a\": 1,\n \"b\": \xFF\x86}");
  EXPECT_EQ(where.rfind(" at line 2, column ", 0), 0u) << where;
  EXPECT_NE(where.find("\\xFF"), std::string::npos) << where;
  for (const char c : where) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << where;
  EXPECT_NO_THROW((void)nlohmann::json(where).dump());
}

TEST(RequestLines, LongerThanTheLimitIsRefused) {
  const std::string prompt(cli::kMaxRequestLineBytes, 'a');
  auto r = cli::parse_request_line("{\"prompt\": \"" + prompt + "\"}", {});
  expect_error_naming(r.status(), "more than a request line may have (64 MiB)");
  // Just under the limit is fine.
  auto ok = cli::parse_request_line("{\"prompt\": \"" + prompt.substr(0, prompt.size() - 20) + "\"}", {});
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->prompt.size(), prompt.size() - 20);
}

// A request line holds at most kMaxRequestJsonValues values, refused before parsing: a 60 MB line of 30M token
// ids took 12 s to parse and then refuse as longer than the context. Commas inside strings are text.
TEST(RequestLines, MoreValuesThanTheLimitAreRefusedBeforeParsing) {
  std::string ids;
  for (size_t i = 0; i < kMaxRequestJsonValues; ++i) ids += "1,";
  ids += "1";
  expect_error_naming(cli::parse_request_line("{\"prompt_token_ids\": [" + ids + "]}", {}).status(),
                      "the line holds more than 4194304 values");
  // One value fewer (the object's own comma counts too) parses.
  ids.resize(ids.size() - 4);
  auto ok = cli::parse_request_line("{\"prompt_token_ids\": [" + ids + "], \"max_tokens\": 1}", {});
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(ok->prompt_token_ids.size(), kMaxRequestJsonValues - 1);
  EXPECT_TRUE(check_json_limits("[\"" + std::string(100, ',') + "\"]", "x", 10).ok());
}

TEST(GenerationConfig, EosIdsOutsideTheTokenRangeAreErrorsNotWrapped) {
  const std::string dir = testing::temp_dir("limits_generation_config");
  // A byte-level vocabulary holds its 256 byte symbols (ids 0-255 here), then "ab".
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_chars()[b]] = b;
  vocab["ab"] = 256;
  write(dir + "/vocab.json", vocab.dump());
  write(dir + "/merges.txt", "#version: 0.2\na b\n");
  // 2^32 + 1 once became token 1.
  write(dir + "/generation_config.json", "{\"eos_token_id\": [2, 4294967297]}");
  expect_error_naming(BpeTokenizer::from_hf_dir(dir).status(), "eos_token_id 4294967297 is not a token id");
  write(dir + "/generation_config.json", "{\"eos_token_id\": 2}");
  auto tok = BpeTokenizer::from_hf_dir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  const auto eos = (*tok)->eos_ids();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 2), eos.end());
}

}  // namespace
}  // namespace kvshare
