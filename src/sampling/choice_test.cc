#include "sampling/choice.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace kvshare {
namespace {

// A small vocabulary: id -> text ("" for a control token). Texts may repeat (a byte token and a piece).
struct Vocab {
  std::vector<std::string> texts;
  std::map<std::string, int32_t> first_id;  // the first id of each text, to name tokens in expectations
  explicit Vocab(std::vector<std::string> t) : texts(std::move(t)) {
    for (size_t i = 0; i < texts.size(); ++i) first_id.emplace(texts[i], static_cast<int32_t>(i));
  }
  int32_t id(const std::string& text) const { return first_id.at(text); }
  std::vector<int32_t> ids(const std::vector<std::string>& ts) const {
    std::vector<int32_t> out;
    for (const std::string& t : ts) out.push_back(id(t));
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::vector<int32_t> allowed(const ChoiceSet& set, const TokenTexts& texts, const std::string& so_far, bool at_start,
                             std::vector<int32_t> ends = {}) {
  return set.allowed(texts, so_far, at_start, ends);
}

TEST(Choice, TokensThatKeepTheTextTheStartOfAChoice) {
  const Vocab v({"", "p", "o", "s", "i", "t", "v", "e", "n", "g", "a", "pos", "itive", "positive", "neg", "ative",
                 "x", "po"});
  const TokenTexts texts(v.texts, false);
  auto set = ChoiceSet::make({"positive", "negative", "positive"}, texts, false);
  ASSERT_TRUE(set.ok()) << set.status().to_string();
  EXPECT_EQ(allowed(*set, texts, "", true), v.ids({"p", "po", "pos", "positive", "n", "neg"}));
  EXPECT_EQ(allowed(*set, texts, "pos", false), v.ids({"i", "itive"}));
  EXPECT_EQ(allowed(*set, texts, "negativ", false), v.ids({"e"}));
  EXPECT_TRUE(allowed(*set, texts, "x", false).empty()) << "no choice starts with x";
  EXPECT_FALSE(set->complete("posit"));
  EXPECT_TRUE(set->complete("positive"));
  EXPECT_TRUE(set->complete("negative"));
  EXPECT_FALSE(set->complete("positivex"));
}

TEST(Choice, AChoiceThatAnotherContinuesMayEndWithEos) {
  const Vocab v({"<eos>", "y", "e", "s", ",", " ", "i", "r", "yes"});
  std::vector<std::string> t = v.texts;
  t[0] = "";  // a control token adds no text
  const TokenTexts texts(t, false);
  auto set = ChoiceSet::make({"yes", "yes, sir"}, texts, false);
  ASSERT_TRUE(set.ok());
  const std::vector<int32_t> eos = {0};
  EXPECT_FALSE(set->complete("yes")) << "yes, sir goes on from it";
  EXPECT_EQ(allowed(*set, texts, "yes", false, eos), (std::vector<int32_t>{0, v.id(",")}));
  EXPECT_EQ(allowed(*set, texts, "yes", false), (std::vector<int32_t>{v.id(",")})) << "ignore_eos: no end";
  EXPECT_TRUE(set->complete("yes, sir"));
  EXPECT_EQ(allowed(*set, texts, "", true, eos), v.ids({"y", "yes"})) << "EOS only where a choice is whole";
}

TEST(Choice, NoTokenLeadsIntoADeadEnd) {
  // "a" starts "ab", but no token adds "b" alone: only "ab" may be drawn.
  const Vocab v({"a", "ab", "c"});
  const TokenTexts texts(v.texts, false);
  auto set = ChoiceSet::make({"ab", "ca"}, texts, false);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(allowed(*set, texts, "", true), v.ids({"ab", "c"}));
  EXPECT_EQ(allowed(*set, texts, "c", false), v.ids({"a"}));
  auto bad = ChoiceSet::make({"ab", "abd"}, texts, false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("choice \"abd\" cannot be spelled with this model's tokens"), std::string::npos)
      << bad.status().to_string();
}

TEST(Choice, TheFirstTokenDropsItsLeadingSpaceWhereTheTextDoes) {
  // SentencePiece: a completion that does not continue prompt text loses the first token's leading space.
  const Vocab v({" Paris", "Paris", " P", "aris", " ", "a", "r", "i", "s", "P", "  x", "x"});
  const TokenTexts texts(v.texts, /*strip_first_space=*/true);
  auto set = ChoiceSet::make({"Paris", " x"}, texts, /*strip_first_space=*/true);
  ASSERT_TRUE(set.ok()) << set.status().to_string();
  // " Paris" and " P" add "Paris" and "P" at the start; " x" needs a token that adds " x" once its space is gone,
  // or " " (which adds nothing and ends the start) then " x".
  EXPECT_EQ(allowed(*set, texts, "", true), v.ids({" Paris", "Paris", " P", "P", "  x", " "}));
  EXPECT_EQ(set->added_text(texts, v.id(" Paris"), true), "Paris");
  EXPECT_EQ(set->added_text(texts, v.id(" Paris"), false), " Paris");
  EXPECT_EQ(allowed(*set, texts, "P", false), v.ids({"a", "aris"}));
  // Continuing prompt text, the space stays: " Paris" would add " Paris", which no choice starts with.
  auto after_text = ChoiceSet::make({"Paris", " x"}, texts, /*strip_first_space=*/false);
  ASSERT_TRUE(after_text.ok());
  EXPECT_EQ(allowed(*after_text, texts, "", true), v.ids({"Paris", "P", " "}));
  EXPECT_EQ(after_text->added_text(texts, v.id(" Paris"), true), " Paris");
}

TEST(Choice, ALoneSpaceMayOpenAChoiceThatStartsWithASpace) {
  // After a prompt of special tokens alone, the first token's space is dropped: "▁" then "▁Lily" writes " Lily".
  const Vocab v({" ", " Lily", "Lily", "L", "i", "l", "y"});
  const TokenTexts texts(v.texts, true);
  auto set = ChoiceSet::make({" Lily"}, texts, true);
  ASSERT_TRUE(set.ok()) << set.status().to_string();
  EXPECT_EQ(allowed(*set, texts, "", true), v.ids({" "}));
  EXPECT_EQ(set->added_text(texts, v.id(" "), true), "");
  EXPECT_EQ(allowed(*set, texts, "", false), v.ids({" ", " Lily"}));
  // Without a lone space in the vocabulary, such a choice cannot be written.
  const Vocab w({" Lily", "Lily"});
  const TokenTexts no_space(w.texts, true);
  auto bad = ChoiceSet::make({" Lily"}, no_space, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no sequence of them writes exactly this text"), std::string::npos);
  EXPECT_TRUE(ChoiceSet::make({" Lily"}, no_space, false).ok()) << "continuing prompt text, the space stays";
}

TEST(Choice, AChoiceIsCompleteWhenNoLongerOneCanBeSpelledOn) {
  // "ab" goes on from "a" only through "b", which no token writes: "a" is complete.
  const Vocab v({"a", "ab"});
  const TokenTexts texts(v.texts, false);
  auto set = ChoiceSet::make({"a", "ab"}, texts, false);
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE(set->complete("a"));
  EXPECT_TRUE(set->complete("ab"));
}

TEST(Choice, RepeatedPlacesGiveTheSameTokens) {
  // The last few results are kept: asking again, or between other places, gives the same answer.
  const Vocab v({"a", "b", "ab", "c"});
  const TokenTexts texts(v.texts, false);
  auto set = ChoiceSet::make({"ab", "cab", "ca"}, texts, false);
  ASSERT_TRUE(set.ok());
  const std::vector<int32_t> start = allowed(*set, texts, "", true);
  for (const std::string place : {"c", "ca", "cab", "", "a", "c", ""}) {
    const std::vector<int32_t> first = allowed(*set, texts, place, place.empty());
    allowed(*set, texts, "ca", false);  // something else in between
    EXPECT_EQ(set->allowed(texts, place, place.empty(), {}), first) << place;
  }
  EXPECT_EQ(allowed(*set, texts, "", true), start);
  EXPECT_EQ(allowed(*set, texts, "ca", false, {9}), (std::vector<int32_t>{v.id("b"), 9}));
  EXPECT_EQ(allowed(*set, texts, "ca", false), (std::vector<int32_t>{v.id("b")})) << "other end ids, other result";
}

TEST(Choice, CharactersMaySpanTokens) {
  // "é" is two bytes; byte tokens spell it one byte at a time.
  const Vocab v({"\xC3", "\xA9", "caf", "\xC3\xA9"});
  const TokenTexts texts(v.texts, false);
  auto set = ChoiceSet::make({"caf\xC3\xA9"}, texts, false);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(allowed(*set, texts, "caf", false), v.ids({"\xC3", "\xC3\xA9"}));
  EXPECT_EQ(allowed(*set, texts, "caf\xC3", false), v.ids({"\xA9"}));
  EXPECT_TRUE(set->complete("caf\xC3\xA9"));
}

TEST(Choice, TokensWithTheSameTextAreAllAllowed) {
  // A byte token and a piece may add the same byte ("<0x41>" and "A").
  const TokenTexts texts({"A", "B", "A"}, false);
  auto set = ChoiceSet::make({"AB"}, texts, false);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(allowed(*set, texts, "", true), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(texts.ids_of("A").size(), 2u);
  EXPECT_TRUE(texts.ids_of("").empty());
}

}  // namespace
}  // namespace kvshare
