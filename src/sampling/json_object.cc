#include "sampling/json_object.h"

#include <algorithm>
#include <string>

namespace kvshare {

namespace {

constexpr std::string_view kLiterals[] = {"true", "false", "null"};

int hex_digit(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }

// Whether a \u escape whose first `count` digits are `value` can still end in a code unit it may be: a low
// surrogate (DC00..DFFF) where one must follow a high one, else anything but a lone low surrogate. Checked at
// every digit, so that no digit leads into an escape that no last digit can finish.
bool escape_can_end_well(uint32_t value, int count, bool low) {
  const int shift = 4 * (4 - count);
  const uint32_t lo = value << shift, hi = lo + (1u << shift) - 1;
  if (low) return hi >= 0xDC00 && lo <= 0xDFFF;
  return lo < 0xDC00 || hi > 0xDFFF;
}

}  // namespace

bool JsonPrefix::feed(std::string_view bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonPrefix::feed(uint8_t b) {
  if (!is_json_space(b)) spaces_ = 0;  // (whitespace inside a string neither counts nor is counted)
  switch (mode_) {
    case Mode::kStart:
      if (space(b)) return true;
      return b == '{' && open(true);
    case Mode::kValue:
      return space(b) || value_start(b);
    case Mode::kArrayFirst:
      if (space(b)) return true;
      return b == ']' ? close(false) : value_start(b);
    case Mode::kObjectFirst:
      if (space(b)) return true;
      if (b == '}') return close(true);
      [[fallthrough]];
    case Mode::kKey:
      if (space(b)) return true;
      if (b != '"') return false;
      mode_ = Mode::kString;
      key_ = true;
      return true;
    case Mode::kColon:
      if (space(b)) return true;
      if (b != ':') return false;
      mode_ = Mode::kValue;
      return true;
    case Mode::kAfterValue:
      return after_value(b);
    case Mode::kDone:
      return space(b);
    case Mode::kString:
      return string_byte(b);
    case Mode::kEscape:
      if (b == 'u') {
        mode_ = Mode::kHex;
        hex_count_ = 0;
        hex_ = 0;
        return true;
      }
      if (b != '"' && b != '\\' && b != '/' && b != 'b' && b != 'f' && b != 'n' && b != 'r' && b != 't') return false;
      mode_ = Mode::kString;
      return true;
    case Mode::kHex: {
      const int d = hex_digit(b);
      if (d < 0) return false;
      hex_ = static_cast<uint16_t>(hex_ * 16 + d);
      ++hex_count_;
      if (!escape_can_end_well(hex_, hex_count_, low_surrogate_)) return false;
      if (hex_count_ < 4) return true;
      const bool high = hex_ >= 0xD800 && hex_ <= 0xDBFF;
      hex_ = 0;  // places that differ only in what came before compare equal (the memo's key)
      hex_count_ = 0;
      low_surrogate_ = high;  // a high surrogate's pair must follow at once
      mode_ = high ? Mode::kLowBackslash : Mode::kString;
      return true;
    }
    case Mode::kLowBackslash:
      if (b != '\\') return false;
      mode_ = Mode::kLowU;
      return true;
    case Mode::kLowU:
      if (b != 'u') return false;
      mode_ = Mode::kHex;
      hex_count_ = 0;
      hex_ = 0;
      return true;
    case Mode::kLiteral: {
      const std::string_view word = kLiterals[literal_];
      if (b != static_cast<uint8_t>(word[hex_count_])) return false;
      if (++hex_count_ == word.size()) {
        mode_ = Mode::kAfterValue;
        hex_count_ = 0;
        literal_ = 0;
      }
      return true;
    }
    case Mode::kMinus: case Mode::kZero: case Mode::kInt: case Mode::kDot: case Mode::kFrac:
    case Mode::kExpMark: case Mode::kExpSign: case Mode::kExp:
      return number_byte(b);
  }
  return false;
}

bool JsonPrefix::open(bool object) {
  if (depth_ == kMaxDepth) return false;
  if (object) stack_[depth_ / 64] |= uint64_t{1} << (depth_ % 64);
  ++depth_;
  mode_ = object ? Mode::kObjectFirst : Mode::kArrayFirst;
  return true;
}

bool JsonPrefix::close(bool object) {
  if (depth_ == 0 || in_object() != object) return false;
  --depth_;
  stack_[depth_ / 64] &= ~(uint64_t{1} << (depth_ % 64));  // cleared: equal places compare equal
  mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfterValue;
  return true;
}

// A value's first byte, inside an array or object (the top level is the object itself).
bool JsonPrefix::value_start(uint8_t b) {
  switch (b) {
    case '{': return open(true);
    case '[': return open(false);
    case '"': mode_ = Mode::kString; key_ = false; return true;
    case '-': mode_ = Mode::kMinus; return true;
    case '0': mode_ = Mode::kZero; return true;
    case 't': case 'f': case 'n':
      mode_ = Mode::kLiteral;
      literal_ = b == 't' ? 0 : b == 'f' ? 1 : 2;
      hex_count_ = 1;
      return true;
    default:
      if (b < '1' || b > '9') return false;
      mode_ = Mode::kInt;
      return true;
  }
}

bool JsonPrefix::after_value(uint8_t b) {
  mode_ = Mode::kAfterValue;
  if (space(b)) return true;
  if (b == ',') {
    mode_ = in_object() ? Mode::kKey : Mode::kValue;
    return true;
  }
  if (b == '}' || b == ']') return close(b == '}');
  return false;
}

// Inside a string: printable text, escapes, and UTF-8 as RFC 3629 allows it (no overlong forms, no surrogates,
// nothing past U+10FFFF), a character's bytes possibly spread over several tokens.
bool JsonPrefix::string_byte(uint8_t b) {
  if (utf8_need_ > 0) {
    if (b < utf8_lo_ || b > utf8_hi_) return false;
    --utf8_need_;
    utf8_lo_ = 0x80;
    utf8_hi_ = 0xBF;
    return true;
  }
  if (b == '"') {
    mode_ = key_ ? Mode::kColon : Mode::kAfterValue;
    key_ = false;
    return true;
  }
  if (b == '\\') {
    mode_ = Mode::kEscape;
    return true;
  }
  if (b < 0x20) return false;  // control characters must be escaped
  if (b < 0x80) return true;
  if (b >= 0xC2 && b <= 0xDF) {
    utf8_need_ = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    utf8_need_ = 2;
    if (b == 0xE0) utf8_lo_ = 0xA0;  // not overlong
    if (b == 0xED) utf8_hi_ = 0x9F;  // not a surrogate
  } else if (b >= 0xF0 && b <= 0xF4) {
    utf8_need_ = 3;
    if (b == 0xF0) utf8_lo_ = 0x90;  // not overlong
    if (b == 0xF4) utf8_hi_ = 0x8F;  // not past U+10FFFF
  } else {
    return false;
  }
  return true;
}

// A number ends at the first byte that cannot continue it; that byte is then read after the value.
bool JsonPrefix::number_byte(uint8_t b) {
  const bool digit = is_digit(b);
  const bool exp_mark = b == 'e' || b == 'E';
  switch (mode_) {
    case Mode::kMinus:
      if (!digit) return false;
      mode_ = b == '0' ? Mode::kZero : Mode::kInt;
      return true;
    case Mode::kZero:
    case Mode::kInt:
      if (digit && mode_ == Mode::kInt) return true;
      if (digit) return false;  // no leading zeros
      if (b == '.') { mode_ = Mode::kDot; return true; }
      if (exp_mark) { mode_ = Mode::kExpMark; return true; }
      return after_value(b);
    case Mode::kDot:
      if (!digit) return false;
      mode_ = Mode::kFrac;
      return true;
    case Mode::kFrac:
      if (digit) return true;
      if (exp_mark) { mode_ = Mode::kExpMark; return true; }
      return after_value(b);
    case Mode::kExpMark:
      if (b == '+' || b == '-') { mode_ = Mode::kExpSign; return true; }
      [[fallthrough]];
    case Mode::kExpSign:
      if (!digit) return false;
      mode_ = Mode::kExp;
      return true;
    case Mode::kExp:
      return digit || after_value(b);
    default:
      return false;
  }
}

Result<std::shared_ptr<const JsonObjectRules>> JsonObjectRules::make(const TokenTexts& vocab, bool whitespace) {
  // What a completion may need next from some place, one byte at a time: JSON's punctuation, the letters of the
  // literals (after "fa", say), '\\' and 'u' (after a high surrogate's escape, its pair's), a digit (after '-', '.',
  // 'e', or within a \\u escape) and 'D' (a low surrogate, \\uDD00). Other bytes only ever offer a second way on.
  std::string missing;
  auto has = [&](char c) { return !vocab.ids_of(std::string_view(&c, 1)).empty(); };
  auto note = [&](const std::string& what) { missing += (missing.empty() ? "" : " ") + what; };
  for (char c : std::string_view("{}[]\":,truefalsn\\"))
    if (!has(c)) note(std::string(1, c));
  bool digit = false;
  for (char c = '0'; c <= '9'; ++c) digit = digit || has(c);
  if (!digit) note("a digit");
  if (!has('D') && !has('d')) note("D or d");
  // A token that ends inside a character (a byte-level piece): its next bytes must each be some token's text.
  bool splits_characters = false;
  for (int32_t id = 0; id < vocab.size() && !splits_characters; ++id) {
    const std::string& t = vocab.text(id);
    for (size_t i = t.size(), back = 0; i > 0 && back < 4; --i, ++back) {
      const auto c = static_cast<uint8_t>(t[i - 1]);
      if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      splits_characters = back + 1 < length;
      break;
    }
  }
  for (int b = 0x80; splits_characters && b <= 0xBF; ++b) {
    if (!has(static_cast<char>(b))) {
      note("the byte 0x" + std::string(1, "0123456789ABCDEF"[b >> 4]) + "0123456789ABCDEF"[b & 15]);
      break;
    }
  }
  if (!missing.empty())
    return invalid_argument("json_object needs a vocabulary that writes each of JSON's characters as a token of its "
                            "own, and this model's has no token for: " + missing + "; it cannot write JSON safely");
  return std::make_shared<const JsonObjectRules>(vocab, whitespace);
}

namespace {

// shared[i]: the bytes the text of tokens[i] shares with that of tokens[i - 1] (0 for the first).
std::vector<uint16_t> shared_bytes(const TokenTexts& vocab, const std::vector<int32_t>& tokens) {
  std::vector<uint16_t> shared(tokens.size(), 0);
  for (size_t i = 1; i < tokens.size(); ++i) {
    const std::string& a = vocab.text(tokens[i - 1]);
    const std::string& b = vocab.text(tokens[i]);
    size_t k = 0;
    while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
    shared[i] = static_cast<uint16_t>(std::min<size_t>(k, UINT16_MAX));
  }
  return shared;
}

}  // namespace

JsonObjectRules::JsonObjectRules(const TokenTexts& vocab, bool whitespace) : vocab_(vocab), whitespace_(whitespace) {
  for (int32_t id = 0; id < vocab.size(); ++id)
    if (!vocab.text(id).empty()) sorted_.push_back(id);
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) {
    return vocab.text(a) != vocab.text(b) ? vocab.text(a) < vocab.text(b) : a < b;
  });
  shared_ = shared_bytes(vocab, sorted_);
  // Text that never leaves the string does the same wherever it stands in one (a key or a value, at any depth).
  // A token that leaves it and comes back (":\"\",\"") is not such text: where it lands depends on the place.
  JsonPrefix in_string;
  in_string.feed("{\"");
  for (int32_t id : sorted_) {
    JsonPrefix s = in_string;
    bool stays = true;
    for (char c : vocab.text(id)) stays = stays && s.feed(static_cast<uint8_t>(c)) && s.inside_string();
    (stays && s == in_string ? string_text_ : string_other_).push_back(id);
  }
  std::sort(string_text_.begin(), string_text_.end());
  string_other_shared_ = shared_bytes(vocab, string_other_);
}

