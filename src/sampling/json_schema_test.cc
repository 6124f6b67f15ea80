#include "sampling/json_schema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "sampling/json_guide.h"

namespace kvshare {
namespace {

std::shared_ptr<const JsonSchema> compiled(const std::string& schema) {
  auto s = JsonSchema::compile(schema);
  EXPECT_TRUE(s.ok()) << schema << ": " << s.status().to_string();
  return s.ok() ? *s : nullptr;
}

std::string refusal(const std::string& schema) {
  auto s = JsonSchema::compile(schema);
  return s.ok() ? "(compiled)" : s.status().message();
}

// The bytes `p` reads on with.
std::vector<uint8_t> bytes_taken(const JsonPrefix& p) {
  std::vector<uint8_t> next;
  for (int b = 0; b < 256; ++b) {
    JsonPrefix q = p;
    if (q.feed(static_cast<uint8_t>(b))) next.push_back(static_cast<uint8_t>(b));
  }
  return next;
}

// Whether the recognizer takes `text` whole under `schema`.
bool takes(const JsonSchema& schema, std::string_view text, bool whitespace = true) {
  JsonPrefix p(schema, whitespace);
  return p.feed(text) && p.complete();
}

// What a schema may not say is refused with the keyword and the place named; a schema no value follows is refused.
TEST(JsonSchema, WhatItCannotFollowIsRefusedByName) {
  EXPECT_EQ(refusal(R"({"type": "object", "properties": {"a": {"type": "string", "patternProperties": {}}}})"),
            "json_schema: the keyword \"patternProperties\" is not supported; docs/limits.md lists what is "
            "(at /properties/a)");
  EXPECT_EQ(refusal(R"j({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}})j"),
            "json_schema: pattern: lookahead or lookbehind at character 2 is not supported; docs/limits.md lists what "
            "is (at /properties/a/pattern)");
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}})")
                .find("\"multipleOf\" is not supported"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"a/b": {"format": "uri"}}})")
                .find("(at /properties/a~1b/format)"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "array", "minItems": 3, "maxItems": 2})").find("minItems is more than maxItems"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "string", "minLength": 3, "maxLength": 2})").find("minLength is more"),
            std::string::npos);
  EXPECT_EQ(refusal(R"({"properties": {"v": {"oneOf": [{"type": "string"}, {"enum": ["a"]}]}}})"),
            "json_schema: oneOf's alternatives 0 and 1 can both begin with '\"', and no required property with "
            "different const or enum values tells them apart: a value might follow both, which oneOf refuses. Use "
            "anyOf, or give each object such a property (at /properties/v)");
  EXPECT_NE(refusal(R"({"enum": ["a", "b"], "const": "c"})").find("const is not one of enum's values"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": ["object", "object"]})").find("twice"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "integer"})").find("a number alone"), std::string::npos);
  EXPECT_NE(refusal(R"({"enum": ["a", 1]})").find("a number alone"), std::string::npos);
  EXPECT_NE(refusal(R"({"$ref": "#/$defs/missing"})").find("points to nothing"), std::string::npos);
  EXPECT_NE(refusal(R"({"$ref": "other.json#/a"})").find("must point into this schema"), std::string::npos);
  EXPECT_NE(refusal(R"({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})")
                .find("refers to itself"),
            std::string::npos);
  EXPECT_NE(refusal("false").find("accepts no value"), std::string::npos);
  EXPECT_NE(refusal("[1]").find("must be a JSON object or a boolean"), std::string::npos);
  EXPECT_NE(refusal("{\"type\": ").find("not valid JSON"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})")
                .find("required names \"b\", which properties does not define"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"properties": {"a": {}}, "additionalProperties": true})").find("additionalProperties"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "string", "enum": ["a", 2]})").find("holds 2, which type does not allow"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"allOf": [{}, {}]})").find("allOf of more than one"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "array", "items": [{}]})").find("tuple validation"), std::string::npos);
  EXPECT_NE(refusal(std::string(JsonSchema::kMaxBytes + 1, ' ')).find("more than the limit"), std::string::npos);
  std::string deep = "1";
  for (int i = 0; i < 300; ++i) deep = "[" + deep + "]";
  EXPECT_FALSE(JsonSchema::compile("{\"enum\": " + deep + "}").ok());
}

// A schema whose every value holds another of itself has no value; one whose values nest too deep has none the
// recognizer writes. A value that could not close within the nesting limit is never begun: no dead end there.
TEST(JsonSchema, ValuesCloseWithinTheNestingLimit) {
  EXPECT_NE(refusal(R"({"type": "array", "items": {"$ref": "#"}, "minItems": 1})").find("without end"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]})")
                .find("without end"),
            std::string::npos);
  std::string deep = R"({"type": "array", "minItems": 1, "items": {"type": "string"}})";
  for (int i = 1; i < 130; ++i) deep = R"({"type": "array", "minItems": 1, "items": )" + deep + "}";
  EXPECT_NE(refusal(deep).find("no value of it nests fewer than 130"), std::string::npos);
  // An optional key whose value nests three deep is offered only where three more levels fit.
  const auto s = compiled(R"({"type": "object", "properties": {"k": {"$ref": "#"}, "z": {"type": "array",
      "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "array"}}}}})");
  ASSERT_NE(s, nullptr);
  auto at_depth = [&](int objects) {
    JsonPrefix p(*s, false);
    std::string text;
    for (int i = 1; i < objects; ++i) text += "{\"k\":";
    EXPECT_TRUE(p.feed(text + "{")) << objects;
    return p;
  };
  JsonPrefix fits = at_depth(JsonPrefix::kMaxDepth - 3);
  EXPECT_TRUE(fits.feed("\"z\":[[[]]]}"));
  JsonPrefix too_deep = at_depth(JsonPrefix::kMaxDepth - 2);
  EXPECT_FALSE(too_deep.feed("\"z"));
  too_deep = at_depth(JsonPrefix::kMaxDepth - 2);
  EXPECT_TRUE(too_deep.feed("\"k\":{}}"));
  // Keys of any text too: a key is begun only where its value fits (found by a review helper: 128 objects deep, a
  // key was begun whose value, an object, could not be).
  const auto any_keys = compiled(R"({"type": "object", "additionalProperties": {"$ref": "#"}})");
  ASSERT_NE(any_keys, nullptr);
  std::string nested;
  for (int i = 1; i < JsonPrefix::kMaxDepth; ++i) nested += "{\"\":";
  JsonPrefix deepest(*any_keys, false);
  ASSERT_TRUE(deepest.feed(nested + "{"));
  JsonPrefix key = deepest;
  EXPECT_FALSE(key.feed('"'));
  EXPECT_TRUE(deepest.feed('}'));
  const auto mixed = compiled(R"({"anyOf": [{"type": "array", "items": {"$ref": "#"}},
                                            {"type": "object", "additionalProperties": {"$ref": "#"}}]})");
  ASSERT_NE(mixed, nullptr);
  JsonPrefix arrays(*mixed, false);
  ASSERT_TRUE(arrays.feed(std::string(JsonPrefix::kMaxDepth - 1, '[') + "{"));
  key = arrays;
  EXPECT_FALSE(key.feed('"'));
  EXPECT_TRUE(arrays.feed("}]"));
  JsonPrefix last = at_depth(JsonPrefix::kMaxDepth);
  EXPECT_FALSE(last.feed("\"k"));  // another object would be one too many: only "}" closes it
  last = at_depth(JsonPrefix::kMaxDepth);
  EXPECT_TRUE(last.feed("}"));
}

