#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <queue>

#include "tokenizer/tokenizer_model.h"
#include "tokenizer/utf8.h"

namespace kvshare {
namespace {

// End-of-turn markers of common chat models; when one is a control token it also ends generation.
constexpr const char* kEndOfTurnNames[] = {
    "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>",
    "<|end|>",       "<end_of_turn>",   "<|return|>", "<EOT>",      "</s>",
};

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// "<0x0A>" -> 10; -1 when `piece` is not a byte token's name.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

bool piece_usable_by_bpe(TokenType type, MergeMode mode) {
  switch (type) {
    case TokenType::kNormal:
    case TokenType::kUserDefined:
      return true;
    case TokenType::kByte:
    case TokenType::kUnknown:
      return mode == MergeMode::kRank;  // a tokenizer.json BPE vocabulary may merge into any of its pieces
    case TokenType::kControl:
    case TokenType::kUnused:
      return false;
  }
  return false;
}

}  // namespace

Status check_token_id(int32_t id, size_t vocab_size, const char* what) {
  if (id < -1 || id >= static_cast<int64_t>(vocab_size)) {
    return invalid_argument(std::string(what) + " id " + std::to_string(id) + " is outside the vocabulary of " +
                            std::to_string(vocab_size) + " tokens");
  }
  return Status::ok_status();
}

void add_eos_id(std::vector<int32_t>& ids, int32_t id) {
  if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
}

namespace {

// At most how many input bytes one token of `m` stands for (0: no bound). The bound needs every byte of the
// input to come out in some token: every byte has a byte-level token (GPT-2, Llama 3, Qwen2) or a <0xXX> byte
// fallback (SentencePiece models), so no byte is dropped and no run of unknown characters fuses into one
// token. Then a BPE token spells at most its piece's length of normalized text (byte-level pieces spell each
// byte with one or two bytes, "▁" stands for a space), an added token its content; and only a Replace
// normalizer to a shorter string makes normalized text shorter than the input. An added token that strips the
// whitespace beside it (lstrip/rstrip) takes any amount of it: no bound.
double text_bytes_per_token_bound(const TokenizerModel& m) {
  const auto& ids = m.symbol_mode == SymbolMode::kByteLevel ? m.byte_level_ids : m.byte_fallback_ids;
  const bool every_byte_kept = (m.symbol_mode == SymbolMode::kByteLevel || m.byte_fallback) &&
                               std::all_of(ids.begin(), ids.end(), [](int32_t id) { return id >= 0; });
  if (!every_byte_kept) return 0;
  double longest = 4;  // a character's bytes
  for (const std::string& piece : m.pieces) longest = std::max(longest, static_cast<double>(piece.size()));
  for (const AddedToken& t : m.added_tokens) {
    if (t.lstrip || t.rstrip) return 0;
    longest = std::max(longest, static_cast<double>(t.content.size()));
  }
  double shrink = 1;
  for (const NormalizerStep& step : m.normalizer) {
    if (step.kind != NormalizerStep::kReplace || step.to.size() >= step.from.size()) continue;
    if (step.to.empty()) return 0;
    shrink *= static_cast<double>(step.from.size()) / static_cast<double>(step.to.size());
  }
  return longest * shrink;
}

// Whether text holds byte `b`: tab, newline, carriage return, printable ASCII, and the bytes of the UTF-8
// characters there are (continuation bytes; lead bytes 0xC2-0xF0, of planes 0-3, and 0xF3-0xF4, of the
// special-purpose and private-use planes). Not the other ASCII control characters or DEL, not the bytes UTF-8
// never holds (0xC0, 0xC1, 0xF5-0xFF), and not 0xF1-0xF2, which lead only planes 4-11, where no character is
// assigned. Real byte-level vocabularies lack some of those: GPT-NeoX's and MPT's 0xC0, 0xC1 and 0xF5-0xFF,
// StarCoder's also 0xF1, Falcon's also 0xF2 and 14 control characters.
bool text_holds_byte(int b) {
  if (b < 0x80) return b == '\t' || b == '\n' || b == '\r' || (b >= 0x20 && b < 0x7F);
  return b <= 0xBF || (b >= 0xC2 && b <= 0xF0) || b == 0xF3 || b == 0xF4;
}

// A byte-level vocabulary spells text with the tokens of its byte symbols; a byte without one is dropped from
// the text, without a word (a vocab.json with no single-character token encoded "Once upon a time" to nothing).
// Refused when a byte that text holds has no token (text_holds_byte).
Status check_byte_alphabet(const TokenizerModel& m) {
  int missing = 0, missing_in_text = 0, example = -1;
  for (int i = 0; i < 256; ++i) {
    const int b = (i + 0x20) % 256;  // the example: printable ASCII first
    if (m.byte_level_ids[b] >= 0) continue;
    ++missing;
    if (!text_holds_byte(b)) continue;
    ++missing_in_text;
    if (example < 0) example = b;
  }
  if (missing_in_text == 0) return Status::ok_status();
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02X", example);
  const std::string source = m.vocab_source.empty() ? "" : " (" + m.vocab_source + ")";
  return invalid_argument("the byte-level vocabulary" + source + " has no token for " + std::to_string(missing) +
                          " of the 256 byte symbols, " + std::to_string(missing_in_text) +
                          " of them for bytes that text holds, e.g. byte " + hex + " (symbol \"" +
                          byte_level_chars()[example] + "\"): encoding would drop those bytes from the text without a "
                          "word. A byte-level BPE vocabulary needs a token for each byte's symbol");
}

}  // namespace

Status finalize_model(TokenizerModel& m) {
  const size_t n = m.pieces.size();
  if (n == 0) return invalid_argument("the vocabulary is empty");
  if (n > static_cast<size_t>(kMaxVocabSize))
    return invalid_argument("the vocabulary has " + std::to_string(n) + " tokens, more than the limit of " +
                            std::to_string(kMaxVocabSize));
  if (m.types.empty()) m.types.assign(n, TokenType::kNormal);
  if (m.types.size() != n) {
    return invalid_argument("token types: " + std::to_string(m.types.size()) + " entries for " +
                            std::to_string(n) + " tokens");
  }
  // Only special tokens (a tokenizer.json whose "model.vocab" is empty beside its added tokens, a GGUF of empty
  // strings): every text encoded to nothing, and generation ran from BOS alone without a word.
  bool any_text_token = false;
  for (size_t id = 0; id < n && !any_text_token; ++id)
    any_text_token = !m.pieces[id].empty() && (m.types[id] == TokenType::kNormal || m.types[id] == TokenType::kByte ||
                                               m.types[id] == TokenType::kUserDefined);
  if (!any_text_token)
    return invalid_argument("the vocabulary has no token that text can be encoded to (" + std::to_string(n) +
                            " tokens, all special, unused or empty)");
  if (m.merge_mode == MergeMode::kScore && m.scores.size() != n) {
    return invalid_argument("token scores: " + std::to_string(m.scores.size()) + " entries for " +
                            std::to_string(n) + " tokens");
  }
  for (float& score : m.scores) {
    if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();  // the heap needs an ordering
  }
  auto check_id = [n](int32_t id, const char* what) { return check_token_id(id, n, what); };
  KV_RETURN_IF_ERROR(check_id(m.bos_id, "BOS token"));
  KV_RETURN_IF_ERROR(check_id(m.eos_id, "EOS token"));
  KV_RETURN_IF_ERROR(check_id(m.unk_id, "unknown token"));
  for (int32_t id : m.extra_eos_ids) KV_RETURN_IF_ERROR(check_id(id, "end-of-generation token"));
  for (const AddedToken& t : m.added_tokens) {
    if (t.id < 0) return invalid_argument("added token \"" + t.content + "\" has a negative id");
    KV_RETURN_IF_ERROR(check_id(t.id, "added token"));
  }

  // Which pieces BPE may produce.
  std::vector<bool> usable(n);
  for (size_t id = 0; id < n; ++id) usable[id] = piece_usable_by_bpe(m.types[id], m.merge_mode);
  m.piece_to_id.build(m.pieces, usable);

  m.byte_level_ids.fill(-1);
  m.byte_fallback_ids.fill(-1);
  if (m.symbol_mode == SymbolMode::kByteLevel) {
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) {
      m.byte_level_ids[b] = m.piece_to_id.find(chars[b]);
    }
    KV_RETURN_IF_ERROR(check_byte_alphabet(m));
  }
  for (size_t id = 0; id < n; ++id) {
    const TokenType type = m.types[id];
    if (type != TokenType::kByte && type != TokenType::kNormal) continue;
    const int b = parse_byte_piece(m.pieces[id]);
    if (b >= 0 && m.byte_fallback_ids[b] < 0) m.byte_fallback_ids[b] = static_cast<int32_t>(id);
  }

