// What the two tokenizer fuzz targets check of a tokenizer that loaded: encoding fixed texts and the input's
// own text gives ids inside the vocabulary, decoding any ids (out-of-range ones included) gives valid UTF-8,
// and decoding token by token gives what decoding at once gives.
#pragma once

#include <string_view>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

namespace kvshare::fuzz {

inline bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

inline void check_tokenizer(const BpeTokenizer& tok, std::string_view text) {
  const int32_t vocab = tok.vocab_size();
  check(vocab >= 0, "a negative vocabulary size");
  for (std::string_view t : {std::string_view("Hello world, it's 2024!"), std::string_view(" \xe2\x96\x81\xc3\xa9\n"), text}) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(t, special, special);
      for (int32_t id : ids) check(id >= 0 && id < vocab, "encode gave an id outside the vocabulary");
      const std::string once = tok.decode(ids);
      check(valid_utf8(once), "decode gave invalid UTF-8");
      IncrementalDecoder inc(tok);
      std::string streamed;
      for (int32_t id : ids) streamed += inc.push(id);
      streamed += inc.flush();
      check(streamed == once, "token-by-token decoding differs from decoding at once");
    }
  }
  check(valid_utf8(tok.decode({-1, vocab, vocab + 1000, 0, 1, 2})), "decode of odd ids gave invalid UTF-8");
  for (int32_t id : tok.eos_ids()) check(id >= 0, "a negative EOS id");
}

// Writes parts[i] as names[i] in `dir` (a part that is absent removes its file).
inline void write_parts(const std::filesystem::path& dir, const std::vector<std::string_view>& parts,
                        std::initializer_list<const char*> names) {
  size_t i = 0;
  for (const char* name : names) {
    std::error_code ec;
    if (i < parts.size()) {
      std::ofstream(dir / name, std::ios::binary | std::ios::trunc)
          .write(parts[i].data(), static_cast<std::streamsize>(parts[i].size()));
    } else {
      std::filesystem::remove(dir / name, ec);
    }
    ++i;
  }
}

// One input of a tokenizer-folder target: its first parts written as `files` in the scratch folder `name`, the
// part after them (if any) a text to encode; the folder loaded as the engine loads it, and checked.
inline int run_tokenizer_folder(const char* name, std::initializer_list<const char*> files, const uint8_t* data,
                                size_t size) {
  const std::filesystem::path dir = scratch_dir() / name;
  std::filesystem::create_directories(dir);
  const auto parts = split_parts(data, size, files.size() + 1);
  write_parts(dir, parts, files);
  auto tok = BpeTokenizer::from_hf_dir(dir.string());
  if (!tok.ok()) {
    check_error(tok.status(), "BpeTokenizer::from_hf_dir");
    return 0;
  }
  check_tokenizer(**tok, parts.size() > files.size() ? parts[files.size()] : std::string_view());
  return 0;
}

}  // namespace kvshare::fuzz
