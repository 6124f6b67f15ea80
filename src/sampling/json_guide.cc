#include "sampling/json_guide.h"

#include "sampling/json_pattern.h"

#include <algorithm>
#include <bit>
#include <string>

namespace kvshare {

namespace {

int hex_digit(uint8_t b) {
  if (b >= '0' && b <= '9') return b - '0';
  if (b >= 'a' && b <= 'f') return b - 'a' + 10;
  if (b >= 'A' && b <= 'F') return b - 'A' + 10;
  return -1;
}

bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }

std::string byte_name(uint8_t b) {
  if (b > 0x20 && b < 0x7F) return std::string(1, static_cast<char>(b));
  return std::string("the byte 0x") + "0123456789ABCDEF"[b >> 4] + "0123456789ABCDEF"[b & 15];
}

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

JsonPath& JsonPath::operator=(const JsonPath& other) {
  schema_ = other.schema_;  // (not forks_: it belongs to the feed() running)
  whitespace_ = other.whitespace_;
  done_ = other.done_;
  spaces_ = other.spaces_;
  number_ = other.number_;
  value_text_ = other.value_text_;
  string_ = other.string_;
  depth_ = other.depth_;
  containers_ = other.containers_;
  std::copy(other.frames_, other.frames_ + other.depth_, frames_);
  return *this;
}

bool JsonPath::operator==(const JsonPath& other) const {
  return schema_ == other.schema_ && whitespace_ == other.whitespace_ && done_ == other.done_ &&
         spaces_ == other.spaces_ && number_ == other.number_ && value_text_ == other.value_text_ &&
         string_ == other.string_ &&
         depth_ == other.depth_ && containers_ == other.containers_ &&
         std::equal(frames_, frames_ + depth_, other.frames_);
}

std::optional<uint32_t> JsonPath::string_room() const {
  if (depth_ == 0 || top().phase != Phase::kString || !string_.between_characters()) return std::nullopt;
  if (top().node < 0) return UINT32_MAX;  // a key of any text
  const JsonSchema::Node& n = node_of(top());
  if (n.format != StringFormat::kNone || n.pattern) return std::nullopt;  // (not any text: each character is checked)
  return n.max_length == UINT32_MAX ? UINT32_MAX : n.max_length - top().a;
}

const std::bitset<128>* JsonPath::pattern_safe_characters() const {
  if (depth_ == 0 || top().phase != Phase::kString || top().node < 0) return nullptr;
  const JsonSchema::Node& n = node_of(top());
  return n.pattern ? &n.pattern->safe_characters(value_text_) : nullptr;
}

uint32_t JsonPath::string_text_characters(std::string_view text) {
  StringLexer lexer;
  uint32_t characters = 0;
  for (char c : text) characters += lexer.feed(static_cast<uint8_t>(c)) == StringLexer::Step::kCharacter;
  return characters;
}

bool JsonPath::feed(uint8_t b, std::vector<JsonPath>& forks) {
  forks_ = &forks;
  const bool ok = read(b);
  forks_ = nullptr;
  return ok;
}

bool JsonPath::read(uint8_t b) {
  if (!is_json_space(b)) spaces_ = 0;  // (whitespace inside a string neither counts nor is counted)
  if (depth_ == 0) return done_ ? space(b) : space(b) || begin(schema_->root(), b);
  Frame& f = top();
  switch (f.phase) {
    case Phase::kObjectFirst: case Phase::kKey: case Phase::kKeyText: case Phase::kColon: case Phase::kMemberValue:
    case Phase::kObjectAfter:
      return object_byte(f, b);
    case Phase::kArrayFirst: case Phase::kItem: case Phase::kArrayAfter:
      return array_byte(f, b);
    case Phase::kString:
      return string_byte(f, b);
    case Phase::kNumber:
      return number_byte(f, b);
    case Phase::kLiteral:
      return literal_byte(f, b);
  }
  return false;
}

bool JsonPath::begin(int32_t node, uint8_t b) {
  const JsonSchema::Node* n = &schema_->node(node);
  while (n->kind == JsonSchema::Kind::kUnion) {  // the alternative this byte begins, while there is one
    if (!n->first.test(b)) return false;
    auto begins = [&](int32_t alt) { return schema_->node(alt).first.test(b); };
    auto first = std::find_if(n->alternatives.begin(), n->alternatives.end(), begins);
    if (std::find_if(first + 1, n->alternatives.end(), begins) != n->alternatives.end()) return fork(node, b);
    node = *first;
    n = &schema_->node(node);
  }
  return begin_value(node, b);
}

// Each alternative `b` may begin is begun on a copy of the place before it: the first to take it goes on here, the
// others are forks, while there is room for them (a schema's union of unions, each alternative twice, would
// otherwise fork 2^n ways on one byte).
bool JsonPath::fork(int32_t node, uint8_t b) {
  std::vector<int32_t> alternatives;
  std::vector<bool> seen(schema_->size());
  alternatives_of(node, b, alternatives, seen);
  const JsonPath before = *this;
  bool begun = false;
  for (int32_t alt : alternatives) {
    if (begun && (forks_ == nullptr || forks_->size() >= kMaxForks)) break;
    JsonPath p = before;
    if (!p.begin_value(alt, b)) continue;
    if (!begun) {
      *this = p;
      begun = true;
    } else {
      forks_->push_back(p);
    }
  }
  return begun;
}

// The alternatives of `node` that may begin with `b`, unions within it taken apart, in the schema's order, each
// once (a node reached by two ways, such as one $ref'd twice, is one alternative).
void JsonPath::alternatives_of(int32_t node, uint8_t b, std::vector<int32_t>& out, std::vector<bool>& seen) const {
  if (seen[static_cast<size_t>(node)]) return;
  seen[static_cast<size_t>(node)] = true;
  const JsonSchema::Node& n = schema_->node(node);
  if (n.kind != JsonSchema::Kind::kUnion) {
    out.push_back(node);
    return;
  }
  for (int32_t alt : n.alternatives)
    if (schema_->node(alt).first.test(b)) alternatives_of(alt, b, out, seen);
}

bool JsonPath::begin_value(int32_t node, uint8_t b) {
  const JsonSchema::Node* n = &schema_->node(node);
  if (!fits(node)) return false;  // (a string, number or literal always does)
  switch (n->kind) {
    case JsonSchema::Kind::kObject: return b == '{' && push(node, Phase::kObjectFirst);
    case JsonSchema::Kind::kArray: return b == '[' && push(node, Phase::kArrayFirst);
    case JsonSchema::Kind::kString:
      if (b != '"' || !push(node, Phase::kString)) return false;
      if (n->pattern) value_text_ = n->pattern->start();
      return true;
    case JsonSchema::Kind::kNumber: return push(node, Phase::kNumber) && number_byte(top(), b);
    case JsonSchema::Kind::kLiteral: return push(node, Phase::kLiteral) && literal_byte(top(), b);
    case JsonSchema::Kind::kUnion: break;
  }
  return false;
}

bool JsonPath::push(int32_t node, Phase phase) {
  if (phase == Phase::kObjectFirst || phase == Phase::kArrayFirst) {
    if (containers_ == kMaxDepth) return false;
    ++containers_;
  }
  frames_[depth_++] = Frame{node, phase, 0, 0, 0};
  return true;
}

void JsonPath::pop() {
  const Phase phase = top().phase;
  if (phase != Phase::kString && phase != Phase::kNumber && phase != Phase::kLiteral) --containers_;
  --depth_;
  done_ = depth_ == 0;
  number_ = Number::kStart;  // places that differ only in what came before compare equal (the memo's key)
  value_text_.clear();
  string_ = StringLexer();
}

bool JsonPath::pop_and_refeed(uint8_t b) {
  pop();
  return read(b);
}

bool JsonPath::object_byte(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = node_of(f);
  const bool any_keys = n.other_values >= 0;
  // '}' may close it once no key it requires is still to come (keys are written in the schema's order)
  auto may_close = [&] {
    for (size_t i = f.next; i < n.properties.size(); ++i)
      if (n.properties[i].required) return false;
    return true;
  };
  switch (f.phase) {
    case Phase::kObjectFirst:
      if (space(b)) return true;
      if (b == '}') {
        if (!may_close()) return false;
        pop();
        return true;
      }
      [[fallthrough]];
    case Phase::kKey:
      if (space(b)) return true;
      if (b != '"') return false;
      f.phase = Phase::kColon;
      if (any_keys) return fits(n.other_values) && push(-1, Phase::kString);  // a key of any text
      f.phase = Phase::kKeyText;
      f.a = next_key(n, f.next);  // every key's text begins with '"'
      f.b = 1;
      return f.a < n.properties.size();
    case Phase::kKeyText:
      return key_byte(f, b);
    case Phase::kColon:
      if (space(b)) return true;
      if (b != ':') return false;
      f.phase = Phase::kMemberValue;
      return true;
    case Phase::kMemberValue: {
      if (space(b)) return true;
      const int32_t value = any_keys ? n.other_values : n.properties[f.a].value;
      f.phase = Phase::kObjectAfter;
      f.a = 0;
      return begin(value, b);
    }
    case Phase::kObjectAfter:
      if (space(b)) return true;
      if (b == ',') {
        f.phase = Phase::kKey;
        return any_keys ? fits(n.other_values) : next_key(n, f.next) < n.properties.size();
      }
      if (b != '}' || !may_close()) return false;
      pop();
      return true;
    default:
      return false;
  }
}

// The first property from `from` whose key may be written here: up to the first required one, and whose value
// can close within kMaxDepth (a required one always can: the object was begun only if they all fit).
uint32_t JsonPath::next_key(const JsonSchema::Node& n, uint32_t from) const {
  for (uint32_t j = from; j < n.properties.size(); ++j) {
    if (fits(n.properties[j].value)) return j;
    if (n.properties[j].required) break;
  }
  return static_cast<uint32_t>(n.properties.size());
}

// A key the schema names: one of the properties from the first not yet written up to the first required one.
bool JsonPath::key_byte(Frame& f, uint8_t b) {
  const std::vector<JsonSchema::Property>& properties = node_of(f).properties;
  const std::string_view read = std::string_view(properties[f.a].key).substr(0, f.b);
  for (size_t j = f.a; j < properties.size(); ++j) {
    const std::string_view key = properties[j].key;
    if (key.size() > read.size() && static_cast<uint8_t>(key[read.size()]) == b && key.starts_with(read) &&
        fits(properties[j].value)) {
      f.a = static_cast<uint32_t>(j);
      if (++f.b == key.size()) {  // its closing quote (no key's text begins another's)
        f.next = f.a + 1;
        f.b = 0;
        f.phase = Phase::kColon;
      }
      return true;
    }
    if (properties[j].required) break;
  }
  return false;
}

bool JsonPath::array_byte(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = node_of(f);
  switch (f.phase) {
    case Phase::kArrayFirst:
      if (space(b)) return true;
      if (b == ']') {
        if (n.min_items > 0) return false;
        pop();
        return true;
      }
      [[fallthrough]];
    case Phase::kItem:
      if (space(b)) return true;
      if (f.next >= n.max_items) return false;
      // counted as far as the bounds need, so that places past minItems compare equal when there is no maximum
      f.next = n.max_items == UINT32_MAX ? std::min(f.next + 1, n.min_items) : f.next + 1;
      f.phase = Phase::kArrayAfter;
      return begin(n.items, b);
    case Phase::kArrayAfter:
      if (space(b)) return true;
      if (b == ',') {
        f.phase = Phase::kItem;
        return f.next < n.max_items && fits(n.items);
      }
      if (b != ']' || f.next < n.min_items) return false;
      pop();
      return true;
    default:
      return false;
  }
}

bool JsonPath::string_byte(Frame& f, uint8_t b) {
  if (f.node >= 0 && (node_of(f).format != StringFormat::kNone || node_of(f).pattern)) return checked_byte(f, b);
  const uint32_t min_length = f.node < 0 ? 0 : node_of(f).min_length;
  const uint32_t max_length = f.node < 0 ? UINT32_MAX : node_of(f).max_length;
  if (string_.between_characters()) {
    if (b == '"') {
      if (f.a < min_length) return false;
      pop();
      return true;
    }
    if (f.a >= max_length) return false;
  }
  const StringLexer::Step step = string_.feed(b);
  if (step == StringLexer::Step::kCharacter)  // counted as far as the lengths need (as items are)
    f.a = max_length == UINT32_MAX ? std::min(f.a + 1, min_length) : f.a + 1;
  return step != StringLexer::Step::kRefused;
}

// A string of a format (a date, a time, a UUID) or a pattern: its characters alone, no escapes, each one where some
// text of the format or that the pattern matches still begins with what was read; it closes once it is a whole one.
// (Its lengths fit the format's, and a pattern has none beside it: the compiler refuses others.)
bool JsonPath::checked_byte(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = node_of(f);
  if (n.pattern) {  // value_text_: the pattern's states (set when the string began)
    if (b != '"') return n.pattern->step(value_text_, static_cast<char>(b));
    if (!n.pattern->matches(value_text_)) return false;
  } else if (b != '"') {  // value_text_: the text read
    value_text_ += static_cast<char>(b);
    return format_reachable(n.format, value_text_);
  } else if (!format_complete(n.format, value_text_)) {
    return false;
  }
  pop();
  return true;
}

JsonPath::StringLexer::Step JsonPath::StringLexer::feed(uint8_t b) {
  switch (mode) {
    case 0:
      if (utf8_need > 0) {
        if (b < utf8_lo || b > utf8_hi) return Step::kRefused;
        utf8_lo = 0x80;
        utf8_hi = 0xBF;
        return --utf8_need == 0 ? Step::kCharacter : Step::kPending;
      }
      if (b == '\\') {
        mode = 1;
        return Step::kPending;
      }
      if (b < 0x20) return Step::kRefused;  // control characters must be escaped
      if (b < 0x80) return Step::kCharacter;
      if (b >= 0xC2 && b <= 0xDF) {
        utf8_need = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        utf8_need = 2;
        if (b == 0xE0) utf8_lo = 0xA0;  // not overlong
        if (b == 0xED) utf8_hi = 0x9F;  // not a surrogate
      } else if (b >= 0xF0 && b <= 0xF4) {
        utf8_need = 3;
        if (b == 0xF0) utf8_lo = 0x90;  // not overlong
        if (b == 0xF4) utf8_hi = 0x8F;  // not past U+10FFFF
      } else {
        return Step::kRefused;
      }
      return Step::kPending;
    case 1:  // after '\'
      if (b == 'u') {
        mode = 2;
        return Step::kPending;
      }
      if (b != '"' && b != '\\' && b != '/' && b != 'b' && b != 'f' && b != 'n' && b != 'r' && b != 't')
        return Step::kRefused;
      mode = 0;
      return Step::kCharacter;
    case 2: {  // \u's digits
      const int d = hex_digit(b);
      if (d < 0) return Step::kRefused;
      hex = static_cast<uint16_t>(hex * 16 + d);
      ++hex_count;
      if (!escape_can_end_well(hex, hex_count, low_surrogate)) return Step::kRefused;
      if (hex_count < 4) return Step::kPending;
      const bool high = hex >= 0xD800 && hex <= 0xDBFF;
      hex = 0;  // places that differ only in what came before compare equal (the memo's key)
      hex_count = 0;
      low_surrogate = high;  // a high surrogate's pair must follow at once
      mode = high ? 3 : 0;
      return high ? Step::kPending : Step::kCharacter;
    }
    case 3:  // a low surrogate's '\'
      if (b != '\\') return Step::kRefused;
      mode = 4;
      return Step::kPending;
    default:  // ... and its 'u'
      if (b != 'u') return Step::kRefused;
      mode = 2;
      return Step::kPending;
  }
}

// A number ends at the first byte that cannot continue it; that byte is then read by what holds the number. A
// bounded one is read on only where some number within its range begins with its text, and ends only within it.
bool JsonPath::number_byte(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = node_of(f);
  const std::optional<NumberRange>& range = n.range;
  Number next = number_;
  switch (number_step(next, b, !n.integer, !range.has_value())) {
    case NumberStep::kRefused:
      return false;
    case NumberStep::kEnd:
      if (range.has_value() && f.b == 0 && !range->holds(value_text_)) return false;
      return pop_and_refeed(b);
    case NumberStep::kOn:
      break;
  }
  number_ = next;
  if (!range.has_value()) return true;
  if (next == Number::kFrac && ++f.a > range->fraction_digits()) return false;
  if (f.b == 1) return true;  // every number it may become lies within
  value_text_ += static_cast<char>(b);
  if (!range->reachable(value_text_)) return false;
  if (range->covers(value_text_)) {
    f.b = 1;
    value_text_.clear();
  }
  return true;
}

// -? (0|[1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?: `number` after `b`.
JsonPath::NumberStep JsonPath::number_step(Number& number, uint8_t b, bool fraction, bool exponent) {
  const bool digit = is_digit(b);
  const bool exp_mark = fraction && exponent && (b == 'e' || b == 'E');
  auto to = [&](Number next) {
    number = next;
    return NumberStep::kOn;
  };
  switch (number) {
    case Number::kStart:
      if (b == '-') return to(Number::kMinus);
      [[fallthrough]];
    case Number::kMinus:
      if (!digit) return NumberStep::kRefused;
      return to(b == '0' ? Number::kZero : Number::kInt);
    case Number::kZero:
    case Number::kInt:
      if (digit) return number == Number::kInt ? to(Number::kInt) : NumberStep::kRefused;  // no leading zeros
      if (fraction && b == '.') return to(Number::kDot);
      if (exp_mark) return to(Number::kExpMark);
      return NumberStep::kEnd;
    case Number::kDot:
      return digit ? to(Number::kFrac) : NumberStep::kRefused;
    case Number::kFrac:
      if (digit) return to(Number::kFrac);
      if (exp_mark) return to(Number::kExpMark);
      return NumberStep::kEnd;
    case Number::kExpMark:
      if (b == '+' || b == '-') return to(Number::kExpSign);
      [[fallthrough]];
    case Number::kExpSign:
      return digit ? to(Number::kExp) : NumberStep::kRefused;
    case Number::kExp:
      return digit ? to(Number::kExp) : NumberStep::kEnd;
  }
  return NumberStep::kRefused;
}

// One of the texts of an enum, a const, true, false or null (sorted: those that begin with what was read are
// together, the shortest first).
bool JsonPath::literal_byte(Frame& f, uint8_t b) {
  const std::vector<std::string>& texts = node_of(f).texts;
  const std::string_view read = std::string_view(texts[f.a]).substr(0, f.b);
  for (size_t j = f.a; j < texts.size() && std::string_view(texts[j]).starts_with(read); ++j) {
    const std::string_view text = texts[j];
    if (text.size() <= read.size() || static_cast<uint8_t>(text[read.size()]) != b) continue;
    f.a = static_cast<uint32_t>(j);
    ++f.b;
    // whole, and no other text goes on from it ("1" in [1, 12] waits for the byte after it)
    if (text.size() == f.b && !(j + 1 < texts.size() && std::string_view(texts[j + 1]).starts_with(text))) pop();
    return true;
  }
  // no text goes on with this byte: the value ended before it, if a text is whole here (it sorts first)
  return texts[f.a].size() == read.size() && pop_and_refeed(b);
}

bool JsonPrefix::feed(uint8_t b) {
  std::vector<JsonPath> forks;  // (no allocation unless a union's alternatives begin alike)
  size_t kept = 0;
  for (size_t i = 0; i < paths_.size(); ++i) {
    if (!paths_[i].feed(b, forks)) continue;
    if (kept != i) paths_[kept] = paths_[i];
    ++kept;
  }
  paths_.erase(paths_.begin() + static_cast<std::ptrdiff_t>(kept), paths_.end());
  if (forks.empty() && paths_.size() <= 1) return !paths_.empty();
  // Ways that meet again (the alternatives' values closed alike) are one.
  for (JsonPath& p : forks) paths_.push_back(std::move(p));
  kept = 0;
  for (size_t i = 0; i < paths_.size() && kept < kMaxPaths; ++i) {
    if (std::find(paths_.begin(), paths_.begin() + static_cast<std::ptrdiff_t>(kept), paths_[i]) !=
        paths_.begin() + static_cast<std::ptrdiff_t>(kept))
      continue;
    if (kept != i) paths_[kept] = paths_[i];
    ++kept;
  }
  paths_.erase(paths_.begin() + static_cast<std::ptrdiff_t>(kept), paths_.end());
  return true;
}

bool JsonPrefix::feed(std::string_view bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonPrefix::complete() const {
  return std::any_of(paths_.begin(), paths_.end(), [](const JsonPath& p) { return p.complete(); });
}

std::optional<uint32_t> JsonPrefix::string_room() const {
  std::optional<uint32_t> room;
  for (const JsonPath& p : paths_) {
    const std::optional<uint32_t> r = p.string_room();
    if (!r.has_value()) return std::nullopt;
    room = std::max(room.value_or(0), *r);
  }
  return room;
}

void JsonPrefix::pattern_safe_characters(std::vector<const std::bitset<128>*>& out) const {
  for (const JsonPath& p : paths_)
    if (const std::bitset<128>* safe = p.pattern_safe_characters(); safe != nullptr && safe->any()) out.push_back(safe);
}

bool JsonPrefix::inside_string() const {
  return std::all_of(paths_.begin(), paths_.end(), [](const JsonPath& p) { return p.inside_string(); });
}

Result<std::shared_ptr<const JsonVocabulary>> JsonVocabulary::make(const TokenTexts& vocab) {
  // What a completion may need next from some place, one byte at a time: JSON's punctuation, the letters of the
  // literals (after "fa", say), '\\' and 'u' (after a high surrogate's escape, its pair's), a digit (after '-', '.',
  // 'e', or within a \\u escape) and 'D' (a low surrogate, \\uDD00). Other bytes only ever offer a second way on.
  std::string missing;
  auto has = [&](char c) { return writes_alone(vocab, c); };
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
      note(byte_name(static_cast<uint8_t>(b)));
      break;
    }
  }
  if (!missing.empty())
    return invalid_argument("JSON mode needs a vocabulary that writes each of JSON's characters as a token of its "
                            "own, and this model's has no token for: " + missing + "; it cannot write JSON safely");
  return std::make_shared<const JsonVocabulary>(vocab);
}

Status JsonVocabulary::check_spelled(const std::bitset<256>& spelled) const {
  std::string missing;
  for (int b = 0; b < 256; ++b)
    if (spelled.test(static_cast<size_t>(b)) && !writes_alone(vocab_, static_cast<char>(b)))
      missing += (missing.empty() ? "" : " ") + byte_name(static_cast<uint8_t>(b));
  if (missing.empty()) return Status::ok_status();
  return invalid_argument("json_schema spells keys or values with characters this model's vocabulary has no token "
                          "of their own for: " + missing + "; it cannot write them safely");
}

Result<std::shared_ptr<const JsonRules>> JsonRules::make(std::shared_ptr<const JsonVocabulary> vocab,
                                                         std::shared_ptr<const JsonSchema> schema, bool whitespace) {
  KV_RETURN_IF_ERROR(vocab->check_spelled(schema->spelled_bytes()));
  return std::make_shared<const JsonRules>(std::move(vocab), std::move(schema), whitespace);
}

namespace {

// Orders distinct token ids in O(vocabulary / 64 + ids): inside a string the walk finds most of a 50,000-token
// vocabulary, which std::sort took a third of the place's time to order.
void sort_ids(std::vector<int32_t>& ids, int32_t vocab_size) {
  if (ids.size() < 256) return std::sort(ids.begin(), ids.end());
  std::vector<uint64_t> bits((static_cast<size_t>(vocab_size) + 63) / 64, 0);
  for (int32_t id : ids) bits[static_cast<size_t>(id) / 64] |= uint64_t{1} << (id % 64);
  ids.clear();
  for (size_t w = 0; w < bits.size(); ++w)
    for (uint64_t b = bits[w]; b != 0; b &= b - 1) ids.push_back(static_cast<int32_t>(w * 64 + std::countr_zero(b)));
}

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

JsonVocabulary::JsonVocabulary(const TokenTexts& vocab) : vocab_(vocab) {
  for (int32_t id = 0; id < vocab.size(); ++id)
    if (!vocab.text(id).empty()) sorted_.push_back(id);
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) {
    return vocab.text(a) != vocab.text(b) ? vocab.text(a) < vocab.text(b) : a < b;
  });
  shared_ = shared_bytes(vocab, sorted_);
  for (int32_t id : sorted_) {
    std::bitset<128> chars;
    for (char c : vocab.text(id)) chars.set(Pattern::writable(c) ? static_cast<size_t>(c) : size_t{'"'});
    sorted_chars_.push_back(chars);
  }
  // Text that never leaves the string does the same wherever it stands in one (a key or a value, at any depth), but
  // for the characters it adds to a string of bounded length. A token that leaves it and comes back (":\"\",\"") is
  // not such text: where it lands depends on the place.
  JsonPrefix in_string;
  in_string.feed("{\"");
  JsonPrefix s = in_string;
  for (int32_t id : sorted_) {
    s = in_string;  // (assigned: no allocation)
    bool stays = true;
    for (char c : vocab.text(id)) stays = stays && s.feed(static_cast<uint8_t>(c)) && s.inside_string();
    (stays && s == in_string ? string_text_ : string_other_).push_back(id);
  }
  std::sort(string_text_.begin(), string_text_.end());
  for (int32_t id : string_text_) {
    string_text_characters_.push_back(JsonPrefix::string_text_characters(vocab.text(id)));
    string_text_most_characters_ = std::max(string_text_most_characters_, string_text_characters_.back());
  }
  string_other_shared_ = shared_bytes(vocab, string_other_);
}