  // What each token decodes to.
  m.decoded.assign(n, std::string());
  for (size_t id = 0; id < n; ++id) {
    const std::string& piece = m.pieces[id];
    const TokenType type = m.types[id];
    const int byte = (type == TokenType::kByte || m.byte_fallback) ? parse_byte_piece(piece) : -1;
    if (type == TokenType::kControl || type == TokenType::kUserDefined || type == TokenType::kUnknown) {
      m.decoded[id] = piece;
    } else if (byte >= 0) {
      m.decoded[id] = std::string(1, static_cast<char>(byte));
    } else if (m.symbol_mode == SymbolMode::kByteLevel) {
      m.decoded[id] = byte_level_decode(piece);
    } else {
      m.decoded[id] = piece;
      if (m.decode_meta_as_space) replace_all(m.decoded[id], "\xE2\x96\x81", " ");
    }
  }
  for (const AddedToken& t : m.added_tokens) m.decoded[t.id] = t.content;

  // Merges, as pairs of ids; a merge whose parts or result are not pieces can never apply.
  m.merges = MergeIndex();
  m.merges.reserve(m.merge_list.size());
  std::string joined;
  int32_t rank = 0;
  for (const auto& [left, right] : m.merge_list) {
    const int32_t this_rank = rank++;
    const int32_t l = m.piece_to_id.find(left);
    const int32_t r = m.piece_to_id.find(right);
    if (l < 0 || r < 0) continue;
    joined.assign(left).append(right);
    const int32_t merged = m.piece_to_id.find(joined);
    if (merged >= 0) m.merges.insert(l, r, MergeInfo{this_rank, merged});
  }
  std::vector<std::pair<std::string, std::string>>().swap(m.merge_list);
  if (m.merge_mode == MergeMode::kRank && m.merges.size() == 0 && n > 256 && m.symbol_mode == SymbolMode::kByteLevel) {
    return invalid_argument("the BPE vocabulary has no usable merges");
  }

