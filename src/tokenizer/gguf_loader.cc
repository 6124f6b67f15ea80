// BpeTokenizer::from_gguf: the vocabulary llama.cpp stores under tokenizer.ggml.* in a GGUF file.
#include <algorithm>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/tokenizer_model.h"

namespace kvshare {
namespace {

constexpr const char* kMetaSpace = "\xE2\x96\x81";  // "▁"

// Pre-tokenizer regexes for tokenizer.ggml.pre, applied in order (each splits the pieces of the one before).
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

Result<std::vector<std::string>> gguf_pre_patterns(const std::string& pre) {
  if (pre == "gpt-2" || pre == "default" || pre == "mpt" || pre == "olmo" || pre == "phi-2" || pre == "gpt-neox") {
    return std::vector<std::string>{kGpt2Pattern};
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "falcon3" || pre == "smaug-bpe") {
    return std::vector<std::string>{kLlama3Pattern};
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return std::vector<std::string>{kQwen2Pattern};
  if (pre == "starcoder" || pre == "refact" || pre == "command-r" || pre == "smollm" || pre == "codeshell") {
    return std::vector<std::string>{R"(\p{N})", kGpt2Pattern};
  }
  if (pre == "falcon") {
    return std::vector<std::string>{
        R"([\p{P}\$\+<=>\^~\|`]+)",
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))",
        R"([0-9][0-9][0-9])",
    };
  }
  return unimplemented("tokenizer.ggml.pre \"" + pre +
                       "\" is not supported (supported: gpt-2, default, mpt, olmo, phi-2, gpt-neox, llama-bpe, "
                       "llama3, falcon3, smaug-bpe, qwen2, deepseek-r1-qwen, starcoder, refact, command-r, smollm, "
                       "codeshell, falcon)");
}

namespace {

// An optional token id: -1 when the key is absent.
Result<int32_t> optional_id(const GgufFile& gguf, const std::string& key, int32_t fallback) {
  if (!gguf.contains(key)) return fallback;
  KV_ASSIGN_OR_RETURN(int64_t id, gguf.get_int(key));
  if (id < -1 || id > INT32_MAX) return invalid_argument(gguf.path() + ": " + key + " = " + std::to_string(id) + " is not a token id");
  return static_cast<int32_t>(id);
}

Result<bool> optional_bool(const GgufFile& gguf, const std::string& key, bool fallback) {
  if (!gguf.contains(key)) return fallback;
  return gguf.get_bool(key);
}

Result<std::unique_ptr<TokenizerModel>> load_gguf(const GgufFile& gguf) {
  if (!gguf.contains("tokenizer.ggml.model")) {
    return not_found(gguf.path() + " holds no tokenizer (no tokenizer.ggml.model key)");
  }
  KV_ASSIGN_OR_RETURN(std::string kind, gguf.get_string("tokenizer.ggml.model"));
  const bool spm = kind == "llama";
  if (kind != "gpt2" && kind != "llama") {
    return unimplemented(gguf.path() + ": tokenizer.ggml.model \"" + kind +
                         "\" is not supported (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece BPE)");
  }
  auto m = std::make_unique<TokenizerModel>();
  KV_ASSIGN_OR_RETURN(m->pieces, gguf.get_string_array("tokenizer.ggml.tokens"));
  m->vocab_source = "tokenizer.ggml.tokens";
  const size_t n = m->pieces.size();
  if (gguf.contains("tokenizer.ggml.token_type")) {
    KV_ASSIGN_OR_RETURN(std::vector<int32_t> types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return data_loss(gguf.path() + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                       " entries for " + std::to_string(n) + " tokens");
    }
    m->types.resize(n);
    for (size_t i = 0; i < n; ++i) {
      // GGUF: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; 0 (undefined) counts as normal.
      const int32_t t = types[i];
      if (t < 0 || t > 6)
        return data_loss(gguf.path() + ": tokenizer.ggml.token_type of token " + std::to_string(i) + " is " +
                         std::to_string(t) + "; the types are 0 (undefined) to 6 (byte)");
      m->types[i] = t >= 1 ? static_cast<TokenType>(t - 1) : TokenType::kNormal;
    }
  } else {
    m->types.assign(n, TokenType::kNormal);
  }

  if (spm) {
    m->merge_mode = MergeMode::kScore;
    m->symbol_mode = SymbolMode::kChars;
    m->byte_fallback = true;
    KV_ASSIGN_OR_RETURN(m->scores, gguf.get_float_array("tokenizer.ggml.scores"));
    KV_ASSIGN_OR_RETURN(const bool add_space_prefix, optional_bool(gguf, "tokenizer.ggml.add_space_prefix", true));
    if (add_space_prefix) m->normalizer.push_back({NormalizerStep::kPrepend, "", kMetaSpace});
    m->normalizer.push_back({NormalizerStep::kReplace, " ", kMetaSpace});
    m->decode_meta_as_space = true;
    m->decode_strip_space = add_space_prefix;
  } else {
    m->merge_mode = MergeMode::kRank;
    m->symbol_mode = SymbolMode::kByteLevel;
    KV_ASSIGN_OR_RETURN(std::vector<std::string> merges, gguf.get_string_array("tokenizer.ggml.merges"));
    m->merge_list.reserve(merges.size());
    for (const std::string& merge : merges) {
      const size_t space = merge.find(' ', 1);
      if (space == std::string::npos) return data_loss(gguf.path() + ": merge \"" + merge + "\" is not two pieces");
      m->merge_list.emplace_back(merge.substr(0, space), merge.substr(space + 1));
    }
    std::string pre = "default";
    if (gguf.contains("tokenizer.ggml.pre")) {
      KV_ASSIGN_OR_RETURN(pre, gguf.get_string("tokenizer.ggml.pre"));
    }
    auto patterns = gguf_pre_patterns(pre);
    if (!patterns.ok()) return patterns.status().with_context(gguf.path());
    for (const std::string& pattern : *patterns) {
      KV_ASSIGN_OR_RETURN(RegexSplitter splitter, RegexSplitter::create(pattern, false, SplitBehavior::kIsolated, false));
      m->pre_tokenizer.push_back(std::move(splitter));
    }
    m->ignore_merges = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  }

  // Control, unknown and user-defined tokens are cut out of the text before BPE.
  for (size_t id = 0; id < n; ++id) {
    const TokenType t = m->types[id];
    if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined) {
      m->added_tokens.push_back({static_cast<int32_t>(id), m->pieces[id], t != TokenType::kUserDefined, false, false});
    }
  }