const std::vector<int32_t>& JsonObjectRules::allowed(const JsonPrefix& state, bool drop_first_space) const {
  drop_first_space = drop_first_space && vocab_.strip_first_space();
  auto it = std::find_if(memo_.begin(), memo_.end(),
                         [&](const Memo& m) { return m.state == state && m.drop_first_space == drop_first_space; });
  if (it == memo_.end()) {
    if (memo_.size() < kMemo) memo_.emplace_back();
    it = memo_.end() - 1;  // the least recent, replaced
    it->state = state;
    it->drop_first_space = drop_first_space;
    compute(state, drop_first_space, it->tokens);
  }
  std::rotate(memo_.begin(), it, it + 1);
  return memo_.front().tokens;
}

void JsonObjectRules::compute(const JsonPrefix& state, bool drop_first_space, std::vector<int32_t>& out) const {
  out.clear();
  if (drop_first_space) {  // the first token of a completion whose text drops a leading space: each on its own
    for (int32_t id : sorted_) {
      const std::string_view t = vocab_.added_text(id, true);
      JsonPrefix s = state;
      if (!t.empty() && s.feed(t)) out.push_back(id);
    }
    std::sort(out.begin(), out.end());
    return;
  }
  if (!state.between_string_characters()) {
    walk(state, sorted_, shared_, out);
    std::sort(out.begin(), out.end());
    return;
  }
  walk(state, string_other_, string_other_shared_, out);
  std::sort(out.begin(), out.end());
  const size_t others = out.size();
  out.insert(out.end(), string_text_.begin(), string_text_.end());
  std::inplace_merge(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(others), out.end());
}