  for (auto& bucket : m.added_by_first_byte) bucket.clear();
  for (size_t i = 0; i < m.added_tokens.size(); ++i) {
    const std::string& c = m.added_tokens[i].content;
    if (!c.empty()) m.added_by_first_byte[static_cast<uint8_t>(c[0])].push_back(static_cast<int32_t>(i));
  }
  for (auto& bucket : m.added_by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
      return m.added_tokens[a].content.size() > m.added_tokens[b].content.size();
    });
  }

  m.max_text_bytes_per_token = text_bytes_per_token_bound(m);

  m.eos_ids.clear();
  add_eos_id(m.eos_ids, m.eos_id);
  for (int32_t id : m.extra_eos_ids) add_eos_id(m.eos_ids, id);
  std::vector<bool> control(n);
  for (size_t id = 0; id < n; ++id) control[id] = m.types[id] == TokenType::kControl;
  PieceIndex control_index;
  control_index.build(m.pieces, control);
  for (const char* name : kEndOfTurnNames) add_eos_id(m.eos_ids, control_index.find(name));
  return Status::ok_status();
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<TokenizerModel> model) : model_(std::move(model)) {}
BpeTokenizer::~BpeTokenizer() = default;

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(model_->pieces.size()); }
int32_t BpeTokenizer::bos_id() const { return model_->bos_id; }
int32_t BpeTokenizer::eos_id() const { return model_->eos_id; }
std::vector<int32_t> BpeTokenizer::eos_ids() const { return model_->eos_ids; }
bool BpeTokenizer::adds_bos() const { return model_->add_bos && model_->bos_id >= 0; }
bool BpeTokenizer::adds_eos() const { return model_->add_eos && model_->eos_id >= 0; }
bool BpeTokenizer::strips_leading_space() const { return model_->decode_strip_space; }