// Alternatives that begin alike (anyOf, Pydantic's unions of models) are each followed until the text tells them
// apart: the text may be any value one of them takes, and nothing else.
TEST(JsonSchema, AlternativesThatBeginAlikeAreEachFollowed) {
  const auto strings = compiled(R"({"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 2},
      {"enum": ["abcd", 7]}, {"type": "integer"}]}})");
  ASSERT_NE(strings, nullptr);
  for (const char* ok : {"[\"ab\"]", "[\"abcd\"]", "[\"\",\"abcd\",\"x\"]", "[7]", "[71]", "[-3]"})
    EXPECT_TRUE(takes(*strings, ok)) << ok;
  for (const char* bad : {"[\"abc\"]", "[\"abcde\"]", "[\"abd\"]", "[7.5]", "[\"ab\"\"]"})
    EXPECT_FALSE(takes(*strings, bad)) << bad;
  // Two ways until the text tells them apart; one again once the strings close (the ways meet in the array).
  const auto lengths = compiled(R"({"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 2},
      {"type": "string", "minLength": 4, "maxLength": 5}]}})");
  ASSERT_NE(lengths, nullptr);
  JsonPrefix p(*lengths, false);
  ASSERT_TRUE(p.feed("[\"ab"));
  EXPECT_EQ(p.paths(), 2u);
  EXPECT_EQ(p.string_room(), std::optional<uint32_t>(3));  // the most of either
  JsonPrefix closed = p;
  ASSERT_TRUE(closed.feed("\","));
  EXPECT_EQ(closed.paths(), 1u);
  ASSERT_TRUE(p.feed("cd\","));
  EXPECT_EQ(p.paths(), 1u);
  EXPECT_TRUE(p == closed);

  // Pydantic's Union[Cat, Dog] without a discriminator: anyOf of two models whose first keys are alike.
  const auto pets = compiled(R"({"$defs": {
      "Cat": {"properties": {"name": {"type": "string"}, "meows": {"type": "integer"}}, "required": ["name", "meows"],
              "title": "Cat", "type": "object"},
      "Dog": {"properties": {"name": {"type": "string"}, "barks": {"type": "boolean"}}, "required": ["name"],
              "title": "Dog", "type": "object"}},
      "properties": {"pet": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"}},
      "required": ["pet"], "title": "Owner", "type": "object"})");
  ASSERT_NE(pets, nullptr);
  for (const char* ok : {R"({"pet": {"name": "a", "meows": 2}})", R"({"pet": {"name": "a", "barks": true}})",
                         R"({"pet": {"name": "a"}})"})
    EXPECT_TRUE(takes(*pets, ok)) << ok;
  for (const char* bad : {R"({"pet": {"name": "a", "meows": true}})", R"({"pet": {"name": "a", "barks": 2}})",
                          R"({"pet": {"name": "a", "meows": 2, "barks": true}})", R"({"pet": {"meows": 2}})"})
    EXPECT_FALSE(takes(*pets, bad)) << bad;

  // Pydantic's discriminated union: oneOf, told apart by pet_type (a Literal, written as const and enum both).
  const auto tagged = compiled(R"({"$defs": {
      "Cat": {"properties": {"pet_type": {"const": "cat", "enum": ["cat"], "title": "Pet Type", "type": "string"},
              "lives": {"type": "integer"}}, "required": ["pet_type", "lives"], "type": "object"},
      "Dog": {"properties": {"pet_type": {"const": "dog", "title": "Pet Type", "type": "string"},
              "lives": {"type": "string"}}, "required": ["pet_type", "lives"], "type": "object"}},
      "properties": {"pet": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"},
                                               "propertyName": "pet_type"},
                             "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}},
      "required": ["pet"], "type": "object"})");
  ASSERT_NE(tagged, nullptr);
  EXPECT_TRUE(takes(*tagged, R"({"pet": {"pet_type": "cat", "lives": 9}})"));
  EXPECT_TRUE(takes(*tagged, R"({"pet": {"pet_type": "dog", "lives": "one"}})"));
  EXPECT_FALSE(takes(*tagged, R"({"pet": {"pet_type": "cat", "lives": "one"}})"));
  EXPECT_FALSE(takes(*tagged, R"({"pet": {"pet_type": "cow", "lives": 1}})"));
  // The same property with a value both may take does not tell them apart; nor does an optional one.
  EXPECT_NE(refusal(R"({"oneOf": [{"type": "object", "properties": {"t": {"enum": ["a", "b"]}}, "required": ["t"]},
                                  {"type": "object", "properties": {"t": {"enum": ["b", "c"]}}, "required": ["t"]}]})")
                .find("oneOf's alternatives 0 and 1 can both begin with '{'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"oneOf": [{"type": "object", "properties": {"t": {"const": "a"}}},
                                  {"type": "object", "properties": {"t": {"const": "b"}}}]})")
                .find("can both begin with '{'"),
            std::string::npos);

  // Past kMaxPaths ways at once, the last begun are given up: the text still follows the schema.
  std::string many = R"({"type": "array", "items": {"anyOf": [)";
  for (int i = 0; i < 100; ++i) many += (i ? ", " : "") + std::string(R"({"const": "k)") + std::to_string(i) + "\"}";
  const auto wide = compiled(many + "]}}");
  ASSERT_NE(wide, nullptr);
  JsonPrefix w(*wide, false);
  ASSERT_TRUE(w.feed("[\""));
  EXPECT_EQ(w.paths(), JsonPrefix::kMaxPaths);
  EXPECT_TRUE(takes(*wide, "[\"k0\",\"k63\"]"));
  EXPECT_FALSE(takes(*wide, "[\"k64\"]"));

  // Found by a review helper. A node reached by two ways is one alternative: a chain of unions of the one before
  // twice forked 2^n ways on one byte (n = 18: 4.6 s and 1.4 GB).
  std::string chain = R"({"$defs": {"a0": {"type": "string"})";
  for (int i = 1; i <= 30; ++i)
    chain += ", \"a" + std::to_string(i) + R"(": {"anyOf": [{"$ref": "#/$defs/a)" + std::to_string(i - 1) +
             R"("}, {"$ref": "#/$defs/a)" + std::to_string(i - 1) + "\"}]}";
  const auto dag = compiled(chain + R"(}, "type": "object", "properties": {"x": {"$ref": "#/$defs/a30"}}})");
  ASSERT_NE(dag, nullptr);
  JsonPrefix d(*dag, false);
  ASSERT_TRUE(d.feed("{\"x\":\""));
  EXPECT_EQ(d.paths(), 1u);
  // ... and a byte forks at most kMaxPaths ways, however many paths fork on it: 64 paths of 1,400 alternatives
  // each copied 89,600 places per '[' (2.3 s and 600 MB for ten of them).
  std::string arrays = R"({"$defs":{"X":{"anyOf":[)";
  for (int i = 0; i < 1300; ++i)
    arrays += std::string(i ? "," : "") + R"({"type":"array","items":{"$ref":"#/$defs/X"}})";
  const auto broad = compiled(arrays + R"(]}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}})");
  ASSERT_NE(broad, nullptr);
  JsonPrefix a(*broad, false);
  ASSERT_TRUE(a.feed("{\"x\":[[[[[[[[[["));
  EXPECT_LE(a.paths(), JsonPrefix::kMaxPaths);
  EXPECT_TRUE(a.feed("]]]]]]]]]]}"));
  EXPECT_TRUE(a.complete());
  // oneOf's discriminator values are compared as values: {"a":1,"b":2} and {"b":2,"a":1} are one.
  EXPECT_NE(refusal(R"({"oneOf": [
      {"type": "object", "properties": {"k": {"const": {"a": 1, "b": 2}}}, "required": ["k"]},
      {"type": "object", "properties": {"k": {"const": {"b": 2, "a": 1}}}, "required": ["k"]}]})")
                .find("can both begin with '{'"),
            std::string::npos);
}

// minimum, maximum and their exclusive forms (draft 4's booleans too): the number written lies within them, and is
// written without an exponent.
TEST(JsonSchema, NumbersStayWithinTheirBounds) {
  const auto rating = compiled(R"({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1,
      "maximum": 5}, "p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
      "t": {"type": ["number", "null"], "minimum": -2.5, "exclusiveMinimum": true}}})");
  ASSERT_NE(rating, nullptr);
  for (const char* ok : {R"({"n": 1})", R"({"n": 5})", R"({"p": 0.5})", R"({"p": 0.0001})", R"({"t": -2.4})",
                         R"({"t": null})", R"({"t": 300})", R"({"n": 3, "p": 0.999, "t": 0})"})
    EXPECT_TRUE(takes(*rating, ok)) << ok;
  for (const char* bad : {R"({"n": 0})", R"({"n": 6})", R"({"n": 10})", R"({"n": -1})", R"({"n": 1.0})",
                          R"({"p": 0})", R"({"p": 1})", R"({"p": 0.0})", R"({"p": 1e-3})", R"({"t": -2.5})",
                          R"({"t": -3})"})
    EXPECT_FALSE(takes(*rating, bad)) << bad;
  // Digits are offered only where a number within the bounds still begins with them.
  JsonPrefix p(*rating, false);
  ASSERT_TRUE(p.feed("{\"n\":"));
  for (char c : std::string("-0123456789")) {
    JsonPrefix q = p;
    EXPECT_EQ(q.feed(static_cast<uint8_t>(c)), c >= '1' && c <= '5') << c;
  }
  EXPECT_NE(refusal(R"({"type": "integer", "minimum": "1"})").find("minimum must be a number (at /minimum)"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "number", "exclusiveMaximum": true})").find("true needs maximum beside it"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"properties": {"n": {"type": "integer", "minimum": 6, "maximum": 5}}})")
                .find("no integer lies within the bounds: no value follows it (at /properties/n)"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"properties": {"n": {"type": "integer", "exclusiveMinimum": 5, "maximum": 5.5}}})")
                .find("no integer lies within"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"properties": {"n": {"type": "integer", "maximum": 9007199254740993}}})").find("past 2^53"),
            std::string::npos);
  // (negating INT64_MIN to compare it was undefined, found by a review helper)
  EXPECT_NE(refusal(R"({"properties": {"n": {"type": "integer", "minimum": -9223372036854775808}}})")
                .find("past 2^53"),
            std::string::npos);
}

