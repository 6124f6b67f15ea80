// include/kvshare/tokenizer.h, the tokenizer's public face, on GPT-2's real tokenizer: the same ids and text as
// the internal class, GPT-2's known ids, and its special token.
#include "kvshare/tokenizer.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {
namespace {

TEST(TokenizerPublicApi, Gpt2) {
  KV_REQUIRE_GPT2_TOKENIZER();
  auto loaded = Tokenizer::from_hf_dir(testing::gpt2_tokenizer_dir());
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  const Tokenizer& tok = **loaded;
  EXPECT_EQ(encode(tok, "Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(encode(tok, "Hello<|endoftext|>"), (std::vector<int32_t>{15496, 50256}));
  EXPECT_EQ(encode(tok, "Hello<|endoftext|>", true, /*parse_special=*/false), tok.encode("Hello<|endoftext|>", true, false));
  EXPECT_NE(encode(tok, "Hello<|endoftext|>", true, false).back(), 50256);
  EXPECT_EQ(decode(tok, {15496, 995, 50256}), "Hello world<|endoftext|>");
  EXPECT_EQ(decode(tok, {15496, 995, 50256}, /*skip_special_tokens=*/true), "Hello world");
  EXPECT_EQ(vocab_size(tok), 50257);
  EXPECT_EQ(bos_token_id(tok), 50256);
  EXPECT_EQ(eos_token_id(tok), 50256);
  EXPECT_EQ(eos_token_ids(tok), tok.eos_ids());
  EXPECT_FALSE(adds_bos_token(tok));
  EXPECT_EQ(token_text(tok, 50256), "<|endoftext|>");
  EXPECT_EQ(token_text(tok, 995), " world");
  EXPECT_TRUE(is_special_token(tok, 50256));
  EXPECT_FALSE(is_special_token(tok, 995));
}

}  // namespace
}  // namespace kvshare
