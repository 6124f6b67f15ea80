// The public kvshare::Tokenizer (include/kvshare/tokenizer.h) over the internal BpeTokenizer and the model's
// chat template (src/chat).
#pragma once

#include <memory>
#include <string>

#include "kvshare/tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace kvshare {

// The public face of `tokenizer`, with the chat template of the model at `model_path` (read now; a model without
// one is fine, a broken one is reported by apply_chat_template).
std::unique_ptr<Tokenizer> make_public_tokenizer(std::shared_ptr<const BpeTokenizer> tokenizer,
                                                 const std::string& model_path);

}  // namespace kvshare