// Random walks through bounded numbers (alternatives that begin alike among them) end in numbers within bounds.
TEST(JsonSchema, RandomWalksThroughBoundedNumbersEndWithinThem) {
  const auto s = compiled(R"({"type": "array", "items": {"anyOf": [{"type": "integer", "minimum": -20, "maximum": 7},
      {"type": "number", "exclusiveMinimum": 99.5, "maximum": 100.25}, {"type": "integer", "minimum": 1000}]}})");
  ASSERT_NE(s, nullptr);
  std::mt19937 rng(3);
  for (int walk = 0; walk < 300; ++walk) {
    JsonPrefix p(*s, false);
    std::string out;
    for (int step = 0; step < 400 && !p.complete(); ++step) {
      const std::vector<uint8_t> next = bytes_taken(p);
      ASSERT_FALSE(next.empty()) << "dead end after " << out;
      uint8_t b = next[rng() % next.size()];
      if (step > 30) b = std::find(next.begin(), next.end(), ']') != next.end() ? ']' : b;
      out += static_cast<char>(b);
      ASSERT_TRUE(p.feed(b));
    }
    ASSERT_TRUE(p.complete()) << out;
    const nlohmann::json value = nlohmann::json::parse(out);
    for (const auto& v : value) {
      const double x = v.get<double>();
      const bool whole = std::trunc(x) == x;  // (integers past 64 bits are read as doubles)
      EXPECT_TRUE((whole && x >= -20 && x <= 7) || (x > 99.5 && x <= 100.25) || (whole && x >= 1000)) << out;
    }
  }
}