// In text order, each token's bytes are read on from the place its first bytes, shared with the token before,
// reached: the tokens are walked as a trie, and the tokens below a refused prefix are passed over at once.
void JsonObjectRules::walk(const JsonPrefix& state, const std::vector<int32_t>& tokens,
                           const std::vector<uint16_t>& shared_with_previous, std::vector<int32_t>& out) const {
  std::vector<JsonPrefix> at(vocab_.max_length() + 1, state);  // at[k]: the place after the first k bytes
  size_t known = 0;          // at[0..known] hold the previous token's places
  size_t refused = SIZE_MAX; // the previous token's byte that was refused (SIZE_MAX: none)
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = vocab_.text(tokens[i]);
    const size_t shared = shared_with_previous[i];
    if (refused != SIZE_MAX && shared > refused) continue;  // it starts with the refused bytes too
    size_t k = std::min(shared, known);
    refused = SIZE_MAX;
    for (; k < t.size(); ++k) {
      at[k + 1] = at[k];
      if (!at[k + 1].feed(static_cast<uint8_t>(t[k]))) {
        refused = k;
        break;
      }
    }
    known = k;
    if (refused == SIZE_MAX) out.push_back(tokens[i]);
  }
}

namespace {

class JsonObjectGuide final : public OutputGuide {
 public:
  JsonObjectGuide(std::shared_ptr<const JsonObjectRules> rules, bool strip_first_space)
      : rules_(std::move(rules)), state_(rules_->start()), strip_(strip_first_space) {}

  const std::vector<int32_t>& allowed(std::span<const int32_t> /*end_ids: it ends when the object closes*/) override {
    return rules_->allowed(state_, at_start_ && strip_);
  }
  void advance(int32_t token) override {
    state_.feed(rules_->vocab().added_text(token, at_start_ && strip_));  // allowed() offered it: it reads on
    at_start_ = false;
  }
  bool complete() const override { return state_.complete(); }

 private:
  std::shared_ptr<const JsonObjectRules> rules_;
  JsonPrefix state_;
  bool strip_;
  bool at_start_ = true;
};

}  // namespace

std::unique_ptr<OutputGuide> follow_json_object(std::shared_ptr<const JsonObjectRules> rules, bool strip_first_space) {
  return std::make_unique<JsonObjectGuide>(std::move(rules), strip_first_space);
}

}  // namespace kvshare
