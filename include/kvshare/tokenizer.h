// The model's tokenizer as a library user sees it: Engine::tokenizer() hands out a `const Tokenizer&` whose class
// is internal (src/tokenizer/); these functions are its public face: text to token ids and back, the special
// tokens and the vocabulary size.
//
//   const kvshare::Tokenizer& tok = engine->tokenizer();
//   std::vector<int32_t> ids = kvshare::encode(tok, "Once upon a time");
//   std::string text = kvshare::decode(tok, ids);
//
// A Tokenizer is immutable: these may be called from many threads at once.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvshare {

class Tokenizer;

// Token ids of `text`. add_special_tokens: BOS (and EOS) as the model's files say. parse_special: text that
// spells a special token ("<|eot_id|>") becomes that token; when false it is tokenized as plain text.
std::vector<int32_t> encode(const Tokenizer& tokenizer, std::string_view text, bool add_special_tokens = true,
                            bool parse_special = true);
// The text of `ids`, valid UTF-8 (bytes that form no character become U+FFFD); skip_special_tokens drops BOS, EOS,
// chat markers and the unknown token. Ids outside the vocabulary decode to nothing.
std::string decode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special_tokens = false);
// The raw bytes one token stands for ("" outside the vocabulary); for special tokens, their text ("<s>").
std::string token_text(const Tokenizer& tokenizer, int32_t id);
bool is_special_token(const Tokenizer& tokenizer, int32_t id);  // BOS, EOS, chat markers, unknown

int32_t vocab_size(const Tokenizer& tokenizer);
int32_t bos_token_id(const Tokenizer& tokenizer);  // -1 when the model has none
int32_t eos_token_id(const Tokenizer& tokenizer);  // -1 when the model has none
// Every id that ends generation: EOS, end-of-turn tokens, and those generation_config.json or the GGUF lists.
std::vector<int32_t> eos_token_ids(const Tokenizer& tokenizer);
bool adds_bos_token(const Tokenizer& tokenizer);  // encode(..., add_special_tokens=true) starts with BOS

}  // namespace kvshare
