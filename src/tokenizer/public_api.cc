// include/kvshare/tokenizer.h over the internal Tokenizer.
#include "kvshare/tokenizer.h"

#include "tokenizer/tokenizer.h"

namespace kvshare {

std::vector<int32_t> encode(const Tokenizer& tokenizer, std::string_view text, bool add_special_tokens,
                            bool parse_special) {
  return tokenizer.encode(text, add_special_tokens, parse_special);
}

std::string decode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip_special_tokens) {
  return tokenizer.decode(ids, skip_special_tokens);
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) { return tokenizer.token_piece(id); }
bool is_special_token(const Tokenizer& tokenizer, int32_t id) { return tokenizer.is_special(id); }
int32_t vocab_size(const Tokenizer& tokenizer) { return tokenizer.vocab_size(); }
int32_t bos_token_id(const Tokenizer& tokenizer) { return tokenizer.bos_id(); }
int32_t eos_token_id(const Tokenizer& tokenizer) { return tokenizer.eos_id(); }
std::vector<int32_t> eos_token_ids(const Tokenizer& tokenizer) { return tokenizer.eos_ids(); }
bool adds_bos_token(const Tokenizer& tokenizer) { return tokenizer.adds_bos(); }

}  // namespace kvshare
