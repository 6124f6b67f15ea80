#include "sampling/json_guide.h"
#include "sampling/json_object_test_util.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace kvshare {
namespace {

// JSON mode's rules for any object, unchecked, and checked as the engine checks them.
std::shared_ptr<const JsonRules> object_rules(const TokenTexts& vocab, bool whitespace) {
  return std::make_shared<const JsonRules>(std::make_shared<const JsonVocabulary>(vocab), JsonSchema::any_object(),
                                           whitespace);
}
Result<std::shared_ptr<const JsonRules>> checked_object_rules(const TokenTexts& vocab, bool whitespace) {
  KV_ASSIGN_OR_RETURN(std::shared_ptr<const JsonVocabulary> checked, JsonVocabulary::make(vocab));
  return JsonRules::make(checked, JsonSchema::any_object(), whitespace);
}

// Whether the recognizer takes `text` as one whole JSON object.
bool whole_object(std::string_view text, bool whitespace = true) {
  JsonPrefix p(whitespace);
  return p.feed(text) && p.complete();
}

// The reference: nlohmann's strict parser (RFC 8259, UTF-8 checked, surrogate pairs checked). It refuses a number
// that a double cannot hold (1e400), which RFC 8259 leaves to the reader: such a number is put as 0 and the text
// read again.
bool reference_object(std::string text) {
  for (;;) {
    const NlohmannVerdict r = nlohmann_verdict(text);
    if (r.error_id == 0) return r.object;
    if (r.error_id != 406 || r.error_byte == 0 || r.error_byte > text.size()) return false;  // 406: number overflow
    const std::string_view number_bytes = "0123456789+-.eE";
    size_t end = r.error_byte - 1, begin = end;
    while (begin > 0 && number_bytes.find(text[begin - 1]) != std::string_view::npos) --begin;
    while (end < text.size() && number_bytes.find(text[end]) != std::string_view::npos) ++end;
    text.replace(begin, end - begin, "0");
  }
}

TEST(JsonPrefix, AgreesWithAParserOnHandPickedTexts) {
  const std::vector<std::string> texts = {
      "{}", " { } ", "{\"a\":1}", "{\"a\":-0.5e+10,\"b\":[true,false,null,{}],\"c\":\"x\\n\\u00e9\\ud83d\\ude00\"}",
      "[]", "1", "\"x\"", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
      "{\"a\":1e}", "{\"a\":-}", "{\"a\":tru}", "{\"a\":True}", "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":\"\\x\"}",
      "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"\t\"}",
      "{\"a\":\"\xc3\xa9\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xe0\x80\x80\"}", "{\"a\":\"\xed\xa0\x80\"}",
      "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xf0\x9f\x98\x80\"}", "{\"a\":\"\x7f\"}", "{}{}", "{} x",
      "{\"a\":1}\n", "{\"a\" : [ 1 , 2 ] }", "{\"a\":[1 2]}", "{\"a\":1 \"b\":2}", "{1:2}", "{\"a\":\"\\u0000\"}",
      "{\"\":\"\"}", "{\"a\":-01}", "{\"a\":1E+2}", "{\"a\":0e5}", "{\"a\":[[[[]]]]}", "{\"a\":[}", "{\"a\":{]}",
  };
  for (const std::string& t : texts) EXPECT_EQ(whole_object(t), reference_object(t)) << t;
}

TEST(JsonPrefix, WithoutWhitespaceOnlyStringsHoldSpaces) {
  EXPECT_TRUE(whole_object("{\"a b\":[1,{\"c\":\" \"}]}", false));
  EXPECT_FALSE(whole_object(" {}", false));
  EXPECT_FALSE(whole_object("{\"a\": 1}", false));
  EXPECT_FALSE(whole_object("{\"a\":1}\n", false));
}

TEST(JsonPrefix, WhitespaceIsASpaceOrANewlineAndIndentation) {
  const std::string indent = "\n" + std::string(JsonPrefix::kMaxIndent, ' ');
  EXPECT_TRUE(whole_object(" {" + indent + "\"a\" :\n\t[1 ]" + indent + "}\n"));
  EXPECT_TRUE(whole_object("{\n  \"a\": {\n    \"b\": [\n      1,\n      2\n    ]\n  }\n}"));
  for (const std::string& gap : {std::string("  "), indent + " ", std::string("\n\n"), std::string("\t"),
                                 std::string("\r\n"), std::string(" \n")})
    EXPECT_FALSE(whole_object("{\"a\":" + gap + "1}")) << "gap of " << gap.size() << " bytes";
  EXPECT_TRUE(whole_object("{\"a\":\"" + std::string(50, ' ') + "\"}"));  // inside a string it is text
  EXPECT_TRUE(whole_object("{\"a\":\"  \" }"));
}

// The same place reached after different values compares equal: nothing of a finished literal or escape stays
// (the memo of allowed tokens is keyed by the place; such leftovers made it miss).
TEST(JsonPrefix, PlacesForgetFinishedValues) {
  std::vector<JsonPrefix> places;
  for (const char* text : {"{\"a\":1,\"b\":\"", "{\"a\":true,\"b\":\"", "{\"a\":null,\"b\":\"",
                           "{\"a\":\"\\u0041\",\"b\":\"", "{\"a\":\"\\u0042\",\"b\":\"",
                           "{\"a\":\"\\ud83d\\ude00\",\"b\":\"", "{\"a\":[{}],\"b\":\""}) {
    JsonPrefix p;
    ASSERT_TRUE(p.feed(text)) << text;
    places.push_back(p);
  }
  for (const JsonPrefix& p : places) EXPECT_TRUE(p == places[0]);
}

TEST(JsonPrefix, NestingStopsAtTheLimit) {
  std::string deep = "{\"a\":";
  for (int i = 1; i < JsonPrefix::kMaxDepth; ++i) deep += "[";
  JsonPrefix p;
  ASSERT_TRUE(p.feed(deep));
  JsonPrefix q = p;
  EXPECT_FALSE(q.feed("["));
  EXPECT_FALSE(q.feed("{"));
  EXPECT_TRUE(p.feed(std::string(JsonPrefix::kMaxDepth - 1, ']') + "}"));
  EXPECT_TRUE(p.complete());
}

// Random objects written with random whitespace, escapes and number forms, then mutated: the recognizer and the
// parser agree on every text, and every prefix of a valid one is taken.
std::string random_value(std::mt19937& rng, int depth);

std::string random_space(std::mt19937& rng) {
  static const char* spaces[] = {"", "", "", " ", "\n", "\n  ", "\n\t\t"};
  return spaces[rng() % 7];
}

std::string random_string(std::mt19937& rng) {
  static const char* pieces[] = {"a", "Z", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u0041", "\\u00E9", "\\ud83d\\ude00",
                                 "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f", "{", "}", ":", ","};
  std::string s = "\"";
  for (int n = static_cast<int>(rng() % 5); n > 0; --n) s += pieces[rng() % 18];
  return s + "\"";
}

std::string random_object(std::mt19937& rng, int depth) {
  std::string s = "{" + random_space(rng);
  for (int n = static_cast<int>(rng() % 4), i = 0; i < n; ++i) {
    if (i > 0) s += "," + random_space(rng);
    s += random_string(rng) + random_space(rng) + ":" + random_space(rng) + random_value(rng, depth + 1) +
         random_space(rng);
  }
  return s + "}";
}

std::string random_value(std::mt19937& rng, int depth) {
  static const char* numbers[] = {"0", "-0", "12", "-3.25", "1e5", "2E-3", "0.0e+0", "-10.5E12"};
  static const char* literals[] = {"true", "false", "null"};
  switch (depth > 3 ? rng() % 3 : rng() % 5) {
    case 0: return numbers[rng() % 8];
    case 1: return literals[rng() % 3];
    case 2: return random_string(rng);
    case 3: return random_object(rng, depth);
    default: {
      std::string s = "[" + random_space(rng);
      for (int n = static_cast<int>(rng() % 4), i = 0; i < n; ++i)
        s += (i > 0 ? "," : "") + random_value(rng, depth + 1) + random_space(rng);
      return s + "]";
    }
  }
}

TEST(JsonPrefix, AgreesWithAParserOnRandomAndMutatedTexts) {
  std::mt19937 rng(7);
  static const char alphabet[] = "{}[]\":,\\u0123456789abcdefDCtrulsn.eE+- \n\x80\xbf\xc3\xed\xf0\xf4\x9f\x01";
  int valid = 0, invalid = 0;
  for (int i = 0; i < 4000; ++i) {
    std::string t = random_space(rng) + random_object(rng, 0) + random_space(rng);
    ASSERT_TRUE(reference_object(t)) << t;
    JsonPrefix p;
    for (size_t k = 0; k < t.size(); ++k)
      ASSERT_TRUE(p.feed(static_cast<uint8_t>(t[k]))) << "refused byte " << k << " of a valid object: " << t;
    ASSERT_TRUE(p.complete()) << t;
    for (int m = static_cast<int>(rng() % 3) + 1; m > 0 && !t.empty(); --m) {
      const size_t at = rng() % t.size();
      const char c = alphabet[rng() % (sizeof(alphabet) - 1)];
      switch (rng() % 3) {
        case 0: t[at] = c; break;
        case 1: t.insert(t.begin() + static_cast<long>(at), c); break;
        default: t.erase(at, 1);
      }
    }
    const bool ref = reference_object(t);
    if (whole_object(t)) EXPECT_TRUE(ref) << t;
    if (ref && within_json_mode_limits(t)) EXPECT_TRUE(whole_object(t)) << t;
    (ref ? valid : invalid)++;
  }
  EXPECT_GT(valid, 200);
  EXPECT_GT(invalid, 2000);
}

// A random walk through the grammar, byte by byte among the bytes it takes (JSON's own bytes favoured, so that
// escapes, surrogates, numbers and literals come up), then a walk that favours closing: every place it reaches
// takes some byte, and the walk always ends in a whole object. No place is a dead end.
std::vector<uint8_t> taken(const JsonPrefix& p) {
  std::vector<uint8_t> out;
  for (int b = 0; b < 256; ++b) {
    JsonPrefix q = p;
    if (q.feed(static_cast<uint8_t>(b))) out.push_back(static_cast<uint8_t>(b));
  }
  return out;
}

uint8_t pick(std::mt19937& rng, const std::vector<uint8_t>& bytes, std::string_view favoured, int weight) {
  std::vector<int> w;
  for (uint8_t b : bytes) w.push_back(favoured.find(static_cast<char>(b)) != std::string_view::npos ? weight : 1);
  std::discrete_distribution<size_t> d(w.begin(), w.end());
  return bytes[d(rng)];
}

TEST(JsonPrefix, NoPlaceIsADeadEnd) {
  std::mt19937 rng(11);
  for (int walk = 0; walk < 300; ++walk) {
    JsonPrefix p(walk % 2 == 0);
    std::string text;
    for (int step = 0; step < 60 && !p.complete(); ++step) {
      const std::vector<uint8_t> next = taken(p);
      ASSERT_FALSE(next.empty()) << "dead end after " << text;
      const uint8_t b = pick(rng, next, "{}[]\":,\\u0123456789abcdefABCDEFtrulsn.eE+-", 30);
      text += static_cast<char>(b);
      ASSERT_TRUE(p.feed(b));
    }
    for (int step = 0; step < 400 && !p.complete(); ++step) {
      const std::vector<uint8_t> next = taken(p);
      ASSERT_FALSE(next.empty()) << "dead end after " << text;
      const uint8_t b = pick(rng, next, "\"}]", 1000);
      text += static_cast<char>(b);
      ASSERT_TRUE(p.feed(b));
    }
    ASSERT_TRUE(p.complete()) << "no end reached: " << text;
    EXPECT_TRUE(reference_object(text)) << text;
  }
}

// The vocabulary walk gives exactly the tokens whose every byte the place takes, at places reached by random walks.
TEST(JsonRules, AllowedEqualsEveryTokenTriedAlone) {
  std::vector<std::string> texts = {"", "{", "}", "{\"", "\"}", "\":", "\"", " ", " {", "  ", "\n", ":", ",", ", \"",
                                    "[", "]", "]}", "}}", "}}}", "\\", "\\u", "\\ud83d", "\\ude00", "ude", "00",
                                    "D", "d", "C", "1", "12", "1e", "e", "-", ".", "0", "0.", "true", "tr", "ue",
                                    "null", "nul", "f", "alse", "a", "ab", "abc", " a", "\xc3", "\xa9", "\xc3\xa9",
                                    "\xe2\x82", "\xac", "\xed", "\xa0", "\x9f", "\xf0\x9f", "\x98\x80", "x\"", "\"x",
                                    "\": \"", "\"a\":", "[1,", "{}", "{\"a\":1}", "\t", "\x01", "\\n", "n", "u",
                                    // leaving a string and coming back into one: where they land depends on the place
                                    "\":\"\",\"", "\",\"", "\"],[\"", "\"}]", "\":[\""};
  const size_t base = texts.size();
  for (size_t i = 0; i < base; ++i) texts.push_back(texts[i]);  // the same texts again: every id is offered
  for (bool spaces : {true, false}) {
    const TokenTexts vocab(texts, true);
    const std::shared_ptr<const JsonRules> held = object_rules(vocab, spaces);
    const JsonRules& rules = *held;
    std::mt19937 rng(spaces ? 3 : 4);
    for (int walk = 0; walk < 200; ++walk) {
      JsonPrefix p = rules.start();
      for (int step = 0; step < 12 && !p.complete(); ++step) {
        for (bool drop : {false, true}) {
          std::vector<int32_t> expected;
          for (int32_t id = 0; id < vocab.size(); ++id) {
            std::string_view t = vocab.text(id);
            if (drop && !t.empty() && t[0] == ' ') t.remove_prefix(1);
            JsonPrefix q = p;
            if (!t.empty() && q.feed(t)) expected.push_back(id);
          }
          ASSERT_EQ(rules.allowed(p, drop), expected) << "step " << step << " drop " << drop;
        }
        const std::vector<int32_t>& next = rules.allowed(p, false);
        if (next.empty()) break;  // this small vocabulary cannot spell everything
        ASSERT_TRUE(p.feed(vocab.text(next[rng() % next.size()])));
      }
    }
  }
}

// A vocabulary that cannot write one of JSON's characters alone, or the rest of a character its tokens split, is
// refused with the characters it lacks.
TEST(JsonRules, AVocabularyThatCannotWriteJsonIsRefused) {
  // What a completion may need next, and no more: no '+', '-', '.', 'E', '/', other digits or hex letters.
  std::vector<std::string> texts;
  for (char c : std::string_view("{}[]\":,truefalsn\\7D")) texts.emplace_back(1, c);
  EXPECT_TRUE(checked_object_rules(TokenTexts(texts, false), true).ok());
  std::vector<std::string> no_digit;
  for (const std::string& t : texts)
    if (t != "7" && t != "D") no_digit.push_back(t);
  EXPECT_NE(checked_object_rules(TokenTexts(no_digit, false), true).status().message().find(
                "has no token for: a digit D or d"),
            std::string::npos);
  std::vector<std::string> no_braces;
  for (const std::string& t : texts)
    if (t != "{" && t != "]") no_braces.push_back(t);
  no_braces.push_back("{\"");  // "{" only inside a longer token: a completion could not always go on
  auto refused = checked_object_rules(TokenTexts(no_braces, false), true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("has no token for: { ]"), std::string::npos)
      << refused.status().to_string();
  texts.push_back("\xc3");  // ends inside a character, and no token writes a continuation byte alone
  refused = checked_object_rules(TokenTexts(texts, false), true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("the byte 0x80"), std::string::npos) << refused.status().to_string();
  for (int b = 0x80; b <= 0xBF; ++b) texts.emplace_back(1, static_cast<char>(b));
  EXPECT_TRUE(checked_object_rules(TokenTexts(texts, false), true).ok());
}

// A vocabulary with just what make() asks for, and tokens that lead into awkward places (a literal begun, a number
// wanting a digit, an escape or a surrogate half-written, a character split): random walks over its tokens never
// stand where no token goes on, and a walk that favours closing always ends in a whole object.
TEST(JsonRules, WhatMakeAsksForIsEnoughToGoOn) {
  std::vector<std::string> texts;
  for (char c : std::string_view("{}[]\":,truefalsn\\7D ")) texts.emplace_back(1, c);
  for (int b = 0x80; b <= 0xBF; ++b) texts.emplace_back(1, static_cast<char>(b));
  for (const char* t : {"fa", "nu", "-", "7.", "7e", "7E+", "\\u", "\\uD8", "\\uD83", "\\ud", "\xe2", "\xf0\x9f",
                        "\"x", "x", ":[", "{\"", "\n  "})
    texts.emplace_back(t);
  const TokenTexts vocab(texts, false);
  auto rules = checked_object_rules(vocab, true);
  ASSERT_TRUE(rules.ok()) << rules.status().to_string();
  std::mt19937 rng(5);
  for (int walk = 0; walk < 400; ++walk) {
    JsonPrefix p = (*rules)->start();
    std::string text;
    for (int step = 0; step < 400 && !p.complete(); ++step) {
      const std::vector<int32_t>& next = (*rules)->allowed(p, false);
      ASSERT_FALSE(next.empty()) << "no token goes on after " << text;
      int32_t pick = next[rng() % next.size()];
      if (step >= 30) {  // then close: '"' on even steps, "}" or "]" on odd ones, first where offered
        int best = 0;
        for (int32_t t : next) {
          const std::string& s = vocab.text(t);
          const int rank = s == "\"" ? (step % 2 == 0 ? 2 : 1) : s == "}" || s == "]" ? (step % 2 == 0 ? 1 : 2) : 0;
          if (rank > best) best = rank, pick = t;
        }
      }
      text += vocab.text(pick);
      ASSERT_TRUE(p.feed(vocab.text(pick)));
    }
    ASSERT_TRUE(p.complete()) << "no end reached: " << text;
    EXPECT_TRUE(reference_object(text)) << text;
  }
}

// On real vocabularies (GPT-2's byte-level BPE, 50,257 tokens; Llama 3's, 128,256), at places of every kind, the
// tokens allowed are exactly those whose bytes the place reads, each tried alone. The vocabulary's texts are
// gathered as the engine gathers them (Engine::Impl::vocab_texts).
void expect_allowed_is_every_token_tried_alone(const BpeTokenizer& tok) {
  std::vector<std::string> texts(static_cast<size_t>(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!tok.is_special(id)) texts[static_cast<size_t>(id)] = tok.token_piece(id);
  const TokenTexts vocab(std::move(texts), tok.strips_leading_space());
  for (bool whitespace : {true, false}) {
    auto rules = checked_object_rules(vocab, whitespace);
    ASSERT_TRUE(rules.ok()) << rules.status().to_string();
    for (const char* text : {"", "{", "{\"", "{\"ab", "{\"a\"", "{\"a\":", "{\"a\":\"x", "{\"a\":[\"x\\",
                             "{\"a\":\"\\u00", "{\"a\":\"\\ud83d", "{\"a\":\"\xe6\x97", "{\"a\":-",
                             "{\"a\":1.5e", "{\"a\":12", "{\"a\":[1,", "{\"a\":{\"b\":[[\"x", "{\"a\":fa",
                             "{\"a\":[]", "{\"a\":\"x\",\"b\":\"y"}) {
      JsonPrefix p = (*rules)->start();
      ASSERT_TRUE(p.feed(text)) << text;
      for (bool drop : {false, true}) {
        if (drop && *text != '\0') continue;  // only a completion's first token drops its space
        std::vector<int32_t> want;
        for (int32_t id = 0; id < vocab.size(); ++id) {
          std::string_view t = vocab.text(id);
          if (drop && vocab.strip_first_space() && !t.empty() && t[0] == ' ') t.remove_prefix(1);
          JsonPrefix q = p;
          if (!t.empty() && q.feed(t)) want.push_back(id);
        }
        ASSERT_EQ((*rules)->allowed(p, drop), want) << "after \"" << text << "\", whitespace " << whitespace;
      }
    }
  }
}

// The same with a schema, at places inside strings of bounded length (where string text is taken by its characters),
// keys and enums.
void expect_schema_allowed_is_every_token_tried_alone(const BpeTokenizer& tok) {
  std::vector<std::string> texts(static_cast<size_t>(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!tok.is_special(id)) texts[static_cast<size_t>(id)] = tok.token_piece(id);
  const TokenTexts vocab(std::move(texts), tok.strips_leading_space());
  auto schema = JsonSchema::compile(R"({"type": "object", "properties": {"s": {"type": "string", "minLength": 2,
      "maxLength": 5}, "k": {"type": "array", "items": {"enum": ["red", "green", 12]}}, "t": {"type": "string",
      "minLength": 3}}, "required": ["s"]})");
  ASSERT_TRUE(schema.ok()) << schema.status().to_string();
  auto rules = JsonRules::make(*JsonVocabulary::make(vocab), *schema, true);
  ASSERT_TRUE(rules.ok()) << rules.status().to_string();
  for (const char* text : {"", "{", "{\"", "{\"s\":\"", "{\"s\":\"a", "{\"s\":\"ab", "{\"s\":\"abcd",
                           "{\"s\":\"abcde", "{\"s\":\"a\\u00", "{\"s\":\"\xe6\x97\xa5\xe6\x9c\xac",
                           "{\"s\":\"ab\",\"k\":[\"gr", "{\"s\":\"ab\",\"k\":[1", "{\"s\":\"ab\", \"t\":\"x",
                           "{\"s\":\"ab\", \"t\":\"xyz"}) {
    JsonPrefix p = (*rules)->start();
    ASSERT_TRUE(p.feed(text)) << text;
    std::vector<int32_t> want;
    for (int32_t id = 0; id < vocab.size(); ++id) {
      JsonPrefix q = p;
      if (!vocab.text(id).empty() && q.feed(vocab.text(id))) want.push_back(id);
    }
    ASSERT_EQ((*rules)->allowed(p, false), want) << "after \"" << text << "\"";
  }
}