// format: a date, a time, a date-time or a UUID is written as such (json_format.h); a format on another type says
// nothing; other formats, and lengths that would leave out some of a format's texts, are refused.
TEST(JsonSchema, StringFormatsAreHeldTo) {
  const auto s = compiled(R"({"type": "object", "properties": {"day": {"type": "string", "format": "date"},
      "at": {"type": ["string", "null"], "format": "date-time"}, "id": {"format": "uuid"},
      "n": {"type": "integer", "format": "int64"}}})");
  ASSERT_NE(s, nullptr);
  for (const char* ok : {R"({"day": "2024-02-29"})", R"({"at": "2024-01-01T00:00:00Z"})", R"({"at": null})",
                         R"({"id": "123e4567-e89b-12d3-a456-426614174000"})", R"({"id": 5})", R"({"n": 3})"})
    EXPECT_TRUE(takes(*s, ok)) << ok;
  for (const char* bad : {R"({"day": "2023-02-29"})", R"({"day": "2024-1-01"})", R"({"day": "2024-01-0\u0031"})",
                          R"({"at": "2024-01-01T00:00:00"})", R"({"id": "123e4567"})"})
    EXPECT_FALSE(takes(*s, bad)) << bad;
  JsonPrefix p(*s, false);
  ASSERT_TRUE(p.feed("{\"day\":\"2023-02-"));
  EXPECT_EQ(p.string_room(), std::nullopt);  // (no string text taken at once: each character is checked)
  EXPECT_NE(refusal(R"({"type": "string", "format": "uri"})").find("the format \"uri\" is not supported"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "string", "format": "time", "maxLength": 12})").find("would leave out"),
            std::string::npos);
  EXPECT_TRUE(JsonSchema::compile(R"({"type": "string", "format": "date", "maxLength": 10})").ok());
}

// pattern: the string is one the pattern matches (searched, as JSON Schema's pattern is), written in printable
// ASCII without escapes; lengths or a format beside it are refused.
// An independent reading of the email addresses format "email" writes (json_format.h's email_pattern): dot-separated
// runs of [A-Za-z0-9_%+-], '@', dot-separated labels of 1 to 63 letters, digits and inner hyphens, the last 2 to 24
// letters.
bool reads_as_email(const std::string& a) {
  const size_t at = a.find('@');
  if (at == std::string::npos || a.find('@', at + 1) != std::string::npos) return false;
  auto split = [](const std::string& s) {
    std::vector<std::string> parts(1);
    for (char c : s) {
      if (c == '.') parts.emplace_back();
      else parts.back().push_back(c);
    }
    return parts;
  };
  for (const std::string& run : split(a.substr(0, at)))
    if (run.empty() || !std::all_of(run.begin(), run.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("_%+-").find(c) != std::string::npos;
        }))
      return false;
  const std::vector<std::string> labels = split(a.substr(at + 1));
  if (labels.size() < 2) return false;
  for (const std::string& l : labels)
    if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-' ||
        !std::all_of(l.begin(), l.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }))
      return false;
  const std::string& tld = labels.back();
  return tld.size() >= 2 && tld.size() <= 24 &&
         std::all_of(tld.begin(), tld.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
}

