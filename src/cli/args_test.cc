#include "cli/args.h"

#include <gtest/gtest.h>

namespace kvshare::cli {
namespace {

const std::vector<FlagSpec> kSpecs = {{"model", true, ""}, {"json", false, ""}, {"max-tokens", true, ""}};

TEST(Args, ParsesValuesFlagsAndPositionals) {
  auto a = Args::parse("x", kSpecs, {"--model", "m", "--json", "hello", "--max-tokens=5"});
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(*a->get("model"), "m");
  EXPECT_TRUE(a->has("json"));
  EXPECT_EQ(*a->get_int("max-tokens", 0), 5);
  EXPECT_EQ(a->positional(), std::vector<std::string>{"hello"});
}

TEST(Args, RejectsUnknownAndMalformedFlags) {
  auto a = Args::parse("generate", kSpecs, {"--modle", "m"});
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("unknown flag --modle"), std::string::npos);
  EXPECT_FALSE(Args::parse("x", kSpecs, {"--model"}).ok());
  EXPECT_FALSE(Args::parse("x", kSpecs, {"--json=1"}).ok());
  auto b = Args::parse("x", kSpecs, {"--max-tokens", "ten"});
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->get_int("max-tokens", 0).ok());
}

TEST(Args, ParsesMemorySizes) {
  EXPECT_EQ(parse_memory_size("2GiB")->bytes, int64_t{2} << 30);
  EXPECT_EQ(parse_memory_size("512MiB")->bytes, int64_t{512} << 20);
  EXPECT_EQ(parse_memory_size("1000")->bytes, 1000);
  EXPECT_DOUBLE_EQ(parse_memory_size("0.3")->fraction, 0.3);
  EXPECT_FALSE(parse_memory_size("-1").ok());
  EXPECT_FALSE(parse_memory_size("3 apples").ok());
  EXPECT_FALSE(parse_memory_size("").ok());
}

}  // namespace
}  // namespace kvshare::cli