int64_t BpeTokenizer::min_tokens(size_t text_bytes) const {
  const double per_token = model_->max_text_bytes_per_token;
  return per_token > 0 ? static_cast<int64_t>(static_cast<double>(text_bytes) / per_token) : 0;
}

bool BpeTokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  const TokenType type = model_->types[id];
  return type == TokenType::kControl || type == TokenType::kUnknown;
}

std::string BpeTokenizer::token_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return model_->decoded[id];
}

std::string BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return model_->pieces[id];
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const TokenizerModel& m = *model_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && adds_bos()) out.push_back(m.bos_id);

  // Cut out added tokens: at each position the longest one that starts there (leftmost-longest).
  size_t stretch_begin = 0, pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (int32_t index : m.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& t = m.added_tokens[index];
      if (t.special && !parse_special) continue;
      if (text.compare(pos, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t stretch_end = pos;
    if (hit->lstrip) {
      while (stretch_end > stretch_begin && is_ascii_space(text[stretch_end - 1])) --stretch_end;
    }
    encode_text(text.substr(stretch_begin, stretch_end - stretch_begin), out);
    out.push_back(hit->id);
    pos += hit->content.size();
    if (hit->rstrip) {
      while (pos < text.size() && is_ascii_space(text[pos])) ++pos;
    }
    stretch_begin = pos;
  }
  encode_text(text.substr(stretch_begin), out);

  if (add_special && adds_eos()) out.push_back(m.eos_id);
  return out;
}

void BpeTokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const TokenizerModel& m = *model_;
  std::string normalized;
  std::string_view view = text;
  if (!m.normalizer.empty() || m.prefix_space) {
    normalized.assign(text);
    for (const NormalizerStep& step : m.normalizer) {
      switch (step.kind) {
        case NormalizerStep::kPrepend:
          normalized.insert(0, step.to);
          break;
        case NormalizerStep::kPrependUnlessPresent:
          if (!normalized.starts_with(step.to)) normalized.insert(0, step.to);
          break;
        case NormalizerStep::kReplace:
          replace_all(normalized, step.from, step.to);
          break;
      }
    }
    if (m.prefix_space && normalized[0] != ' ') normalized.insert(0, 1, ' ');
    view = normalized;
  }
  if (m.pre_tokenizer.empty()) {
    encode_word(view, out);
    return;
  }
  std::vector<std::string_view> words{view}, next;
  for (const RegexSplitter& splitter : m.pre_tokenizer) {
    next.clear();
    for (std::string_view w : words) splitter.split(w, next);
    words.swap(next);
  }
  for (std::string_view w : words) encode_word(w, out);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (model_->merge_mode == MergeMode::kScore) {
    merge_by_score(word, out);
  } else {
    merge_by_rank(word, out);
  }
}

