// Internal: the tokenizer library's readers of tokenizer files, for tools that write a tokenizer in another
// format (make_model writes a Hugging Face tokenizer as GGUF's tokenizer.ggml.*). Not part of the public API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer_model.h"

namespace kvshare {

// Reads a Hugging Face tokenizer folder as BpeTokenizer::from_hf_dir does (tokenizer.json, or vocab.json +
// merges.txt, or encoder.json + vocab.bpe; then tokenizer_config.json and generation_config.json beside it) but
// stops before finalize_model: `merge_list` still holds the merges in rank order, and nothing is indexed.
// Errors are from_hf_dir's.
Result<std::unique_ptr<TokenizerModel>> read_hf_tokenizer(const std::string& dir);

// The pre-tokenizer regexes that GGUF's tokenizer.ggml.pre `pre` stands for, applied in order (as llama.cpp
// splits); unimplemented for a name kvshare does not know.
Result<std::vector<std::string>> gguf_pre_patterns(const std::string& pre);

}  // namespace kvshare