// format "email" is held to as a pattern (Pydantic's EmailStr writes it): addresses in the common form are taken,
// others refused; random walks end in addresses the independent reading takes.
TEST(JsonSchema, EmailAddressesAreWrittenInTheCommonForm) {
  const auto s = compiled(R"({"type": "object", "properties": {"to": {"type": "string", "format": "email"}},
                              "required": ["to"]})");
  ASSERT_NE(s, nullptr);
  for (const char* ok : {"john.doe@mail.example.com", "a@b.co", "x_y+tag%1@sub-domain.example.org", "A1@B2.NET"}) {
    EXPECT_TRUE(takes(*s, std::string(R"({"to": ")") + ok + "\"}")) << ok;
    EXPECT_TRUE(reads_as_email(ok)) << ok;
  }
  for (const char* bad : {"a..b@x.com", ".a@x.com", "a.@x.com", "@x.com", "a@-x.com", "a@x-.com", "a@x.c0m",
                          "a@x", "a@x.c", "a@@x.com", "a b@x.com", "a@x..com", "a@.x.com", "a@x.com.",
                          "a@xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com"}) {  // 64 x
    EXPECT_FALSE(takes(*s, std::string(R"({"to": ")") + bad + "\"}")) << bad;
    EXPECT_FALSE(reads_as_email(bad)) << bad;
  }
  EXPECT_NE(refusal(R"({"type": "string", "format": "email", "maxLength": 40})").find("beside the format \"email\""),
            std::string::npos);
  std::mt19937 rng(5);
  for (int walk = 0; walk < 200; ++walk) {
    JsonPrefix p(*s, false);
    ASSERT_TRUE(p.feed(R"({"to":")"));
    std::string address;
    for (int step = 0; step < 300 && !p.complete(); ++step) {
      const std::vector<uint8_t> next = bytes_taken(p);
      ASSERT_FALSE(next.empty()) << "dead end after " << address;
      auto offered = [&](char c) { return std::find(next.begin(), next.end(), static_cast<uint8_t>(c)) != next.end(); };
      uint8_t b = next[rng() % next.size()];
      if (step > 30) {  // close it: '"' and '}' once they may come, else '@', then a label and two letters
        const bool letters = address.size() >= 2 && std::isalpha(static_cast<unsigned char>(address.back())) &&
                             std::isalpha(static_cast<unsigned char>(address[address.size() - 2]));
        for (char c : {'"', '}', '@'})
          if (offered(c)) b = static_cast<uint8_t>(c);
        if (b != '"' && b != '}' && b != '@') b = letters && offered('.') ? '.' : 'b';
      }
      ASSERT_TRUE(p.feed(b)) << address;
      if (b != '"' && b != '}') address += static_cast<char>(b);
    }
    ASSERT_TRUE(p.complete()) << address;
    EXPECT_TRUE(reads_as_email(address)) << address;
  }
}

TEST(JsonSchema, PatternsAreMatched) {
  const auto s = compiled(R"({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
      "tag": {"type": ["string", "null"], "pattern": "ok"}}})");
  ASSERT_NE(s, nullptr);
  for (const char* ok : {R"({"code": "ABC-1"})", R"({"code": "XYZ-007"})", R"({"tag": "looks ok!"})",
                         R"({"tag": null})"})
    EXPECT_TRUE(takes(*s, ok)) << ok;
  for (const char* bad : {R"({"code": "AB-1"})", R"({"code": "ABC-"})", R"({"code": "abc-1"})", R"({"tag": "no"})",
                          R"({"code": "ABC-\u0031"})", R"({"tag": "ok\n"})"})
    EXPECT_FALSE(takes(*s, bad)) << bad;
  JsonPrefix p(*s, false);
  ASSERT_TRUE(p.feed("{\"code\":\"AB"));
  EXPECT_EQ(p.string_room(), std::nullopt);
  EXPECT_NE(refusal(R"({"type": "string", "pattern": "a", "maxLength": 3})").find("pattern beside"),
            std::string::npos);
  // Random walks end in texts the pattern matches (std::regex, searched).
  std::mt19937 rng(4);
  const std::regex code("^[A-Z]{3}-\\d+$");
  for (int walk = 0; walk < 100; ++walk) {
    JsonPrefix w(*s, false);
    std::string out;
    for (int step = 0; step < 200 && !w.complete(); ++step) {
      const std::vector<uint8_t> next = bytes_taken(w);
      ASSERT_FALSE(next.empty()) << "dead end after " << out;
      uint8_t b = next[rng() % next.size()];
      if (step > 20) {  // then towards the end, the first allowed of: close the string, "ok", '}', '1', 'A', '-'
        const char o = !out.empty() && out.back() == 'o' ? 'k' : 'o';
        for (char c : std::string("\"") + o + "}1A-") {
          if (std::find(next.begin(), next.end(), static_cast<uint8_t>(c)) != next.end()) {
            b = static_cast<uint8_t>(c);
            break;
          }
        }
      }
      out += static_cast<char>(b);
      ASSERT_TRUE(w.feed(b));
    }
    ASSERT_TRUE(w.complete()) << out;
    const nlohmann::json v = nlohmann::json::parse(out);
    if (v.contains("code")) EXPECT_TRUE(std::regex_search(v["code"].get<std::string>(), code)) << out;
    if (v.contains("tag") && v["tag"].is_string()) EXPECT_NE(v["tag"].get<std::string>().find("ok"), std::string::npos);
  }
}