// BPE as GPT-2 and Hugging Face define it: start from single symbols, then repeatedly merge the adjacent
// pair whose merge has the lowest rank (the leftmost such pair on ties). A heap of candidate pairs keeps
// this O(n log n); a candidate is stale once either of its symbols has changed.
void BpeTokenizer::merge_by_rank(std::string_view word, std::vector<int32_t>& out) const {
  const TokenizerModel& m = *model_;
  const bool byte_level = m.symbol_mode == SymbolMode::kByteLevel;
  if (m.ignore_merges) {
    const int32_t id = byte_level ? m.piece_to_id.find(byte_level_encode(word)) : m.piece_to_id.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  constexpr int32_t kDead = -2;  // the id of a symbol merged into its left neighbour
  struct Symbol {
    int32_t id;  // -1: a byte or character with no token (dropped from the output)
    int32_t prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add_symbol = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  };
  if (byte_level) {
    for (char c : word) add_symbol(m.byte_level_ids[static_cast<uint8_t>(c)]);
  } else {
    bool previous_unk = false;
    for (size_t pos = 0; pos < word.size();) {
      const Utf8Char c = scan_utf8_char(word, pos);
      const std::string_view ch = word.substr(pos, c.length);
      pos += c.length;
      if (const int32_t id = m.piece_to_id.find(ch); id >= 0) {
        add_symbol(id);
        previous_unk = false;
        continue;
      }
      const bool all_bytes = m.byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char b) {
        return m.byte_fallback_ids[static_cast<uint8_t>(b)] >= 0;
      });
      if (all_bytes) {
        for (char b : ch) add_symbol(m.byte_fallback_ids[static_cast<uint8_t>(b)]);
        previous_unk = false;
      } else if (!(m.fuse_unk && previous_unk)) {
        add_symbol(m.unk_id);
        previous_unk = true;
      }
    }
  }

  struct Candidate {
    int32_t rank, left, right, left_id, right_id, merged_id;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> heap(later);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t left_id = symbols[left].id, right_id = symbols[right].id;
    if (left_id < 0 || right_id < 0) return;
    const MergeInfo* merge = m.merges.find(left_id, right_id);
    if (merge != nullptr) heap.push({merge->rank, left, right, left_id, right_id, merge->merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.id != c.left_id || left.next != c.right || right.id != c.right_id) continue;  // stale
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = kDead;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].id >= 0) out.push_back(symbols[i].id);
  }
}

// SentencePiece's BPE: start from characters, then repeatedly merge the adjacent pair whose concatenation
// is a piece with the highest score (the leftmost on ties). Symbols are spans of `word`, so a pair's
// concatenation is just the span covering both.
void BpeTokenizer::merge_by_score(std::string_view word, std::vector<int32_t>& out) const {
  const TokenizerModel& m = *model_;
  struct Symbol {
    uint32_t begin, length;  // length 0: merged into its left neighbour
    int32_t prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t pos = 0; pos < word.size();) {
    const size_t length = scan_utf8_char(word, pos).length;
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(length), index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
    pos += length;
  }

  struct Candidate {
    float score;
    int32_t left, right;
    uint32_t length;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t length = symbols[left].length + symbols[right].length;
    const int32_t id = m.piece_to_id.find(word.substr(symbols[left].begin, length));
    if (id >= 0) heap.push({m.scores[id], left, right, length});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.length == 0 || right.length == 0 || left.next != c.right || left.length + right.length != c.length) {
      continue;  // stale
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    consider(left.prev, c.left);
    consider(c.left, left.next);
  }
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = word.substr(symbols[i].begin, symbols[i].length);
    if (const int32_t id = m.piece_to_id.find(piece); id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char b : piece) {  // a character with no piece of its own
      const int32_t id = m.byte_fallback_ids[static_cast<uint8_t>(b)];
      if (id >= 0) {
        out.push_back(id);
      } else if (m.unk_id >= 0) {
        out.push_back(m.unk_id);
        break;
      }
    }
  }
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string raw;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && is_special(id)) continue;
    raw += model_->decoded[id];
  }
  if (strips_leading_space() && !raw.empty() && raw[0] == ' ') raw.erase(0, 1);
  return sanitize_utf8(raw);
}

IncrementalDecoder::IncrementalDecoder(const BpeTokenizer& tokenizer, bool skip_special, bool after_text)
    : tokenizer_(&tokenizer), skip_special_(skip_special), at_start_(!after_text) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return "";
  std::string piece = tokenizer_->token_piece(id);
  if (piece.empty()) return "";
  if (at_start_) {
    at_start_ = false;
    if (tokenizer_->strips_leading_space() && piece[0] == ' ') piece.erase(0, 1);
  }
  pending_ += piece;
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const Utf8Char c = scan_utf8_char(pending_, pos);
    if (c.kind == Utf8Char::kIncomplete) break;  // wait for the rest of this character
    if (c.kind == Utf8Char::kComplete) {
      out.append(pending_, pos, c.length);
    } else {
      out.append(kReplacementChar);
    }
    pos += c.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvshare
