#include "sampling/json_pattern.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

namespace kvshare {
namespace {

std::shared_ptr<const Pattern> compiled(const std::string& re) {
  auto p = Pattern::compile(re);
  EXPECT_TRUE(p.ok()) << re << ": " << p.status().to_string();
  return p.ok() ? *p : nullptr;
}

// The states after `text`, or nullopt where a character is refused.
std::optional<std::string> run(const Pattern& p, const std::string& text) {
  std::string set = p.start();
  for (char c : text)
    if (!p.step(set, c)) return std::nullopt;
  return set;
}

const std::vector<std::string> kPatterns = {
    "^[a-c]+$", "ab|cd", "^(ab)*$", "^a{2,3}b?$", "\\d{2}-\\d", "^[^a]b.$", "^(?:x|y)+z$", "a.c", "^$",
    "^\\w+@\\w+\\.c$", "[A-Z]{2}\\d", "^-?\\d+(\\.\\d+)?$", "(a|ab)(c|bcd)(d*)", "^(a|b)c{0,2}$", "^a|b$",
    "^[\\d\\-x]{1,3}$", "^[.-]*$", "b+?c"};

// Against std::regex (ECMAScript, searched as JSON Schema's pattern is) over every text of up to six characters
// of a small alphabet: a whole text matches exactly when std::regex finds the pattern in it, and every start of a
// matching text goes on.
TEST(Pattern, AgreesWithStdRegexOnEveryShortText) {
  const std::string alphabet = "abcd1-.x";
  for (const std::string& re : kPatterns) {
    const auto p = compiled(re);
    ASSERT_NE(p, nullptr);
    const std::regex reference(re, std::regex::ECMAScript);
    std::vector<std::string> texts = {""};
    for (size_t len = 1; len <= 5; ++len) {
      const size_t before = texts.size();
      for (size_t i = 0; i < before; ++i)
        if (texts[i].size() == len - 1)
          for (char c : alphabet) texts.push_back(texts[i] + c);
    }
    for (const std::string& t : texts) {
      const bool want = std::regex_search(t, reference);
      const std::optional<std::string> set = run(*p, t);
      EXPECT_EQ(set.has_value() && p->matches(*set), want) << re << " on \"" << t << "\"";
      if (want)  // each start of it goes on
        for (size_t k = 0; k <= t.size(); ++k) EXPECT_TRUE(run(*p, t.substr(0, k)).has_value()) << re << " " << t;
    }
  }
}

// No dead ends: random walks over every character written take only characters after which a match is still
// possible, and end in texts std::regex finds the pattern in.
TEST(Pattern, RandomWalksEndInMatches) {
  std::mt19937 rng(7);
  for (const std::string& re : kPatterns) {
    const auto p = compiled(re);
    ASSERT_NE(p, nullptr);
    const std::regex reference(re, std::regex::ECMAScript);
    for (int walk = 0; walk < 200; ++walk) {
      std::string set = p->start(), text;
      for (int step = 0; step < 60; ++step) {
        std::vector<char> next;
        for (int c = 0x20; c < 0x7F; ++c) {
          std::string s = set;
          if (p->step(s, static_cast<char>(c))) next.push_back(static_cast<char>(c));
        }
        if (p->matches(set) && (next.empty() || step > 12 || rng() % 4 == 0)) break;
        ASSERT_FALSE(next.empty()) << re << ": dead end after \"" << text << "\"";
        const char c = next[rng() % next.size()];
        ASSERT_TRUE(p->step(set, c));
        text += c;
      }
      if (p->matches(set)) EXPECT_TRUE(std::regex_search(text, reference)) << re << " on \"" << text << "\"";
    }
  }
}

// A pattern whose DFA outgrows kMaxDfaStates (the last 14 characters of a text of a and b are each a state of its
// own): past the room, places are the NFA's sets themselves, and they still agree with std::regex.
TEST(Pattern, PlacesPastTheDfasRoomStillAgree) {
  const std::string re = "^(?:a|b)*a(?:a|b){13}$";
  const auto p = compiled(re);
  ASSERT_NE(p, nullptr);
  const std::regex reference(re, std::regex::ECMAScript);
  std::mt19937 rng(11);
  int raw = 0;
  for (int walk = 0; walk < 120; ++walk) {
    std::string place = p->start(), text;
    for (int step = 0; step < 80; ++step) {
      const char c = "ab"[rng() % 2];
      ASSERT_TRUE(p->step(place, c));
      text += c;
      raw += place.size() != sizeof(int32_t);
      EXPECT_EQ(p->matches(place), std::regex_search(text, reference)) << text;
    }
    std::string dead = place;
    EXPECT_FALSE(p->step(dead, 'c'));
  }
  EXPECT_GT(raw, 100);  // the room was outgrown
}

// The safe characters of a place: any text of them alone goes on (checked on random texts), and each other
// written character ends every way to a match after some text of safe ones (here: at once or after one).
TEST(Pattern, SafeCharactersNeverLeadToADeadEnd) {
  struct Case {
    std::string re, text, safe;  // safe: the expected characters, "*" for all written ones
  };
  std::string written;
  for (int c = 0x20; c < 0x7F; ++c)
    if (Pattern::writable(static_cast<char>(c))) written += static_cast<char>(c);
  for (const Case& k : std::vector<Case>{{"cat|dog", "the big ca", "*"},
                                         {"^[a-z]+@[a-z]+$", "ab", "abcdefghijklmnopqrstuvwxyz"},
                                         {"^[a-z]+@[a-z]+$", "ab@c", "abcdefghijklmnopqrstuvwxyz"},
                                         {"^.{0,5}$", "ab", ""},
                                         {"^(ab)*$", "", ""},
                                         {"x", "", "*"},
                                         {"^x", "", "x"},  // once x is read, anything may follow
                                         {"^x", "x", "*"}}) {
    const auto p = compiled(k.re);
    ASSERT_NE(p, nullptr);
    const std::optional<std::string> place = run(*p, k.text);
    ASSERT_TRUE(place.has_value()) << k.re << " " << k.text;
    const std::bitset<128>& safe = p->safe_characters(*place);
    std::string got;
    for (char c : written)
      if (safe.test(static_cast<size_t>(c))) got += c;
    EXPECT_EQ(got, k.safe == "*" ? written : k.safe) << k.re << " at \"" << k.text << "\"";
    std::mt19937 rng(5);
    for (int t = 0; t < 200 && !got.empty(); ++t) {
      std::string text = k.text;
      for (int i = 0; i < 30; ++i) text += got[rng() % got.size()];
      EXPECT_TRUE(run(*p, text).has_value()) << k.re << " on \"" << text << "\"";
    }
  }
}

// Finding a place's safe characters visits at most kMaxSafeRegion states: (?:.?){62}a.{14}'s first place reaches
// thousands, and a search of all of them took the DFA's whole room (found by a review helper), and 0.7 s.
TEST(Pattern, SafeCharactersSearchIsBounded) {
  const auto p = compiled("(?:.?){62}a.{14}");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->safe_characters(p->start()).none());
  EXPECT_LE(p->dfa_states(), 2 + Pattern::kMaxSafeRegion);
  const auto small = compiled("^[a-z]+@[a-z]+$");  // a small region: found
  ASSERT_NE(small, nullptr);
  EXPECT_TRUE(small->safe_characters(*run(*small, "ab")).test('q'));
}

TEST(Pattern, WhatItCannotFollowIsRefused) {
  for (const char* re : {"(a)\\1", "(?=a)b", "a(?!b)", "\\bword", "a^b", "(^a)", "(a$)b", "[z-a]", "(a", "a)", "*a",
                         "\\p{L}", "^\"$", "^\\\\$"}) {
    auto p = Pattern::compile(re);
    EXPECT_FALSE(p.ok()) << re;
  }
  EXPECT_NE(Pattern::compile("^[a-z]{600}$").status().message().find("more than 512 states"), std::string::npos);
  // Found by a review helper: patterns ECMA and Python refuse, or read differently, were given a meaning of their
  // own. Each is refused now.
  for (const char* re : {"^a{3,1}$", "^a**$", "^a{2}{2}$", "^a{1,2}{3}$", "(?<x)(y>z)", "(?<n>a)", "{1}", "^a{,2}$",
                         "^a{", "[]a]", "[^]a]", "\u00e9", "^\u00e9?a$", "^[\\u00e9-z]$", "(?:.?){250}"}) {
    auto p = Pattern::compile(re);
    EXPECT_FALSE(p.ok()) << re;
  }
  EXPECT_NE(Pattern::compile("(?:.?){250}").status().message().find("closure entries"), std::string::npos);
  const auto one = compiled("^a{000001}$");  // (more than five digits were a literal '{')
  ASSERT_NE(one, nullptr);
  EXPECT_TRUE(one->matches(*run(*one, "a")));
  const auto outside = compiled("^[^\\u00e9-\\u00ff]$");  // a range past ASCII: none of it is written
  ASSERT_NE(outside, nullptr);
  EXPECT_TRUE(outside->matches(*run(*outside, "-")));
  EXPECT_NE(Pattern::compile("^\"$").status().message().find("no text this server writes matches it"),
            std::string::npos);
  // The characters a match cannot do without, for the vocabulary check.
  const auto p = compiled("^A[0-9]b$");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->forced().test('A') && p->forced().test('b') && !p->forced().test('0'));
}

}  // namespace
}  // namespace kvshare