// What a review helper found the schema compiler took wrongly, each now followed as JSON Schema says or refused.
TEST(JsonSchema, ValuesReferencesAndCountsAsJsonSchemaReadsThem) {
  // An integer too long for 64 bits was parsed as a double and written back rounded; -0 equals 0, so oneOf's
  // alternatives 0 and -0.0 both matched. Whole doubles are written as integers, which every draft takes.
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"v": {"const": 18446744073709551617}}})")
                .find("too large to write back exactly"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"oneOf": [{"const": [0]}, {"const": [-0.0]}]})").find("holds -0"), std::string::npos);
  const auto whole = compiled(R"({"type": "object", "properties": {"v": {"type": "integer", "enum": [2.0, 1e3]},
                                  "w": {"const": {"a": [3.0, 0.5]}}}, "required": ["v", "w"]})");
  ASSERT_NE(whole, nullptr);
  EXPECT_TRUE(takes(*whole, R"({"v":2,"w":{"a":[3,0.5]}})"));
  EXPECT_TRUE(takes(*whole, R"({"v":1000,"w":{"a":[3,0.5]}})"));
  EXPECT_FALSE(takes(*whole, R"({"v":2.0,"w":{"a":[3,0.5]}})"));
  // $id below the top changes what "#..." means inside it: refused, not read from the top.
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"c": {"$id": "c.json", "$defs": {"X": {"type": "null"}},
                       "properties": {"x": {"$ref": "#/$defs/X"}}}}, "$defs": {"X": {"type": "boolean"}}})")
                .find("$id below the top"),
            std::string::npos);
  // A $ref is a URI fragment: %20 is a space. It may point into an array (anyOf's alternatives).
  const auto refs = compiled(R"({"$defs": {"a%20b": {"type": "string"}, "a b": {"type": "integer"}},
      "type": "object", "properties": {"x": {"$ref": "#/$defs/a%20b"}, "y": {"anyOf": [{"type": "null"}]},
      "z": {"$ref": "#/properties/y/anyOf/0"}}, "required": ["x", "z"]})");
  ASSERT_NE(refs, nullptr);
  EXPECT_TRUE(takes(*refs, R"({"x":12,"z":null})"));
  EXPECT_FALSE(takes(*refs, R"({"x":"12","z":null})"));
  EXPECT_NE(refusal(R"({"$ref": "#/$defs/a%2"})").find("two hex digits"), std::string::npos);
  EXPECT_NE(refusal(R"({"$defs": {"a": [{}]}, "$ref": "#/$defs/a/1"})").find("points to nothing"), std::string::npos);
  // Counts may be written as whole doubles.
  const auto counts = compiled(R"({"type": "string", "minLength": 2.0, "maxLength": 3e0})");
  ASSERT_NE(counts, nullptr);
  EXPECT_TRUE(takes(*counts, "\"abc\""));
  EXPECT_FALSE(takes(*counts, "\"abcd\""));
  EXPECT_NE(refusal(R"({"type": "string", "minLength": 2.5})").find("non-negative integer"), std::string::npos);
}

// An object: its keys in the schema's order, the required ones always, no others; values of their schemas.
TEST(JsonSchema, ObjectsWriteTheirPropertiesInOrder) {
  const auto s = compiled(R"({"type": "object", "title": "Person",
      "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array",
                     "items": {"type": "string"}}, "ok": {"type": "boolean"}},
      "required": ["name", "ok"], "additionalProperties": false})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(takes(*s, R"({"name":"Ann","age":31,"tags":["a","b"],"ok":true})"));
  EXPECT_TRUE(takes(*s, R"({"name": "Ann", "ok": false})"));
  EXPECT_TRUE(takes(*s, "{\n  \"name\": \"\",\n  \"tags\": [],\n  \"ok\": true\n}"));
  EXPECT_FALSE(takes(*s, R"({"ok":true,"name":"Ann"})"));            // out of order
  EXPECT_FALSE(takes(*s, R"({"name":"Ann"})"));                      // "ok" is required
  EXPECT_FALSE(takes(*s, R"({"name":"Ann","ok":true,"x":1})"));      // no other keys
  EXPECT_FALSE(takes(*s, R"({"name":"Ann","age":31.5,"ok":true})")); // an integer
  EXPECT_FALSE(takes(*s, R"({"name":"Ann","age":"31","ok":true})"));
  EXPECT_FALSE(takes(*s, R"({"name":"Ann","name":"Bob","ok":true})"));
  EXPECT_FALSE(takes(*s, R"({"nam":"Ann","ok":true})"));
  EXPECT_FALSE(takes(*s, R"({})"));
  EXPECT_FALSE(takes(*s, R"({"name":"Ann","ok":true},)"));
  EXPECT_FALSE(takes(*s, R"({"name": "Ann","ok":true})", /*whitespace=*/false));
  // Keys with characters JSON escapes are written as nlohmann writes them.
  const auto esc = compiled(R"({"type": "object", "properties": {"a\"b\u00e9\n": {"const": 1}},
                                 "required": ["a\"b\u00e9\n"]})");
  ASSERT_NE(esc, nullptr);
  EXPECT_TRUE(takes(*esc, "{\"a\\\"b\xc3\xa9\\n\":1}"));
  EXPECT_FALSE(takes(*esc, "{\"a\\\"b\\u00e9\\n\":1}"));
}

TEST(JsonSchema, ObjectsWithoutPropertiesTakeAnyKeys) {
  const auto s = compiled(R"({"type": "object", "additionalProperties": {"type": "number"}})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(takes(*s, R"({"a":1,"b":-2.5e3,"":0})"));
  EXPECT_TRUE(takes(*s, "{}"));
  EXPECT_FALSE(takes(*s, R"({"a":"1"})"));
  const auto none = compiled(R"({"type": "object", "additionalProperties": false})");
  EXPECT_TRUE(takes(*none, "{}"));
  EXPECT_FALSE(takes(*none, R"({"a":1})"));
  const auto any = compiled(R"({"type": "object"})");
  EXPECT_TRUE(takes(*any, R"({"a":[1,{"b":null}],"c":"x"})"));
}

// Lengths count characters as JSON Schema does: a UTF-8 character, an escape or a surrogate pair is one.
TEST(JsonSchema, StringLengthsCountCharacters) {
  const auto s = compiled(R"({"type": "object", "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 3}},
                              "required": ["s"]})");
  ASSERT_NE(s, nullptr);
  for (const char* ok :
       {"ab", "abc", "\xc3\xa9\xc3\xa9", "\\n\\t", "\\ud83d\\ude00x", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80"})
    EXPECT_TRUE(takes(*s, std::string("{\"s\":\"") + ok + "\"}")) << ok;
  for (const char* bad : {"", "a", "abcd", "\xc3\xa9", "\\ud83d\\ude00", "ab\\u0041c"})
    EXPECT_FALSE(takes(*s, std::string("{\"s\":\"") + bad + "\"}")) << bad;
}

TEST(JsonSchema, ArraysCountTheirItems) {
  const auto s = compiled(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(takes(*s, "[1]"));
  EXPECT_TRUE(takes(*s, "[1, -2, 30]"));
  EXPECT_FALSE(takes(*s, "[]"));
  EXPECT_FALSE(takes(*s, "[1,2,3,4]"));
  EXPECT_FALSE(takes(*s, "[1.5]"));
  EXPECT_FALSE(takes(*s, "[01]"));
  const auto many = compiled(R"({"type": "array", "minItems": 2})");
  EXPECT_TRUE(takes(*many, R"([1,"a",{},[],true,null])"));
  EXPECT_FALSE(takes(*many, "[1]"));
}

// enum and const values are written compactly; one that another continues ends where the next byte says so.
TEST(JsonSchema, EnumsAndConsts) {
  const auto s = compiled(R"({"type": "object", "properties": {
      "mood": {"enum": ["happy", "sad", "so-so"]}, "n": {"enum": [1, 12, 1.5, null]},
      "v": {"const": {"a": [1, 2]}}}, "required": ["mood", "n", "v"]})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(takes(*s, R"({"mood":"happy","n":1,"v":{"a":[1,2]}})"));
  EXPECT_TRUE(takes(*s, R"({"mood":"so-so", "n":12 , "v":{"a":[1,2]}})"));
  EXPECT_TRUE(takes(*s, R"({"mood":"sad","n":null,"v":{"a":[1,2]}})"));
  EXPECT_TRUE(takes(*s, R"({"mood":"sad","n":1.5,"v":{"a":[1,2]}})"));
  EXPECT_FALSE(takes(*s, R"({"mood":"glad","n":1,"v":{"a":[1,2]}})"));
  EXPECT_FALSE(takes(*s, R"({"mood":"happy","n":2,"v":{"a":[1,2]}})"));
  EXPECT_FALSE(takes(*s, R"({"mood":"happy","n":123,"v":{"a":[1,2]}})"));
  EXPECT_FALSE(takes(*s, R"({"mood":"happy","n":1,"v":{"a": [1,2]}})"));
  // An integer's enum may hold 2.0 (a whole number), not 2.5.
  EXPECT_NE(compiled(R"({"type": "object", "properties": {"n": {"type": "integer", "enum": [2.0, 3]}}})"), nullptr);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"n": {"type": "integer", "enum": [2.5]}}})")
                .find("holds 2.5, which type does not allow"),
            std::string::npos);
  const auto top = compiled(R"({"enum": ["x", true]})");
  EXPECT_TRUE(takes(*top, "\"x\""));
  EXPECT_TRUE(takes(*top, "true"));
  EXPECT_FALSE(takes(*top, "false"));
}

