// JSON mode (OpenAI's response_format {"type": "json_object"}, vLLM's structured_outputs.json_object): the
// generated text is one JSON object (RFC 8259, strict: valid UTF-8, escapes and surrogate pairs as a parser such as
// nlohmann's or Python's accepts). The constraint works on the bytes each token adds, like a choice's, so any
// token that keeps the text the start of such an object may be drawn, and the request stops once the object
// closes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "sampling/choice.h"
#include "sampling/output_guide.h"

namespace kvshare {

// Where a text stands in the grammar of one JSON object, read a byte at a time. A small value (copied freely):
// the open arrays and objects are a bit stack.
class JsonPrefix {
 public:
  static constexpr int kMaxDepth = 128;  // nesting deeper than this is refused (nlohmann and Python take it)
  // Whitespace between JSON's tokens is one space, or a newline and at most this many spaces or tabs of indentation
  // (llama.cpp's JSON grammar's rule), so that a model cannot spend its tokens on whitespace before or inside the
  // object (vLLM's users met that where any whitespace goes).
  static constexpr int kMaxIndent = 20;

  // whitespace: whether spaces, tabs and newlines may stand between tokens of JSON (vLLM's default); without
  // it (its disable_any_whitespace), the object is written compactly. Whitespace inside strings is text.
  explicit JsonPrefix(bool whitespace = true) : whitespace_(whitespace) {}

  // Reads one byte: true when the text with it can still become a JSON object. On false the state is left
  // unspecified (copy it first to try a byte).
  bool feed(uint8_t byte);
  bool feed(std::string_view bytes);
  // Whether the text is one whole JSON object (the top-level object closed).
  bool complete() const { return mode_ == Mode::kDone; }
  // Whether this is inside a string, between characters: where text that keeps it inside the string (whole
  // characters and escapes, no '"') leaves it as it is.
  bool between_string_characters() const { return mode_ == Mode::kString && utf8_need_ == 0; }
  // Whether this is inside a string (also within an escape or a character).
  bool inside_string() const {
    return mode_ == Mode::kString || mode_ == Mode::kEscape || mode_ == Mode::kHex || mode_ == Mode::kLowBackslash ||
           mode_ == Mode::kLowU;
  }

  bool operator==(const JsonPrefix&) const = default;

 private:
  enum class Mode : uint8_t {
    kStart,        // before the top-level object: whitespace, '{'
    kValue,        // a value: after ':', ',' in an array
    kArrayFirst,   // after '[': a value or ']'
    kObjectFirst,  // after '{': a key or '}'
    kKey,          // after ',' in an object: a key
    kColon,        // after a key
    kAfterValue,   // ',' or the bracket that closes the innermost array or object
    kDone,         // the top-level object is closed: trailing whitespace only
    kString,       // inside a string (utf8_need_ continuation bytes pending)
    kEscape,       // after '\' in a string
    kHex,          // after \u: hex_count_ of 4 digits read, their value in hex_
    kLowBackslash, // after a \u escape of a high surrogate: '\' of the low one must follow
    kLowU,         // ... then 'u'
    kMinus, kZero, kInt, kDot, kFrac, kExpMark, kExpSign, kExp,  // a number: -? (0|[1-9][0-9]*) (.[0-9]+)? ...
    kLiteral,      // true, false or null (kLiterals[literal_]): its letter hex_count_ comes next
  };
  bool in_object() const { return depth_ > 0 && ((stack_[(depth_ - 1) / 64] >> ((depth_ - 1) % 64)) & 1) != 0; }
  bool open(bool object);      // '{' or '['
  bool close(bool object);     // '}' or ']'
  bool value_start(uint8_t byte);
  bool after_value(uint8_t byte);
  bool string_byte(uint8_t byte);
  bool number_byte(uint8_t byte);
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

  Mode mode_ = Mode::kStart;
  bool whitespace_ = true;
  bool key_ = false;           // the string being read is a key
  bool low_surrogate_ = false; // the \u escape being read must be a low surrogate (DC00..DFFF)
  uint8_t utf8_need_ = 0;      // continuation bytes still due in the current character
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xBF;  // the range of the next continuation byte
  uint8_t hex_count_ = 0;      // digits of a \u escape read; letters of a literal read
  uint16_t hex_ = 0;           // the \u escape's value so far
  uint8_t literal_ = 0;
  uint8_t spaces_ = 0;         // the whitespace just read: 0 none, 1 a space, 2 + k a newline and k indentation
  int16_t depth_ = 0;          // open arrays and objects
  uint64_t stack_[kMaxDepth / 64] = {};  // bit d: level d + 1 is an object (else an array)
};

// The tokens that keep a text the start of a JSON object, for one vocabulary and whitespace setting: shared by
// every request in JSON mode (the engine keeps one of each).
class JsonObjectRules {
 public:
  // An error when the vocabulary cannot write JSON: a character a completion may need next ({ } [ ] " : , \\, the
  // letters of true, false, null, a digit, D or d) that no token writes alone, or a token that ends inside a UTF-8
  // character whose next bytes no token writes alone. Either could leave a completion with no token to go on.
  static Result<std::shared_ptr<const JsonObjectRules>> make(const TokenTexts& vocab, bool whitespace);
  JsonObjectRules(const TokenTexts& vocab, bool whitespace);  // unchecked (make checks)

  // The tokens whose text `state` can read on, sorted. `drop_first_space`: the token is a completion's first and
  // the text drops its leading space (TokenTexts::strip_first_space); a token that is one space alone is then left
  // out. The last kMemo places are kept: the n completions of a request, and every completion inside a long
  // string, stand at the same place (the engine's thread alone calls this).
  const std::vector<int32_t>& allowed(const JsonPrefix& state, bool drop_first_space) const;
  JsonPrefix start() const { return JsonPrefix(whitespace_); }
  const TokenTexts& vocab() const { return vocab_; }
  bool whitespace() const { return whitespace_; }

 private:
  void compute(const JsonPrefix& state, bool drop_first_space, std::vector<int32_t>& out) const;
  // The tokens of `tokens` (in text order; shared[i]: bytes token i's text shares with token i - 1's) whose text
  // `state` reads on, appended to `out`.
  void walk(const JsonPrefix& state, const std::vector<int32_t>& tokens, const std::vector<uint16_t>& shared,
            std::vector<int32_t>& out) const;

  const TokenTexts& vocab_;
  bool whitespace_;
  std::vector<int32_t> sorted_;  // the tokens with text, by text
  std::vector<uint16_t> shared_; // shared_[i]: bytes sorted_[i]'s text shares with sorted_[i - 1]'s
  // Inside a string most tokens are text that leaves the place as it is (most of a 50,000-token vocabulary): those
  // (by id) are taken at once, and only the others (by text, with their shared bytes) are walked.
  std::vector<int32_t> string_text_;
  std::vector<int32_t> string_other_;
  std::vector<uint16_t> string_other_shared_;
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
std::unique_ptr<OutputGuide> follow_json_object(std::shared_ptr<const JsonObjectRules> rules, bool strip_first_space);

}  // namespace kvshare
