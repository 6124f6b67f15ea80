#include "sampling/json_format.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <set>
#include <string>

namespace kvshare {
namespace {

std::string date_text(int y, int m, int d) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", y, m, d);
  return buf;
}

// Dates against std::chrono's calendar: every whole text of years 0000-0030, 1890-2110 and 9980-9999 (months and
// days 00-39, so that impossible ones are among them) is a date exactly when the calendar says the day exists (and
// the year is 1 or later, as Python's datetime has it); every start of a real date is reachable, and random starts
// that are reachable begin some real date.
TEST(StringFormat, DatesAreTheCalendarsDays) {
  std::set<std::string> starts;
  auto years = [](auto&& f) {
    for (int y = 0; y <= 30; ++y) f(y);
    for (int y = 1890; y <= 2110; ++y) f(y);
    for (int y = 9980; y <= 9999; ++y) f(y);
  };
  years([&](int y) {
    for (int m = 0; m < 40; ++m) {
      for (int d = 0; d < 40; ++d) {
        const std::string t = date_text(y, m, d);
        const auto ymd = std::chrono::year_month_day{std::chrono::year{y}, std::chrono::month{static_cast<unsigned>(m)},
                                                     std::chrono::day{static_cast<unsigned>(d)}};
        const bool real = y >= 1 && ymd.ok();
        ASSERT_EQ(format_complete(StringFormat::kDate, t), real) << t;
        if (real)
          for (size_t k = 1; k <= t.size(); ++k) starts.insert(t.substr(0, k));
      }
    }
  });
  for (const std::string& s : starts) ASSERT_TRUE(format_reachable(StringFormat::kDate, s)) << s;
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const int y = std::vector<int>{0, 7, 30, 1900, 2000, 2023, 2024, 2100, 9999}[rng() % 9];
    std::string t = date_text(y, static_cast<int>(rng() % 40), static_cast<int>(rng() % 40));
    t.resize(4 + rng() % 7);
    if (format_reachable(StringFormat::kDate, t)) ASSERT_TRUE(starts.count(t)) << t;
  }
}

TEST(StringFormat, TimesDateTimesAndUuids) {
  for (const char* ok : {"00:00:00Z", "23:59:59+14:00", "12:30:05.5-03:30", "12:30:05.123456Z"})
    EXPECT_TRUE(format_complete(StringFormat::kTime, ok)) << ok;
  for (const char* bad : {"24:00:00Z", "12:60:00Z", "12:00:60Z", "12:00:00", "12:00:00.Z", "12:00:00.1234567Z",
                          "12:00:00+24:00", "12:00:00Zx", "1:00:00Z"})
    EXPECT_FALSE(format_complete(StringFormat::kTime, bad)) << bad;
  EXPECT_TRUE(format_reachable(StringFormat::kTime, "12:00:00"));  // then a fraction or an offset
  EXPECT_FALSE(format_reachable(StringFormat::kTime, "3"));
  EXPECT_TRUE(format_complete(StringFormat::kDateTime, "2024-02-29T23:59:59.999Z"));
  EXPECT_FALSE(format_complete(StringFormat::kDateTime, "2023-02-29T23:59:59Z"));
  EXPECT_FALSE(format_reachable(StringFormat::kDateTime, "2024-02-29t"));
  EXPECT_TRUE(format_complete(StringFormat::kUuid, "123e4567-e89b-12d3-A456-426614174000"));
  EXPECT_FALSE(format_reachable(StringFormat::kUuid, "123e4567-e89b-12d3-g"));
  EXPECT_EQ(string_format("uri"), std::nullopt);
}

// No dead ends: from any start a random walk reaches, some character goes on, and the walk can always end.
TEST(StringFormat, EveryStartGoesOnToAWholeText) {
  std::mt19937 rng(9);
  for (StringFormat f : {StringFormat::kDate, StringFormat::kTime, StringFormat::kDateTime, StringFormat::kUuid}) {
    const std::string chars = std::string(format_characters(f)) + "ABCDEF";
    for (int walk = 0; walk < 3000; ++walk) {
      std::string t;
      while (true) {
        std::string next;
        for (char c : chars)
          if (format_reachable(f, t + c)) next += c;
        if (format_complete(f, t) && (next.empty() || rng() % 3 == 0)) break;
        ASSERT_FALSE(next.empty()) << "dead end after " << t;
        t += next[rng() % next.size()];
        ASSERT_LE(t.size(), 36u) << t;  // (a UUID is the longest)
      }
      ASSERT_TRUE(format_complete(f, t)) << t;
    }
  }
}

}  // namespace
}  // namespace kvshare