// anyOf, a list of types, $ref into $defs (a tree that refers to itself), allOf of one.
TEST(JsonSchema, AlternativesAndReferences) {
  const auto s = compiled(R"({
      "$defs": {"Node": {"type": "object", "properties": {"name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["name"]}},
      "type": "object",
      "properties": {"root": {"$ref": "#/$defs/Node"}, "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                     "id": {"type": ["integer", "string"]}, "wrapped": {"allOf": [{"$ref": "#/$defs/Node"}]}},
      "required": ["root", "note", "id"]})");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(
      takes(*s, R"({"root":{"name":"a","children":[{"name":"b","children":[]},{"name":"c"}]},"note":null,"id":7})"));
  EXPECT_TRUE(takes(*s, R"({"root":{"name":"a"},"note":"x","id":"7","wrapped":{"name":"w"}})"));
  EXPECT_FALSE(takes(*s, R"({"root":{"name":"a","children":[{}]},"note":null,"id":7})"));
  EXPECT_FALSE(takes(*s, R"({"root":{"name":"a"},"note":1,"id":7})"));
  EXPECT_FALSE(takes(*s, R"({"root":{"name":"a"},"note":null,"id":true})"));
  const auto tree = compiled(R"({"type": "array", "items": {"$ref": "#"}})");
  EXPECT_TRUE(takes(*tree, "[[],[[]]]"));
  EXPECT_FALSE(takes(*tree, "[1]"));
}

// A schema without a type takes any value, and the keywords of each type apply to values of that type.
TEST(JsonSchema, WithoutATypeAnyValueWithEachTypesKeywords) {
  const auto s =
      compiled(R"({"type": "object", "properties": {"x": {"maxLength": 1, "maxItems": 1}}, "required": ["x"]})");
  ASSERT_NE(s, nullptr);
  for (const char* ok : {"1", "\"a\"", "[2]", "{\"k\":[1,2]}", "null", "-0.5"})
    EXPECT_TRUE(takes(*s, std::string("{\"x\":") + ok + "}")) << ok;
  for (const char* bad : {"\"ab\"", "[1,2]", "nul", "01"}) EXPECT_FALSE(takes(*s, std::string("{\"x\":") + bad + "}"));
}

// `text` with the exponents of its numbers left out, so that a parser that holds numbers as doubles takes those
// past a double's range ("1E400", which JSON allows) as it takes the others.
std::string without_exponents(const std::string& text) {
  std::string out;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string && c == '\\') {
      out += text.substr(i++, 2);
      continue;
    }
    if (c == '"') in_string = !in_string;
    if (!in_string && (c == 'e' || c == 'E') && i > 0 && std::isdigit(static_cast<unsigned char>(text[i - 1]))) {
      auto exponent_byte = [](char b) { return b == '+' || b == '-' || std::isdigit(static_cast<unsigned char>(b)); };
      while (i + 1 < text.size() && exponent_byte(text[i + 1])) ++i;
      continue;
    }
    out += c;
  }
  return out;
}

// Random walks byte by byte among the bytes each place takes, then towards closing: no place a schema reaches is a
// dead end, and every walk ends in JSON that parses and has the schema's required keys.
TEST(JsonSchema, NoPlaceIsADeadEnd) {
  const std::vector<std::string> schemas = {
      R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},
          "tags": {"type": "array", "items": {"enum": ["a", "ab", "b"]}, "minItems": 1, "maxItems": 3},
          "x": {"anyOf": [{"type": "number"}, {"type": "null"}, {"type": "string", "minLength": 2}]}},
          "required": ["name", "tags"]})",
      R"({"$defs": {"T": {"type": "object", "properties": {"v": {"enum": [1, 12, 123]}, "kids": {"type": "array",
          "items": {"$ref": "#/$defs/T"}, "maxItems": 2}}, "required": ["v"]}}, "$ref": "#/$defs/T"})",
      R"({"type": "array", "items": {"type": "object", "additionalProperties": {"type": ["boolean", "string"]}}})",
      R"({"type": "object", "properties": {"a": {}, "b": {"const": "\u00e9\"x"}}, "required": ["b"]})",
      // alternatives that begin alike: objects, strings of different lengths, enums, integers and numbers
      R"({"type": "array", "items": {"anyOf": [
          {"type": "object", "properties": {"k": {"type": "string", "maxLength": 3}, "a": {"type": "integer"}},
           "required": ["k", "a"]},
          {"type": "object", "properties": {"k": {"enum": ["ab", "abcd", 1]}, "b": {"type": "array"}},
           "required": ["k"]},
          {"type": "string", "minLength": 2, "maxLength": 3}, {"enum": ["abcdef", 12, 123]}, {"type": "number"},
          {"type": "integer"}]}})",
  };
  std::mt19937 rng(17);
  for (const std::string& text : schemas) {
    const auto s = compiled(text);
    ASSERT_NE(s, nullptr);
    const nlohmann::json doc = nlohmann::json::parse(text);
    for (int walk = 0; walk < 150; ++walk) {
      JsonPrefix p(*s, walk % 2 == 0);
      std::string out;
      for (int step = 0; step < 3000 && !p.complete(); ++step) {
        const std::vector<uint8_t> next = bytes_taken(p);
        ASSERT_FALSE(next.empty()) << "dead end after " << out << " under " << text;
        uint8_t b = next[rng() % next.size()];
        if (step > 40) {  // then close where it can: the first of these bytes it takes
          const std::string_view closing = "\"}]n,1ab";
          for (size_t best = closing.size(); uint8_t c : next) {
            const size_t rank = closing.find(static_cast<char>(c));
            if (rank < best) best = rank, b = c;
          }
        }
        out += static_cast<char>(b);
        ASSERT_TRUE(p.feed(b));
      }
      ASSERT_TRUE(p.complete()) << "no end reached: " << out;
      const nlohmann::json value = nlohmann::json::parse(without_exponents(out), nullptr, false);
      ASSERT_FALSE(value.is_discarded()) << out;
      if (doc.contains("required"))
        for (const auto& key : doc["required"]) EXPECT_TRUE(value.contains(key.get<std::string>())) << out;
    }
  }
}

