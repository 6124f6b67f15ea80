#include "cli/args.h"
#include "cli/engine_flags.h"

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

// A repeatable flag keeps every value in order; any other flag given twice is an error naming it.
TEST(Args, OnlyRepeatableFlagsMayBeGivenTwice) {
  std::vector<FlagSpec> specs = kSpecs;
  specs.push_back({"stop", true, "", true});
  auto a = Args::parse("x", specs, {"--stop", "a", "--model", "m", "--stop=b c"});
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->get_all("stop"), (std::vector<std::string>{"a", "b c"}));
  EXPECT_EQ(a->get_all("model"), std::vector<std::string>{"m"});
  EXPECT_TRUE(a->get_all("json").empty());
  auto twice = Args::parse("x", specs, {"--model", "m", "--model", "n"});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("--model is given twice"), std::string::npos);
}

// Control characters in a message (a NUL inside a name a file gave cut the line short) are written as escapes.
TEST(Args, MessagesArePrintable) {
  const char with_nul[] = "model_type 'lla\0ma'";
  EXPECT_EQ(printable(std::string(with_nul, sizeof with_nul - 1)), "model_type 'lla\\0ma'");
  EXPECT_EQ(printable("a\x1b[2Jb\x7f"), "a\\x1b[2Jb\\x7f");
  EXPECT_EQ(printable("line one\n\tline two"), "line one\n\tline two");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 as it is
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

TEST(EngineFlags, BuildTheEngineConfig) {
  auto a = Args::parse("serve", engine_flag_specs(),
                       {"--model", "m.gguf", "--kv-cache-memory", "64MiB", "--kv-cache-prefault", "--no-prefix-cache"});
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  auto c = engine_config_from(*a);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model_path, "m.gguf");
  EXPECT_EQ(c->kv_cache_bytes, int64_t{64} << 20);
  EXPECT_TRUE(c->kv_cache_prefault);
  EXPECT_FALSE(c->enable_prefix_caching);
  auto d = engine_config_from(*Args::parse("serve", engine_flag_specs(), {"--model", "m.gguf"}));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->kv_cache_prefault);
  EXPECT_TRUE(d->enable_prefix_caching);
}

}  // namespace
}  // namespace kvshare::cli
