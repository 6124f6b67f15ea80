// Internal: everything a BpeTokenizer knows, filled in by a loader (hf_loader.cc, gguf_loader.cc) and then
// indexed by finalize_model(). Not part of the public API.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/flat_index.h"
#include "tokenizer/regex_splitter.h"

namespace kvshare {

// The token types GGUF stores (tokenizer.ggml.token_type), minus one: GGUF counts from 1.
enum class TokenType : uint8_t { kNormal, kUnknown, kControl, kUserDefined, kUnused, kByte };

// A piece of text that is cut out of the input before BPE and becomes one token.
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;  // matched only when encode(parse_special=true)
  bool lstrip = false;   // swallows whitespace before it
  bool rstrip = false;   // swallows whitespace after it
};

// How a word becomes its first symbols.
enum class SymbolMode {
  kByteLevel,  // each byte is the token of its byte-level character
  kChars,      // each UTF-8 character is a token, else its <0xXX> byte tokens (byte_fallback), else unk
};

enum class MergeMode {
  kRank,   // the adjacent pair with the lowest merge rank merges first
  kScore,  // the adjacent pair whose concatenation is a piece with the highest score merges first
};

struct NormalizerStep {
  enum Kind {
    kPrepend,               // `to` goes in front of the text
    kPrependUnlessPresent,  // `to` goes in front unless the text already starts with it (Metaspace)
    kReplace,               // every `from` becomes `to`
  } kind;
  std::string from;
  std::string to;
};

struct TokenizerModel {
  // ---- filled in by a loader ----
  std::vector<std::string> pieces;  // as the vocabulary spells them (byte-level alphabet, "▁", "<0x0A>")
  std::string vocab_source;  // where `pieces` were read, for errors: "model.vocab of tokenizer.json", "vocab.json"
  std::vector<TokenType> types;
  std::vector<float> scores;        // kScore only
  std::vector<std::pair<std::string, std::string>> merge_list;  // kRank, in rank order; freed by finalize
  std::vector<AddedToken> added_tokens;
  int32_t bpe_vocab_end = 0;  // ids below it are the BPE model's own vocabulary (added tokens may follow)

  SymbolMode symbol_mode = SymbolMode::kByteLevel;
  MergeMode merge_mode = MergeMode::kRank;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a word that is itself a piece becomes that token without merging
  int32_t unk_id = -1;

  std::vector<NormalizerStep> normalizer;  // applied to each stretch of text between added tokens
  bool prefix_space = false;               // ByteLevel add_prefix_space: " " before text not starting with one
  std::vector<RegexSplitter> pre_tokenizer;  // applied in order, each to every piece of the one before

  bool decode_meta_as_space = false;  // "▁" decodes to " "
  bool decode_strip_space = false;    // decoding drops one leading space

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  std::vector<int32_t> extra_eos_ids;  // from generation_config.json or GGUF eot/eom ids

  // ---- built by finalize_model ----
  std::vector<std::string> decoded;  // the bytes each token decodes to
  PieceIndex piece_to_id;            // the pieces BPE may produce (reads `pieces`)
  MergeIndex merges;
  std::array<int32_t, 256> byte_level_ids{};       // kByteLevel: the token of each byte, or -1
  std::array<int32_t, 256> byte_fallback_ids{};    // the <0xXX> token of each byte, or -1
  std::array<std::vector<int32_t>, 256> added_by_first_byte;  // indices into added_tokens, longest first
  std::vector<int32_t> eos_ids;
  // At most how many bytes of input text one token stands for, or 0 when no bound holds (BpeTokenizer::
  // min_tokens).
  double max_text_bytes_per_token = 0;
};

// Checks the loader's output and builds the lookup tables. Every loader ends with it. The indexes point into
// `model.pieces`, so the model must stay where it is (loaders hold it in a unique_ptr).
Status finalize_model(TokenizerModel& model);

// An error naming `what` unless `id` is -1 (none) or a token of a vocabulary of `vocab_size`.
Status check_token_id(int32_t id, size_t vocab_size, const char* what);

// Appends `id` to a list of end-of-generation ids unless it is -1 (none) or already there (the list keeps its
// first-seen order).
void add_eos_id(std::vector<int32_t>& ids, int32_t id);

// Pre-tokenizer regexes that models use, for GGUF's tokenizer.ggml.pre and Hugging Face's ByteLevel.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace kvshare
