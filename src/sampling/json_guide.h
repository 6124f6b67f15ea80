// JSON mode: the generated text is one JSON value that follows a schema (OpenAI's response_format
// {"type": "json_schema"}, vLLM's structured_outputs.json; JsonSchema says what a schema may say), or any JSON object
// (response_format {"type": "json_object"}, structured_outputs.json_object). RFC 8259, strict: valid UTF-8, escapes
// and surrogate pairs as a parser such as nlohmann's or Python's accepts. The constraint works on the bytes each
// token adds, like a choice's, so any token that keeps the text the start of such a value may be drawn, and the
// request stops once the value closes.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "sampling/choice.h"
#include "sampling/json_schema.h"
#include "sampling/output_guide.h"

namespace kvshare {

// One way of reading a text as the start of one JSON value that follows a schema (JsonSchema), a byte at a time:
// where alternatives of a union may begin alike, each is a JsonPath of its own (JsonPrefix holds them). A value
// copied freely: the open objects, arrays and the value being read are a stack of small frames, and a copy copies the
// open ones only.
class JsonPath {
 public:
  // nesting deeper than this is refused (nlohmann and Python take it)
  static constexpr int kMaxDepth = static_cast<int>(JsonSchema::kMaxNesting);
  // the most ways a text is read at once (JsonPrefix): a byte forks no more than this many
  static constexpr size_t kMaxForks = 64;
  // Whitespace between JSON's tokens is one space, or a newline and at most this many spaces or tabs of indentation
  // (llama.cpp's JSON grammar's rule), so that a model cannot spend its tokens on whitespace before or inside the
  // object (vLLM's users met that where any whitespace goes).
  static constexpr int kMaxIndent = 20;

  // (as JsonPrefix's)
  JsonPath(const JsonSchema& schema, bool whitespace) : schema_(&schema), whitespace_(whitespace) {}
  JsonPath(const JsonPath& other) { *this = other; }
  JsonPath& operator=(const JsonPath& other);  // (copies the open frames only)

  // Reads one byte: true when the text with it can still become a value that follows the schema this way. Where the
  // byte begins a union's value that more than one alternative may begin, this path follows the first, and a path
  // for each other one is appended to `forks` while it holds fewer than kMaxForks. On false the state is left
  // unspecified (copy it first to try a byte).
  bool feed(uint8_t byte, std::vector<JsonPath>& forks);
  // Whether the text is one whole value (the top-level value closed).
  bool complete() const { return done_; }
  // Inside a string, between characters: how many more characters it may hold (UINT32_MAX: no bound). There, text
  // that keeps it inside the string (whole characters and escapes, no '"') leaves the place as it is but for the
  // count. nullopt elsewhere.
  std::optional<uint32_t> string_room() const;
  // The characters string text (whole characters and escapes) adds to a string.
  static uint32_t string_text_characters(std::string_view text);
  // Inside a string under a pattern: the characters text made of them alone may add, unread
  // (Pattern::safe_characters). nullptr elsewhere.
  const std::bitset<128>* pattern_safe_characters() const;
  // Whether this is inside a string (also within an escape or a character).
  bool inside_string() const { return depth_ > 0 && top().phase == Phase::kString; }

  bool operator==(const JsonPath& other) const;

 private:
  enum class Phase : uint8_t {
    kObjectFirst,  // after '{': a key or '}'
    kKey,          // after ',' in an object: a key
    kKeyText,      // inside a key the schema names: `a` the first property it may still be, `b` its bytes read
    kColon,        // after a key
    kMemberValue,  // after ':'
    kObjectAfter,  // after a member's value: ',' or '}'
    kArrayFirst,   // after '[': a value or ']'
    kItem,         // after ',' in an array
    kArrayAfter,   // after an item: ',' or ']'
    kString,       // inside a string: `a` the characters read (counted only as far as the schema's lengths need)
    kNumber,       // inside a number (number_): `a` the fraction's digits, `b` 1 once a range covers it (bounded)
    kLiteral,      // inside an enum, const, true, false or null: `a` the first text it may still be, `b` bytes read
  };
  struct Frame {
    // (no initializers: a place's frames past the open ones are never read, and copies copy the open ones only)
    int32_t node;  // the schema's node; a string's -1 is a key of any text
    Phase phase;
    uint32_t a, b;
    uint32_t next;  // objects: the first property not yet written; arrays: the items begun (counted as strings')
    bool operator==(const Frame&) const = default;
  };
  // Inside a string: escapes and UTF-8 as RFC 3629 allows it (no overlong forms, no surrogates, nothing past
  // U+10FFFF), a character's bytes possibly spread over several tokens.
  struct StringLexer {
    enum class Step : uint8_t { kRefused, kPending, kCharacter };  // kCharacter: the byte ended a character
    Step feed(uint8_t byte);
    bool between_characters() const { return mode == 0 && utf8_need == 0; }
    uint8_t mode = 0;  // 0 characters, 1 after '\', 2 \u digits, 3 '\' of a low surrogate due, 4 its 'u'
    bool low_surrogate = false;  // the \u escape being read must be a low surrogate (DC00..DFFF)
    uint8_t utf8_need = 0;       // continuation bytes still due in the current character
    uint8_t utf8_lo = 0x80, utf8_hi = 0xBF;  // the range of the next continuation byte
    uint8_t hex_count = 0;       // digits of a \u escape read
    uint16_t hex = 0;            // the escape's value so far
    bool operator==(const StringLexer&) const = default;
  };
  // -? (0|[1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?, without the fraction and exponent for an integer.
  enum class Number : uint8_t { kStart, kMinus, kZero, kInt, kDot, kFrac, kExpMark, kExpSign, kExp };

  bool read(uint8_t byte);  // feed() once `forks_` is set
  const Frame& top() const { return frames_[depth_ - 1]; }
  Frame& top() { return frames_[depth_ - 1]; }
  const JsonSchema::Node& node_of(const Frame& f) const { return schema_->node(f.node); }
  bool begin(int32_t node, uint8_t byte);  // a value of `node` begins with `byte`
  bool begin_value(int32_t node, uint8_t byte);  // ... `node` not a union
  bool fork(int32_t node, uint8_t byte);   // ... a union more than one of whose alternatives may begin with it
  void alternatives_of(int32_t node, uint8_t byte, std::vector<int32_t>& out, std::vector<bool>& seen) const;
  // Whether a value of `node` begun here can close within kMaxDepth.
  bool fits(int32_t node) const { return containers_ + schema_->node(node).min_depth <= kMaxDepth; }
  uint32_t next_key(const JsonSchema::Node& n, uint32_t from) const;
  bool push(int32_t node, Phase phase);
  bool pop_and_refeed(uint8_t byte);       // the value on top ended before `byte`, which goes to what holds it
  void pop();
  bool object_byte(Frame& f, uint8_t byte);
  bool key_byte(Frame& f, uint8_t byte);
  bool array_byte(Frame& f, uint8_t byte);
  bool string_byte(Frame& f, uint8_t byte);
  bool checked_byte(Frame& f, uint8_t byte);
  bool number_byte(Frame& f, uint8_t byte);
  enum class NumberStep : uint8_t { kOn, kEnd, kRefused };  // `byte` goes on with the number, ends it, or cannot
  static NumberStep number_step(Number& number, uint8_t byte, bool fraction, bool exponent);
  bool literal_byte(Frame& f, uint8_t byte);
  static bool is_json_space(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
  // Whether `byte` is whitespace that may stand here: it starts a run (' ' or '\n') or indents after a newline.
  bool space(uint8_t byte) {
    if (!whitespace_) return false;
    if (spaces_ == 0 && (byte == ' ' || byte == '\n')) {
      spaces_ = byte == ' ' ? 1 : 2;
      return true;
    }
    if (spaces_ < 2 || spaces_ == 2 + kMaxIndent || (byte != ' ' && byte != '\t')) return false;
    ++spaces_;
    return true;
  }

  const JsonSchema* schema_ = nullptr;
  std::vector<JsonPath>* forks_ = nullptr;  // while feed() runs (not copied)
  bool whitespace_ = true;
  bool done_ = false;
  uint8_t spaces_ = 0;         // the whitespace just read: 0 none, 1 a space, 2 + k a newline and k indentation
  Number number_ = Number::kStart;  // the number on top
  // The text read of a bounded number on top (until its range covers all it may become: frame.b 1) or of a
  // formatted string (JsonSchema::Node::format); a string under a pattern's states (Pattern::step)
  std::string value_text_;
  StringLexer string_;         // the string on top
  int16_t depth_ = 0;          // frames open
  int16_t containers_ = 0;     // objects and arrays open
  Frame frames_[kMaxDepth + 1];  // the containers, and a string, number or literal above them
};

// Where a text stands in the grammar of one JSON value that follows a schema (JsonSchema), read a byte at a time: the
// ways of reading it (JsonPaths) still open. There is one, but where alternatives of a union (anyOf, a list of types)
// may begin alike: each is then followed until the text tells them apart, and the text may go on as any of them
// allows. At most kMaxPaths are followed at once: past that, the last ones begun are given up (the text still
// follows the schema; it may take fewer of the values the schema allows).
class JsonPrefix {
 public:
  static constexpr int kMaxDepth = JsonPath::kMaxDepth;
  static constexpr int kMaxIndent = JsonPath::kMaxIndent;
  static constexpr size_t kMaxPaths = JsonPath::kMaxForks;

  // whitespace: whether spaces, tabs and newlines may stand between tokens of JSON (vLLM's default); without
  // it (its disable_any_whitespace), the value is written compactly. Whitespace inside strings is text.
  // `schema` must outlive the place and its copies.
  JsonPrefix(const JsonSchema& schema, bool whitespace) : paths_{JsonPath(schema, whitespace)} {}
  // Any JSON object (json_object).
  explicit JsonPrefix(bool whitespace = true) : JsonPrefix(*JsonSchema::any_object(), whitespace) {}

  // Reads one byte: true when the text with it can still become a value that follows the schema. On false the
  // state is left unspecified (copy it first to try a byte).
  bool feed(uint8_t byte);
  bool feed(std::string_view bytes);
  // Whether the text is one whole value (the top-level value closed), read some way.
  bool complete() const;
  // Inside strings, between characters, every way it is read: how many more characters a string may hold, the most
  // of any way (UINT32_MAX: no bound). There, text that keeps it inside the string (whole characters and escapes, no
  // '"') leaves each way as it is but for the count, and ends the ways it does not fit. nullopt elsewhere.
  std::optional<uint32_t> string_room() const;
  // The characters string text (whole characters and escapes) adds to a string.
  static uint32_t string_text_characters(std::string_view text) { return JsonPath::string_text_characters(text); }
  // The ways that stand inside a string under a pattern: text made of one's safe characters alone goes on that way.
  void pattern_safe_characters(std::vector<const std::bitset<128>*>& out) const;
  // Whether this is inside a string (also within an escape or a character), every way it is read.
  bool inside_string() const;
  // How many ways it is read (1 but after the start of a union's value that alternatives may begin alike).
  size_t paths() const { return paths_.size(); }

  bool operator==(const JsonPrefix& other) const { return paths_ == other.paths_; }

 private:
  std::vector<JsonPath> paths_;  // in the order they were begun
};

// A vocabulary read once for JSON mode: its tokens in text order, to be walked as a trie, and which of them are
// string text. Shared by every schema and whitespace setting (the engine keeps one).
class JsonVocabulary {
 public:
  // An error when the vocabulary cannot write JSON: a character a completion may need next ({ } [ ] " : , \\, the
  // letters of true, false, null, a digit, D or d) that no token writes alone, or a token that ends inside a UTF-8
  // character whose next bytes no token writes alone. Either could leave a completion with no token to go on.
  static Result<std::shared_ptr<const JsonVocabulary>> make(const TokenTexts& vocab);
  explicit JsonVocabulary(const TokenTexts& vocab);  // unchecked (make checks); `vocab` must outlive it

  // An error naming the bytes of `spelled` (a schema's keys and values, JsonSchema::spelled_bytes) that no token
  // writes alone: a completion could be left halfway through such a key with no token to go on.
  Status check_spelled(const std::bitset<256>& spelled) const;
  const TokenTexts& texts() const { return vocab_; }

 private:
  friend class JsonRules;
  // Whether some token's text is `byte` alone.
  static bool writes_alone(const TokenTexts& vocab, char byte) {
    return !vocab.ids_of(std::string_view(&byte, 1)).empty();
  }

  const TokenTexts& vocab_;
  std::vector<int32_t> sorted_;  // the tokens with text, by text
  std::vector<uint16_t> shared_; // shared_[i]: bytes sorted_[i]'s text shares with sorted_[i - 1]'s
  // sorted_chars_[i]: the characters of sorted_[i]'s text, where it is written in a string under a pattern alone
  // (printable ASCII but '"' and '\\'); else '"', which no pattern's safe characters hold.
  std::vector<std::bitset<128>> sorted_chars_;
  // Inside a string most tokens are text that leaves the place as it is (most of a 50,000-token vocabulary): those
  // (by id) are taken at once, and only the others (by text, with their shared bytes) are walked.
  std::vector<int32_t> string_text_;
  std::vector<uint32_t> string_text_characters_;  // each one's characters, for strings of bounded length
  uint32_t string_text_most_characters_ = 0;
  std::vector<int32_t> string_other_;
  std::vector<uint16_t> string_other_shared_;
};

// The tokens that keep a text the start of a value that follows one schema, with one whitespace setting: shared by
// every request that asks for it (the engine keeps the last few).
class JsonRules {
 public:
  // An error when the vocabulary cannot spell what the schema asks for (JsonVocabulary::check_spelled).
  static Result<std::shared_ptr<const JsonRules>> make(std::shared_ptr<const JsonVocabulary> vocab,
                                                       std::shared_ptr<const JsonSchema> schema, bool whitespace);
  JsonRules(std::shared_ptr<const JsonVocabulary> vocab, std::shared_ptr<const JsonSchema> schema, bool whitespace)
      : vocab_(std::move(vocab)), schema_(std::move(schema)), whitespace_(whitespace) {}  // unchecked

  // The tokens whose text `state` can read on, sorted. `drop_first_space`: the token is a completion's first and
  // the text drops its leading space (TokenTexts::strip_first_space); a token that is one space alone is then left
  // out. The last kMemo places are kept: the n completions of a request, and every completion inside a long
  // string, stand at the same place (the engine's thread alone calls this).
  const std::vector<int32_t>& allowed(const JsonPrefix& state, bool drop_first_space) const;
  JsonPrefix start() const { return JsonPrefix(*schema_, whitespace_); }
  const TokenTexts& vocab() const { return vocab_->vocab_; }
  const JsonSchema& schema() const { return *schema_; }
  bool whitespace() const { return whitespace_; }

 private:
  void compute(const JsonPrefix& state, bool drop_first_space, std::vector<int32_t>& out) const;
  // The tokens of `tokens` (in text order; shared[i]: bytes token i's text shares with token i - 1's) whose text
  // `state` reads on, appended to `out`. With `chars` (token i's characters, JsonVocabulary::sorted_chars_), a token
  // whose characters are all safe for one of `safe` is taken unread.
  void walk(const JsonPrefix& state, const std::vector<int32_t>& tokens, const std::vector<uint16_t>& shared,
            std::vector<int32_t>& out, const std::bitset<128>* chars = nullptr,
            const std::vector<const std::bitset<128>*>& safe = {}) const;

  std::shared_ptr<const JsonVocabulary> vocab_;
  std::shared_ptr<const JsonSchema> schema_;
  bool whitespace_;
  struct Memo {
    JsonPrefix state;
    bool drop_first_space = false;
    std::vector<int32_t> tokens;
  };
  static constexpr size_t kMemo = 16;
  mutable std::vector<Memo> memo_;  // most recent first
};

// One completion in JSON mode. `strip_first_space`: its first token drops a leading space (it does not continue
// prompt text, and the vocabulary is SentencePiece's).
std::unique_ptr<OutputGuide> follow_json(std::shared_ptr<const JsonRules> rules, bool strip_first_space);

}  // namespace kvshare