const std::vector<int32_t>& JsonRules::allowed(const JsonPrefix& state, bool drop_first_space) const {
  drop_first_space = drop_first_space && vocab().strip_first_space();
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

void JsonRules::compute(const JsonPrefix& state, bool drop_first_space, std::vector<int32_t>& out) const {
  const JsonVocabulary& v = *vocab_;
  out.clear();
  if (drop_first_space) {  // the first token of a completion whose text drops a leading space: each on its own
    JsonPrefix s = state;
    for (int32_t id : v.sorted_) {
      const std::string_view t = vocab().added_text(id, true);
      s = state;  // (assigned: no allocation)
      if (!t.empty() && s.feed(t)) out.push_back(id);
    }
    return sort_ids(out, vocab().size());
  }
  const std::optional<uint32_t> room = state.string_room();
  if (!room.has_value()) {
    std::vector<const std::bitset<128>*> safe;
    state.pattern_safe_characters(safe);
    walk(state, v.sorted_, v.shared_, out, safe.empty() ? nullptr : v.sorted_chars_.data(), safe);
    return sort_ids(out, vocab().size());
  }
  walk(state, v.string_other_, v.string_other_shared_, out);
  sort_ids(out, vocab().size());
  const size_t others = out.size();
  if (*room >= v.string_text_most_characters_) {
    out.insert(out.end(), v.string_text_.begin(), v.string_text_.end());
  } else {  // a string of bounded length: the string text that still fits
    for (size_t i = 0; i < v.string_text_.size(); ++i)
      if (v.string_text_characters_[i] <= *room) out.push_back(v.string_text_[i]);
  }
  std::inplace_merge(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(others), out.end());
}

// In text order, each token's bytes are read on from the place its first bytes, shared with the token before,
// reached: the tokens are walked as a trie, and the tokens below a refused prefix are passed over at once.
void JsonRules::walk(const JsonPrefix& state, const std::vector<int32_t>& tokens,
                     const std::vector<uint16_t>& shared_with_previous, std::vector<int32_t>& out,
                     const std::bitset<128>* chars, const std::vector<const std::bitset<128>*>& safe) const {
  std::vector<JsonPrefix> at(vocab().max_length() + 1, state);  // at[k]: the place after the first k bytes
  size_t known = 0;          // at[0..known] hold the places of the last token read
  size_t refused = SIZE_MAX; // the last token's byte that was refused (SIZE_MAX: none)
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = vocab().text(tokens[i]);
    const size_t shared = shared_with_previous[i];
    if (refused != SIZE_MAX && shared > refused) continue;  // it starts with the refused bytes too
    if (chars != nullptr &&
        std::any_of(safe.begin(), safe.end(), [&](const std::bitset<128>* s) { return (chars[i] & ~*s).none(); })) {
      out.push_back(tokens[i]);  // unread: at[] holds the last token read's places, as far as this one shares them
      known = std::min(known, shared);
      refused = SIZE_MAX;
      continue;
    }
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

class JsonGuide final : public OutputGuide {
 public:
  JsonGuide(std::shared_ptr<const JsonRules> rules, bool strip_first_space)
      : rules_(std::move(rules)), state_(rules_->start()), strip_(strip_first_space) {}

  const std::vector<int32_t>& allowed(std::span<const int32_t> /*end_ids: it ends when the value closes*/) override {
    return rules_->allowed(state_, at_start_ && strip_);
  }
  void advance(int32_t token) override {
    state_.feed(rules_->vocab().added_text(token, at_start_ && strip_));  // allowed() offered it: it reads on
    at_start_ = false;
  }
  bool complete() const override { return state_.complete(); }

 private:
  std::shared_ptr<const JsonRules> rules_;
  JsonPrefix state_;
  bool strip_;
  bool at_start_ = true;
};

}  // namespace

std::unique_ptr<OutputGuide> follow_json(std::shared_ptr<const JsonRules> rules, bool strip_first_space) {
  return std::make_unique<JsonGuide>(std::move(rules), strip_first_space);
}

}  // namespace kvshare
