#include "sampling/stop_strings.h"

#include <gtest/gtest.h>

namespace kvshare {
namespace {

TEST(StopStrings, FindsOnlyMatchesTheNewTextCompletes) {
  const std::vector<std::string> stops = {"END", "\n\n"};
  // "EN" was there before (checked = 6), "D" completes it.
  auto m = find_stop_string("Hello END", 8, stops);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->pos, 6u);
  EXPECT_EQ(m->which, 0u);
  // A match wholly inside the text searched before does not count again.
  EXPECT_FALSE(find_stop_string("END and more", 12, stops).has_value());
  EXPECT_FALSE(find_stop_string("nothing here", 0, stops).has_value());
}

TEST(StopStrings, TheEarliestMatchWinsThenTheFirstListed) {
  const std::vector<std::string> stops = {"cd", "bc", "b"};
  auto m = find_stop_string("abcd", 0, stops);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->pos, 1u);
  EXPECT_EQ(m->which, 1u) << "\"bc\" and \"b\" both start at 1; \"bc\" is listed first";
}

TEST(StopStrings, HoldsBackTheLongestTailThatMayBecomeAStopString) {
  const std::vector<std::string> stops = {"</answer>", "STOP"};
  EXPECT_EQ(stop_prefix_tail("the answer</ans", stops), 5u);
  EXPECT_EQ(stop_prefix_tail("the answer<", stops), 1u);
  EXPECT_EQ(stop_prefix_tail("ST", stops), 2u);
  EXPECT_EQ(stop_prefix_tail("done.", stops), 0u);
  EXPECT_EQ(stop_prefix_tail("", stops), 0u);
  // A whole stop string at the end is not a proper prefix (it would have matched already).
  EXPECT_EQ(stop_prefix_tail("xSTOP", {"STOP"}), 0u);
  EXPECT_EQ(stop_prefix_tail("aaa", {"aaab"}), 3u);
}

}  // namespace
}  // namespace kvshare