  KV_ASSIGN_OR_RETURN(m->bos_id, optional_id(gguf, "tokenizer.ggml.bos_token_id", -1));
  KV_ASSIGN_OR_RETURN(m->eos_id, optional_id(gguf, "tokenizer.ggml.eos_token_id", -1));
  KV_ASSIGN_OR_RETURN(m->unk_id, optional_id(gguf, "tokenizer.ggml.unknown_token_id", -1));
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    KV_ASSIGN_OR_RETURN(const int32_t id, optional_id(gguf, key, -1));
    if (id >= 0) m->extra_eos_ids.push_back(id);
  }
  if (m->unk_id < 0) {
    auto unk = std::find(m->types.begin(), m->types.end(), TokenType::kUnknown);
    if (unk != m->types.end()) m->unk_id = static_cast<int32_t>(unk - m->types.begin());
  }
  // llama.cpp's defaults: SentencePiece models add BOS, byte-level ones do not.
  KV_ASSIGN_OR_RETURN(m->add_bos, optional_bool(gguf, "tokenizer.ggml.add_bos_token", spm));
  KV_ASSIGN_OR_RETURN(m->add_eos, optional_bool(gguf, "tokenizer.ggml.add_eos_token", false));
  return m;
}

}  // namespace

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::from_gguf(const GgufFile& gguf) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<TokenizerModel> model, load_gguf(gguf));
  KV_RETURN_IF_ERROR(finalize_model(*model).with_context("tokenizer in " + gguf.path()));
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(model)));
}

}  // namespace kvshare