TEST(JsonRules, OnRealVocabulariesAllowedIsEveryTokenTriedAlone) {
  KV_REQUIRE_GPT2_TOKENIZER();
  auto gpt2 = BpeTokenizer::from_hf_dir(testing::gpt2_tokenizer_dir());
  ASSERT_TRUE(gpt2.ok()) << gpt2.status().to_string();
  expect_allowed_is_every_token_tried_alone(**gpt2);
  expect_schema_allowed_is_every_token_tried_alone(**gpt2);
  KV_REQUIRE_SHARED("tokenizers/llama3/tokenizer.json");
  auto llama3 = BpeTokenizer::from_hf_dir(testing::shared_dir() + "/tokenizers/llama3");
  ASSERT_TRUE(llama3.ok()) << llama3.status().to_string();
  expect_allowed_is_every_token_tried_alone(**llama3);
}

TEST(JsonGuide, FollowsTheTokensAndEndsWhenTheObjectCloses) {
  const TokenTexts vocab({"", " {", "\"a\"", ":", "1", "}", " "}, /*strip_first_space=*/true);
  auto rules = object_rules(vocab, /*whitespace=*/false);
  auto guide = follow_json(rules, /*strip_first_space=*/true);
  // The first token drops its space: " {" writes "{", which compact JSON takes; " " alone writes nothing.
  EXPECT_EQ(guide->allowed({}), std::vector<int32_t>({1}));
  guide->advance(1);
  EXPECT_EQ(guide->allowed({}), std::vector<int32_t>({2, 5}));
  for (int32_t t : {2, 3, 4}) {
    EXPECT_FALSE(guide->complete());
    guide->advance(t);
  }
  EXPECT_EQ(guide->allowed({}), std::vector<int32_t>({4, 5}));
  guide->advance(5);
  EXPECT_TRUE(guide->complete());
  // Continuing prompt text, " {" keeps its space, which compact JSON refuses.
  EXPECT_TRUE(follow_json(rules, false)->allowed({}).empty());
}

}  // namespace
}  // namespace kvshare