// The vocabulary must write each byte the schema spells (its keys, its enum and const values) with a token alone.
TEST(JsonRules, AVocabularyThatCannotSpellTheSchemaIsRefused) {
  std::vector<std::string> texts;
  for (char c : std::string_view("{}[]\":,truefalsn\\7D")) texts.emplace_back(1, c);
  const TokenTexts vocab(texts, false);
  auto v = JsonVocabulary::make(vocab);
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_TRUE(JsonRules::make(*v, compiled(R"({"type": "object", "properties": {"a": {}}})"), true).ok());
  auto refused = JsonRules::make(*v, compiled(R"({"type": "object", "properties": {"key": {"enum": ["x"]}}})"), true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("no token of their own for: k x y"), std::string::npos)
      << refused.status().to_string();
  // A bounded number may need any digit, '-' or '.' alone ([7, 7] takes "7" and nothing else).
  refused = JsonRules::make(*v, compiled(R"({"type": "object", "properties": {"n": {"type": "integer",
      "minimum": 7, "maximum": 7}}})"), true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("no token of their own for: - . 0 1 2 3 4 5 6 8 9"), std::string::npos)
      << refused.status().to_string();
}

}  // namespace
}  // namespace kvshare

namespace kvshare {
namespace {

// Inside strings under patterns, tokens whose characters are all safe at the place are taken unread
// (Pattern::safe_characters): the vocabulary walk still gives exactly the tokens whose every byte the place takes, at
// places reached by random walks, for patterns whose places are safe for all, some or no characters, and for one
// whose DFA outgrows its room.
TEST(JsonRules, AllowedUnderPatternsEqualsEveryTokenTriedAlone) {
  std::vector<std::string> texts = {"{", "}", "\"", "\":", ":", ",", " ", "\"text\"", "\"t", "ext", "\": \"",
                                    "c", "ca", "cat", "at", "d", "dog", "og", "the", " big", "a", "b", "ab", "ba",
                                    "abab", "bbbb", "@", "@x", "x@", "x", "xy", "z", "Z", "-", "1", "12", ".",
                                    "cat\"", "\"}", "a\"}", "é", "\xc3", "\\", "\\n", "a b", "  "};
  const size_t base = texts.size();
  for (size_t i = 0; i < base; ++i) texts.push_back(texts[i]);  // the same texts again: every id is offered
  const TokenTexts vocab(texts, false);
  auto vocabulary = std::make_shared<const JsonVocabulary>(vocab);
  for (const std::string pattern : {"cat|dog", "^[a-z]+@[a-z]+$", "^.{0,3}$", "^(?:a|b)*a(?:a|b){13}$", "^x", "b$"}) {
    const nlohmann::json schema_json = {{"type", "object"},
                                        {"properties", {{"text", {{"type", "string"}, {"pattern", pattern}}}}},
                                        {"required", {"text"}}, {"additionalProperties", false}};
    const auto schema = compiled(schema_json.dump());
    ASSERT_NE(schema, nullptr) << pattern;
    const JsonRules rules(vocabulary, schema, false);
    std::mt19937 rng(9);
    int in_string = 0;
    for (int walk = 0; walk < 60; ++walk) {
      JsonPrefix p = rules.start();
      for (int step = 0; step < 40 && !p.complete(); ++step) {
        std::vector<int32_t> expected;
        for (int32_t id = 0; id < vocab.size(); ++id) {
          JsonPrefix q = p;
          if (q.feed(vocab.text(id))) expected.push_back(id);
        }
        ASSERT_EQ(rules.allowed(p, false), expected) << pattern << ", step " << step;
        in_string += p.inside_string();
        if (expected.empty()) break;
        ASSERT_TRUE(p.feed(vocab.text(expected[rng() % expected.size()])));
      }
    }
    EXPECT_GT(in_string, 40) << pattern;
  }
}

}  // namespace
}  // namespace kvshare
