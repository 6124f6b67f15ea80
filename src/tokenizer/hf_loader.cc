// BpeTokenizer::from_hf_dir: tokenizer.json (the `tokenizers` library's format), or GPT-2's vocab.json +
// merges.txt, plus tokenizer_config.json and generation_config.json beside them.
#include <algorithm>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/json_limits.h"
#include "core/mapped_file.h"
#include "formats/json_builder.h"
#include "formats/json_error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/tokenizer_model.h"

namespace kvshare {
namespace {

using Json = nlohmann::json;

constexpr const char* kMetaSpace = "\xE2\x96\x81";  // "▁"
constexpr int64_t kMaxTokenId = kMaxVocabSize;
constexpr int64_t kMaxAddedTokenGap = 1 << 16;

// The member `key` of `obj`, or nullptr when it is absent or null.
const Json* member(const Json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

// A value for an error message, shortened.
std::string shown(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() <= 40 ? s : s.substr(0, 40) + "...";
}

// The boolean member `key` of `obj`: `fallback` when it is absent or null, an error naming it (after `where`,
// such as "model.") when it is anything but true or false: "true" or 1 was read as the fallback.
Result<bool> bool_member(const Json& obj, const char* key, bool fallback, const std::string& where) {
  const Json* v = member(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean())
    return invalid_argument(where + key + " must be true or false, not a " + v->type_name() + " (" + shown(*v) + ")");
  return v->get<bool>();
}

std::string string_member(const Json& obj, const char* key, const std::string& fallback = "") {
  const Json* v = member(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}

// A token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}; "" when absent.
std::string token_name(const Json* v) {
  if (v == nullptr) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) return string_member(*v, "content");
  return "";
}

Result<Json> parse_json_file(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::string text, read_model_text_file(path));
  KV_RETURN_IF_ERROR(check_json_limits(text, path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument(path + " is not valid JSON" + json_syntax_error(text));
  return j;
}

// model.vocab and model.merges: most of a tokenizer.json (128k pieces and 280k merges for Llama-3).
struct BpeTables {
  bool has_vocab = false;
  bool has_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  std::string error;  // the first malformed entry
  // merges.txt (GPT-2's files): its path and the line of each merge, for errors; empty for tokenizer.json.
  std::string merges_file;
  std::vector<uint32_t> merge_lines;
};

// Splits a merge "a b" at its space. As the tokenizers library reads it, a merge holds exactly one: "a b c" is
// not a merge (it was read as "a" + "b c"); pieces with spaces are written as pairs ["a b", "c"].
bool split_merge(std::string_view merge, BpeTables& tables) {
  const size_t space = merge.find(' ');
  if (space == std::string_view::npos || merge.find(' ', space + 1) != std::string_view::npos) return false;
  tables.merges.emplace_back(std::string(merge.substr(0, space)), std::string(merge.substr(space + 1)));
  return true;
}

constexpr const char* kNotTwoPieces = " is not two pieces with one space between them (\"a b\")";
constexpr const char* kNeitherForm = " is neither \"a b\" nor [\"a\", \"b\"]";

// `s` as a JSON string, for error messages (bytes that are not UTF-8 shown as U+FFFD).
std::string json_quoted(const std::string& s) { return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace); }

// A merge as a file spells it: "a b", or ["a b", "c"] when a piece holds a space.
std::string merge_text(const std::string& left, const std::string& right) {
  if (left.find(' ') == std::string::npos && right.find(' ') == std::string::npos)
    return json_quoted(left + " " + right);
  return "[" + json_quoted(left) + ", " + json_quoted(right) + "]";
}

// tokenizer.json's SAX handler: model.vocab and model.merges go into `tables` as they stream past instead of
// being built as JSON values (that would take most of the loading time); the rest is built as JSON, with
// model.vocab and model.merges left empty. Linear in the text (json_builder.h). A malformed vocab entry or
// merge is noted in tables.error (the first one) and skipped.
class TokenizerFileBuilder final : public JsonBuilder {
 public:
  explicit TokenizerFileBuilder(BpeTables& tables) : JsonBuilder(/*reject_duplicate_keys=*/false), t_(tables) {}

  bool null() override { return taken() ? take(Json(nullptr)) : JsonBuilder::null(); }
  bool boolean(bool v) override { return taken() ? take(Json(v)) : JsonBuilder::boolean(v); }
  bool number_integer(number_integer_t v) override { return taken() ? take(Json(v)) : JsonBuilder::number_integer(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return taken() ? take(Json(v)) : JsonBuilder::number_unsigned(v);
  }
  bool number_float(number_float_t v, const string_t& text) override {
    return taken() ? take(Json(v)) : JsonBuilder::number_float(v, text);
  }
  bool string(string_t& v) override { return taken() ? take(Json(std::move(v))) : JsonBuilder::string(v); }

  bool key(string_t& k) override {
    if (skip_ > 0) return true;
    if (depth_ == 1) key1_ = k, key2_.clear();
    if (depth_ == 2) key2_ = k;
    if (depth_ == 3 && in_vocab_) {
      piece_ = std::move(k);
      return true;
    }
    return JsonBuilder::key(k);
  }
  bool start_object(std::size_t size) override {
    if (taken()) return start_skipped(in_merges_ && !in_pair_ ? merge_name() + kNeitherForm : "");
    if (depth_ == 2 && key1_ == "model" && key2_ == "vocab") in_vocab_ = t_.has_vocab = true;
    ++depth_;
    return JsonBuilder::start_object(size);
  }
  bool start_array(std::size_t size) override {
    if (depth_ == 3 && in_merges_ && skip_ == 0) {  // a merge written as ["a", "b"]
      in_pair_ = true;
      pair_.clear();
      ++depth_;
      return true;
    }
    if (taken()) return start_skipped("");
    if (depth_ == 2 && key1_ == "model" && key2_ == "merges") in_merges_ = t_.has_merges = true;
    ++depth_;
    return JsonBuilder::start_array(size);
  }
  bool end_object() override { return end_container() || JsonBuilder::end_object(); }
  bool end_array() override { return end_container() || JsonBuilder::end_array(); }

 private:
  // Whether the next value is one this handler takes (or skips) rather than the builder.
  bool taken() const { return skip_ > 0 || (depth_ == 3 && (in_vocab_ || in_merges_)) || (depth_ == 4 && in_pair_); }

  bool take(const Json& v) {
    if (skip_ > 0) return true;
    if (in_pair_) {
      if (v.is_string()) {
        pair_.push_back(v.get<std::string>());
      } else {
        pair_.resize(3);  // not a pair of strings
      }
    } else if (in_vocab_) {
      if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxTokenId) {
        t_.vocab.emplace_back(std::move(piece_), v.get<int64_t>());
      } else {
        note("vocab entry \"" + piece_ + "\" has no valid id (ids are integers from 0 to " +
             std::to_string(kMaxTokenId - 1) + ", the vocabulary size limit)");
      }
    } else if (!v.is_string()) {
      note(merge_name() + " " + shown(v) + kNeitherForm);
    } else if (!split_merge(v.get_ref<const std::string&>(), t_)) {
      note(merge_name() + " " + shown(v) + kNotTwoPieces);
    }
    return true;
  }
  // A container where an entry of the vocabulary, a merge or a merge's part should be: skipped whole.
  bool start_skipped(const std::string& merge_error) {
    if (skip_ == 0) {
      if (in_pair_) pair_.resize(3);
      else if (in_vocab_) note("vocab entry \"" + piece_ + "\" has no valid id (ids are integers from 0 to " +
             std::to_string(kMaxTokenId - 1) + ", the vocabulary size limit)");
      else if (!merge_error.empty()) note(merge_error);
    }
    ++skip_;
    ++depth_;
    return true;
  }
  // Closes a container this handler opened (true), or lets the builder close its own (false).
  bool end_container() {
    --depth_;
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    if (in_pair_ && depth_ == 3) {
      in_pair_ = false;
      if (pair_.size() == 2) {
        t_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      } else {
        note(merge_name() + kNeitherForm);
      }
      return true;
    }
    if (depth_ == 2) in_vocab_ = in_merges_ = false;
    return false;
  }
  // The merge being read (the ones before it were all well formed, or an error is noted already).
  std::string merge_name() const { return "model.merges[" + std::to_string(t_.merges.size()) + "]"; }
  void note(std::string message) {
    if (t_.error.empty()) t_.error = std::move(message);
  }

  BpeTables& t_;
  int depth_ = 0;                 // containers open
  int skip_ = 0;                  // containers open inside a skipped one (itself included)
  std::string key1_, key2_;       // the keys being read at depths 1 and 2
  bool in_vocab_ = false, in_merges_ = false, in_pair_ = false;
  std::string piece_;             // the vocab key whose id comes next
  std::vector<std::string> pair_;  // the parts of a merge written as ["a", "b"]
};

Result<Json> parse_tokenizer_file(const std::string& path, BpeTables& tables) {
  KV_ASSIGN_OR_RETURN(std::string text, read_model_text_file(path));
  TokenizerFileBuilder builder(tables);
  if (Status st = run_json_builder(text, builder); !st.ok()) return invalid_argument(path + " is not valid JSON (" + st.message() + ")");
  return std::move(builder.result());
}

// Finds a token by its text: added tokens first, then the vocabulary. -1 when there is none.
int32_t find_token(const TokenizerModel& m, const std::string& text) {
  if (text.empty()) return -1;
  for (const AddedToken& t : m.added_tokens) {
    if (t.content == text) return t.id;
  }
  for (size_t id = 0; id < m.pieces.size(); ++id) {
    if (m.pieces[id] == text && m.types[id] != TokenType::kUnused) return static_cast<int32_t>(id);
  }
  return -1;
}

// Puts `piece` at `id`, growing the vocabulary (with unused slots) as needed.
void set_piece(TokenizerModel& m, int32_t id, std::string piece, TokenType type) {
  if (static_cast<size_t>(id) >= m.pieces.size()) {
    m.pieces.resize(static_cast<size_t>(id) + 1);
    m.types.resize(static_cast<size_t>(id) + 1, TokenType::kUnused);
  }
  m.pieces[id] = std::move(piece);
  m.types[id] = type;
}

// The position in m.added_tokens of each id there (for add_added_token: a later entry with an id replaces it).
std::unordered_map<int32_t, size_t> added_token_index(const TokenizerModel& m) {
  std::unordered_map<int32_t, size_t> index;
  for (size_t i = 0; i < m.added_tokens.size(); ++i) index[m.added_tokens[i].id] = i;
  return index;
}

Status add_added_token(TokenizerModel& m, const Json& t, std::unordered_map<int32_t, size_t>& index) {
  const Json* id = member(t, "id");
  const Json* content = member(t, "content");
  if (id == nullptr || !id->is_number_integer() || content == nullptr || !content->is_string()) {
    return invalid_argument("an added token lacks an integer \"id\" or a string \"content\"");
  }
  // Added tokens follow the vocabulary; an id far past it would only make a huge empty vocabulary.
  const int64_t raw_id = id->get<int64_t>();
  if (raw_id < 0 || raw_id >= static_cast<int64_t>(m.pieces.size()) + kMaxAddedTokenGap) {
    return invalid_argument("added token id " + std::to_string(raw_id) + " is not a valid id (the vocabulary has " +
                            std::to_string(m.pieces.size()) + " pieces)");
  }
  AddedToken added;
  added.id = static_cast<int32_t>(raw_id);
  added.content = content->get<std::string>();
  const std::string where = "added token " + shown(*content) + ": ";
  KV_ASSIGN_OR_RETURN(added.special, bool_member(t, "special", false, where));
  KV_ASSIGN_OR_RETURN(added.lstrip, bool_member(t, "lstrip", false, where));
  KV_ASSIGN_OR_RETURN(added.rstrip, bool_member(t, "rstrip", false, where));
  set_piece(m, added.id, added.content, added.special ? TokenType::kControl : TokenType::kUserDefined);
  if (auto same = index.find(added.id); same != index.end()) {
    m.added_tokens[same->second] = std::move(added);
  } else {
    index.emplace(added.id, m.added_tokens.size());
    m.added_tokens.push_back(std::move(added));
  }
  return Status::ok_status();
}

Status add_splitter(TokenizerModel& m, const std::string& pattern, bool literal, SplitBehavior behavior,
                    bool invert) {
  KV_ASSIGN_OR_RETURN(RegexSplitter splitter, RegexSplitter::create(pattern, literal, behavior, invert));
  m.pre_tokenizer.push_back(std::move(splitter));
  return Status::ok_status();
}

Result<SplitBehavior> parse_behavior(const std::string& name) {
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return unimplemented("unknown split behavior \"" + name + "\"");
}

Status parse_normalizer(const Json& n, TokenizerModel& m) {
  const std::string type = string_member(n, "type");
  if (type == "Sequence") {
    const Json* list = member(n, "normalizers");
    if (list == nullptr || !list->is_array()) return invalid_argument("normalizer Sequence without \"normalizers\"");
    for (const Json& inner : *list) KV_RETURN_IF_ERROR(parse_normalizer(inner, m));
    return Status::ok_status();
  }
  if (type == "Prepend") {
    m.normalizer.push_back({NormalizerStep::kPrepend, "", string_member(n, "prepend")});
    return Status::ok_status();
  }
  if (type == "Replace") {
    const Json* pattern = member(n, "pattern");
    const Json* literal = pattern != nullptr ? member(*pattern, "String") : nullptr;
    if (literal == nullptr || !literal->is_string()) {
      return unimplemented("normalizer Replace is supported only with a {\"String\": ...} pattern");
    }
    m.normalizer.push_back({NormalizerStep::kReplace, literal->get<std::string>(), string_member(n, "content")});
    return Status::ok_status();
  }
  if (type == "NFC") return Status::ok_status();  // input is taken to be NFC already (see tokenizer.h)
  return unimplemented("normalizer type \"" + type + "\" is not supported (supported: Sequence, Prepend, Replace, NFC)");
}

Status parse_pre_tokenizer(const Json& p, TokenizerModel& m, bool& byte_level) {
  const std::string type = string_member(p, "type");
  if (type == "Sequence") {
    const Json* list = member(p, "pretokenizers");
    if (list == nullptr || !list->is_array()) return invalid_argument("pre_tokenizer Sequence without \"pretokenizers\"");
    for (const Json& inner : *list) KV_RETURN_IF_ERROR(parse_pre_tokenizer(inner, m, byte_level));
    return Status::ok_status();
  }
  const std::string where = "pre_tokenizer " + type + ": ";
  if (type == "ByteLevel") {
    byte_level = true;
    KV_ASSIGN_OR_RETURN(const bool prefix_space, bool_member(p, "add_prefix_space", false, where));
    if (prefix_space) {
      if (!m.pre_tokenizer.empty()) {
        return unimplemented("pre_tokenizer ByteLevel with add_prefix_space after a Split is not supported");
      }
      m.prefix_space = true;
    }
    KV_ASSIGN_OR_RETURN(const bool use_regex, bool_member(p, "use_regex", true, where));
    if (use_regex) {
      KV_RETURN_IF_ERROR(add_splitter(m, kGpt2Pattern, false, SplitBehavior::kIsolated, false));
    }
    return Status::ok_status();
  }
  if (type == "Split") {
    const Json* pattern = member(p, "pattern");
    const Json* regex = pattern != nullptr ? member(*pattern, "Regex") : nullptr;
    const Json* literal = pattern != nullptr ? member(*pattern, "String") : nullptr;
    const Json* text = regex != nullptr ? regex : literal;
    if (text == nullptr || !text->is_string()) return invalid_argument("pre_tokenizer Split without a pattern");
    KV_ASSIGN_OR_RETURN(SplitBehavior behavior, parse_behavior(string_member(p, "behavior", "Isolated")));
    KV_ASSIGN_OR_RETURN(const bool invert, bool_member(p, "invert", false, where));
    return add_splitter(m, text->get<std::string>(), regex == nullptr, behavior, invert);
  }
  if (type == "Metaspace") {
    if (!m.pre_tokenizer.empty()) return unimplemented("pre_tokenizer Metaspace after a Split is not supported");
    const std::string replacement = string_member(p, "replacement", kMetaSpace);
    std::string scheme = string_member(p, "prepend_scheme", "");
    KV_ASSIGN_OR_RETURN(const bool prefix_space, bool_member(p, "add_prefix_space", true, where));
    if (scheme.empty()) scheme = prefix_space ? "always" : "never";
    m.normalizer.push_back({NormalizerStep::kReplace, " ", replacement});
    if (scheme != "never") m.normalizer.push_back({NormalizerStep::kPrependUnlessPresent, "", replacement});
    KV_ASSIGN_OR_RETURN(const bool split, bool_member(p, "split", true, where));
    if (split) {
      KV_RETURN_IF_ERROR(add_splitter(m, replacement, true, SplitBehavior::kMergedWithNext, false));
    }
    return Status::ok_status();
  }
  if (type == "Digits") {
    KV_ASSIGN_OR_RETURN(const bool individual, bool_member(p, "individual_digits", false, where));
    return add_splitter(m, individual ? R"(\p{N})" : R"(\p{N}+)", false, SplitBehavior::kIsolated, false);
  }
  if (type == "Whitespace") return add_splitter(m, R"(\w+|[^\w\s]+)", false, SplitBehavior::kRemoved, true);
  if (type == "WhitespaceSplit") return add_splitter(m, R"(\s+)", false, SplitBehavior::kRemoved, false);
  if (type == "Punctuation") {
    KV_ASSIGN_OR_RETURN(SplitBehavior behavior, parse_behavior(string_member(p, "behavior", "Isolated")));
    return add_splitter(m, R"(\p{P})", false, behavior, false);
  }
  return unimplemented("pre_tokenizer type \"" + type +
                       "\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Digits, "
                       "Whitespace, WhitespaceSplit, Punctuation)");
}

Status parse_decoder(const Json& d, TokenizerModel& m, bool& byte_level) {
  const std::string type = string_member(d, "type");
  if (type == "Sequence") {
    const Json* list = member(d, "decoders");
    if (list == nullptr || !list->is_array()) return invalid_argument("decoder Sequence without \"decoders\"");
    for (const Json& inner : *list) KV_RETURN_IF_ERROR(parse_decoder(inner, m, byte_level));
    return Status::ok_status();
  }
  if (type == "ByteLevel") {
    byte_level = true;
    return Status::ok_status();
  }
  if (type == "Replace") {
    const Json* pattern = member(d, "pattern");
    const std::string from = pattern != nullptr ? string_member(*pattern, "String") : "";
    const std::string to = string_member(d, "content");
    if (from == kMetaSpace && to == " ") {
      m.decode_meta_as_space = true;
      return Status::ok_status();
    }
    return unimplemented("decoder Replace(\"" + from + "\" -> \"" + to + "\") is not supported");
  }
  if (type == "Strip") {
    const Json* start = member(d, "start");
    if (string_member(d, "content") == " " && start != nullptr && start->is_number_integer() && start->get<int>() > 0) {
      m.decode_strip_space = true;
    }
    return Status::ok_status();
  }
  if (type == "Metaspace") {
    m.decode_meta_as_space = true;
    std::string scheme = string_member(d, "prepend_scheme", "");
    KV_ASSIGN_OR_RETURN(const bool prefix_space, bool_member(d, "add_prefix_space", true, "decoder Metaspace: "));
    if (scheme.empty()) scheme = prefix_space ? "always" : "never";
    if (scheme != "never") m.decode_strip_space = true;
    return Status::ok_status();
  }
  if (type == "ByteFallback" || type == "Fuse") return Status::ok_status();  // byte tokens always decode to bytes
  return unimplemented("decoder type \"" + type + "\" is not supported");
}

// What a post_processor adds around a single sequence: the ids before and after it.
struct Template {
  std::vector<int32_t> before, after;
};

Status parse_post_processor(const Json& p, const TokenizerModel& m, Template& out) {
  const std::string type = string_member(p, "type");
  if (type == "Sequence") {
    const Json* list = member(p, "processors");
    if (list == nullptr || !list->is_array()) return invalid_argument("post_processor Sequence without \"processors\"");
    for (const Json& inner : *list) KV_RETURN_IF_ERROR(parse_post_processor(inner, m, out));
    return Status::ok_status();
  }
  if (type == "TemplateProcessing") {
    const Json* single = member(p, "single");
    const Json* specials = member(p, "special_tokens");
    if (single == nullptr || !single->is_array()) return invalid_argument("TemplateProcessing without a \"single\" list");
    bool seen_sequence = false;
    for (const Json& item : *single) {
      if (member(item, "Sequence") != nullptr) {
        seen_sequence = true;
        continue;
      }
      const Json* special = member(item, "SpecialToken");
      if (special == nullptr) continue;
      const std::string name = string_member(*special, "id");
      std::vector<int32_t> ids;
      const Json* entry = specials != nullptr ? member(*specials, name.c_str()) : nullptr;
      const Json* entry_ids = entry != nullptr ? member(*entry, "ids") : nullptr;
      if (entry_ids != nullptr && entry_ids->is_array()) {
        for (const Json& id : *entry_ids) {
          if (id.is_number_integer()) ids.push_back(id.get<int32_t>());
        }
      } else if (const int32_t id = find_token(m, name); id >= 0) {
        ids.push_back(id);
      }
      if (ids.empty()) return invalid_argument("post_processor names unknown special token \"" + name + "\"");
      auto& dst = seen_sequence ? out.after : out.before;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
    return Status::ok_status();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const Json* cls = member(p, "cls");
    const Json* sep = member(p, "sep");
    if (cls != nullptr && cls->is_array() && cls->size() == 2 && (*cls)[1].is_number_integer()) {
      out.before.push_back((*cls)[1].get<int32_t>());
    }
    if (sep != nullptr && sep->is_array() && sep->size() == 2 && (*sep)[1].is_number_integer()) {
      out.after.push_back((*sep)[1].get<int32_t>());
    }
    return Status::ok_status();
  }
  return Status::ok_status();  // ByteLevel (offsets only) and others add no tokens
}

// A merge whose pieces or result are not in the vocabulary can never apply: the tokenizers library refuses the
// file (MergeTokenOutOfVocabulary), and so does this. Checked against the BPE vocabulary alone, before added
// tokens, as there. Real vocabularies (GPT-2, Llama 3, Qwen2/3, TinyStories) hold every merge's result.
Status check_merges(const TokenizerModel& m, const BpeTables& t) {
  std::vector<bool> in_vocab(m.pieces.size());
  for (size_t id = 0; id < m.pieces.size(); ++id) in_vocab[id] = m.types[id] == TokenType::kNormal;
  PieceIndex index;
  index.build(m.pieces, in_vocab);
  const std::string vocab = t.merges_file.empty() ? "model.vocab" : "the vocabulary";
  std::string joined;
  for (size_t i = 0; i < m.merge_list.size(); ++i) {
    const auto& [left, right] = m.merge_list[i];
    std::string problem;
    if (index.find(left) < 0) {
      problem = json_quoted(left) + " is not in " + vocab;
    } else if (index.find(right) < 0) {
      problem = json_quoted(right) + " is not in " + vocab;
    } else if (index.find(joined.assign(left).append(right)) < 0) {
      problem = "it makes " + json_quoted(joined) + ", which is not in " + vocab;
    } else {
      continue;
    }
    const std::string where = t.merges_file.empty() ? "model.merges[" + std::to_string(i) + "]"
                                                    : t.merges_file + " line " + std::to_string(t.merge_lines[i]) + ",";
    return invalid_argument(where + " " + merge_text(left, right) + ": " + problem +
                            ", so it can never apply (the tokenizers library refuses such a file too): correct or "
                            "remove the merge");
  }
  return Status::ok_status();
}

Status parse_tokenizer_json(const Json& j, BpeTables& tables, TokenizerModel& m, Template& post) {
  if (!j.is_object()) return invalid_argument("the top level is not a JSON object");
  const Json* model = member(j, "model");
  if (model == nullptr || !model->is_object()) return invalid_argument("no \"model\" object");
  const std::string type = string_member(*model, "type", "BPE");
  if (type != "BPE") {
    return unimplemented("model type \"" + type + "\" is not supported (only BPE: byte-level or with byte fallback)");
  }
  if (!string_member(*model, "continuing_subword_prefix").empty() || !string_member(*model, "end_of_word_suffix").empty()) {
    return unimplemented("BPE with continuing_subword_prefix/end_of_word_suffix is not supported");
  }
  if (!tables.error.empty()) return invalid_argument(tables.error);
  if (!tables.has_vocab) return invalid_argument("model has no \"vocab\" object");
  if (!tables.has_merges) return invalid_argument("model has no \"merges\" list");

  m.merge_mode = MergeMode::kRank;
  KV_ASSIGN_OR_RETURN(m.byte_fallback, bool_member(*model, "byte_fallback", false, "model."));
  KV_ASSIGN_OR_RETURN(m.fuse_unk, bool_member(*model, "fuse_unk", false, "model."));
  KV_ASSIGN_OR_RETURN(m.ignore_merges, bool_member(*model, "ignore_merges", false, "model."));

  int64_t max_id = -1;
  for (const auto& entry : tables.vocab) max_id = std::max(max_id, entry.second);
  if (max_id >= 2 * static_cast<int64_t>(tables.vocab.size()) + 1024) {
    return invalid_argument("vocab ids are not dense: " + std::to_string(tables.vocab.size()) +
                            " pieces with ids up to " + std::to_string(max_id));
  }
  m.pieces.assign(static_cast<size_t>(max_id + 1), std::string());
  m.bpe_vocab_end = static_cast<int32_t>(max_id + 1);
  m.types.assign(m.pieces.size(), TokenType::kUnused);
  for (auto& [piece, id] : tables.vocab) {
    m.pieces[id] = std::move(piece);
    m.types[id] = TokenType::kNormal;
  }
  std::vector<std::pair<std::string, int64_t>>().swap(tables.vocab);
  m.merge_list = std::move(tables.merges);
  KV_RETURN_IF_ERROR(check_merges(m, tables));

  if (const Json* added = member(j, "added_tokens")) {
    if (!added->is_array()) return invalid_argument("\"added_tokens\" is not a list");
    auto index = added_token_index(m);
    for (const Json& t : *added) KV_RETURN_IF_ERROR(add_added_token(m, t, index));
  }
  const std::string unk = string_member(*model, "unk_token");
  if (!unk.empty()) {
    m.unk_id = find_token(m, unk);
    if (m.unk_id >= 0 && m.types[m.unk_id] == TokenType::kNormal) m.types[m.unk_id] = TokenType::kUnknown;
  }

  bool byte_level = false;
  if (const Json* n = member(j, "normalizer")) KV_RETURN_IF_ERROR(parse_normalizer(*n, m).with_context("normalizer"));
  if (const Json* p = member(j, "pre_tokenizer")) KV_RETURN_IF_ERROR(parse_pre_tokenizer(*p, m, byte_level));
  if (const Json* d = member(j, "decoder")) KV_RETURN_IF_ERROR(parse_decoder(*d, m, byte_level));
  if (const Json* p = member(j, "post_processor")) KV_RETURN_IF_ERROR(parse_post_processor(*p, m, post));
  m.symbol_mode = byte_level ? SymbolMode::kByteLevel : SymbolMode::kChars;
  if (m.symbol_mode == SymbolMode::kChars && m.byte_fallback) {
    for (size_t id = 0; id < m.pieces.size(); ++id) {
      const std::string& p = m.pieces[id];
      if (m.types[id] == TokenType::kNormal && p.size() == 6 && p.starts_with("<0x") && p.back() == '>') {
        m.types[id] = TokenType::kByte;
      }
    }
  }
  return Status::ok_status();
}

// GPT-2's two files: a JSON map piece -> id, and one merge per line after a "#version" header.
Status load_gpt2_files(const std::string& vocab_path, const std::string& merges_path, TokenizerModel& m) {
  KV_ASSIGN_OR_RETURN(Json vocab, parse_json_file(vocab_path));
  if (!vocab.is_object()) return invalid_argument(vocab_path + " is not a JSON object of piece -> id");
  BpeTables tables;
  tables.has_vocab = tables.has_merges = true;
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxTokenId) {
      return invalid_argument(vocab_path + ": entry \"" + piece + "\" has no valid id (ids are integers from 0 to " +
                              std::to_string(kMaxTokenId - 1) + ", the vocabulary size limit)");
    }
    tables.vocab.emplace_back(piece, id.get<int64_t>());
  }
  KV_ASSIGN_OR_RETURN(std::string merges_text, read_model_text_file(merges_path));
  tables.merges_file = merges_path;
  std::istringstream lines(merges_text);
  std::string line;
  uint32_t line_number = 0;
  while (std::getline(lines, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.starts_with("#version")) continue;
    if (!split_merge(line, tables))
      return invalid_argument(merges_path + " line " + std::to_string(line_number) + ", " + json_quoted(line) +
                              kNotTwoPieces);
    tables.merge_lines.push_back(line_number);
  }
  if (tables.merges.empty()) return invalid_argument(merges_path + " holds no merges");
  const Json tokenizer_json = {{"model", {{"type", "BPE"}}},
                               {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                               {"decoder", {{"type", "ByteLevel"}}}};
  Template unused;
  KV_RETURN_IF_ERROR(parse_tokenizer_json(tokenizer_json, tables, m, unused).with_context(vocab_path));
  m.vocab_source = vocab_path.substr(vocab_path.rfind('/') + 1);
  // GPT-2's only special token: in the vocabulary, but never produced by merges of ordinary text.
  const int32_t end_of_text = find_token(m, "<|endoftext|>");
  if (end_of_text >= 0) {
    m.added_tokens.push_back({end_of_text, "<|endoftext|>", true, false, false});
    m.types[end_of_text] = TokenType::kControl;
    m.bos_id = m.eos_id = end_of_text;
  }
  return Status::ok_status();
}

std::string join_path(const std::string& dir, const char* name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// generation_config.json's eos_token_id: absent or null (none), a number or a list of numbers. Each must be a
// token id or -1 (none); they are checked against the vocabulary later. Anything else is an error: ignoring it
// would let generation run past the model's end token.
Result<std::vector<int32_t>> generation_eos_ids(const std::string& path) {
  KV_ASSIGN_OR_RETURN(Json generation, parse_json_file(path));
  if (!generation.is_object()) return invalid_argument(path + ": the top level is not a JSON object");
  std::vector<int32_t> out;
  const Json* ids = member(generation, "eos_token_id");
  if (ids == nullptr || ids->is_null()) return out;
  auto add = [&](const Json& id) -> Status {
    if (!id.is_number_integer())
      return invalid_argument(path + ": eos_token_id must be a token id or a list of token ids, got " + id.dump());
    if (id.get<int64_t>() < -1 || id.get<int64_t>() >= kMaxTokenId ||
        (id.is_number_unsigned() && id.get<uint64_t>() >= kMaxTokenId))
      return invalid_argument(path + ": eos_token_id " + id.dump() + " is not a token id");
    out.push_back(static_cast<int32_t>(id.get<int64_t>()));
    return Status::ok_status();
  };
  if (ids->is_array()) {
    for (const Json& id : *ids) KV_RETURN_IF_ERROR(add(id));
  } else {
    KV_RETURN_IF_ERROR(add(*ids));
  }
  return out;
}

Status apply_configs(const std::string& dir, TokenizerModel& m, const Template& post) {
  // Without tokenizer_config.json's say, the post_processor decides what is added.
  if (!post.before.empty()) {
    m.bos_id = post.before.front();
    m.add_bos = true;
  }
  if (!post.after.empty()) {
    m.eos_id = post.after.back();
    m.add_eos = true;
  }
  const std::string config_path = join_path(dir, "tokenizer_config.json");
  if (path_entry_exists(config_path)) {
    KV_ASSIGN_OR_RETURN(Json config, parse_json_file(config_path));
    if (!config.is_object()) return invalid_argument(config_path + ": the top level is not a JSON object");
    if (const Json* decoder = member(config, "added_tokens_decoder"); decoder != nullptr && decoder->is_object()) {
      auto index = added_token_index(m);
      for (const auto& [id_text, entry] : decoder->items()) {
        int64_t id = -1;
        try {
          id = std::stoll(id_text);
        } catch (const std::exception&) {
          return invalid_argument(config_path + ": added_tokens_decoder key \"" + id_text + "\" is not an id");
        }
        const std::string content = string_member(entry, "content");
        if (id >= 0 && id < static_cast<int64_t>(m.pieces.size()) && m.pieces[id] == content &&
            m.types[id] != TokenType::kNormal) {
          continue;  // already known from tokenizer.json
        }
        Json t = entry;
        t["id"] = id;
        KV_RETURN_IF_ERROR(add_added_token(m, t, index).with_context(config_path));
      }
    }
    const std::string bos = token_name(member(config, "bos_token"));
    const std::string eos = token_name(member(config, "eos_token"));
    if (!bos.empty()) {
      m.bos_id = find_token(m, bos);
      if (m.bos_id < 0) return invalid_argument(config_path + ": bos_token \"" + bos + "\" is not in the vocabulary");
    }
    if (!eos.empty()) {
      m.eos_id = find_token(m, eos);
      if (m.eos_id < 0) return invalid_argument(config_path + ": eos_token \"" + eos + "\" is not in the vocabulary");
    }
    for (auto [key, flag] : {std::pair{"add_bos_token", &m.add_bos}, std::pair{"add_eos_token", &m.add_eos}}) {
      const Json* v = member(config, key);
      if (v == nullptr || v->is_null()) continue;
      if (!v->is_boolean())
        return invalid_argument(config_path + ": " + key + " must be true or false, not a " + v->type_name());
      *flag = v->get<bool>();
    }
  }
  const std::string generation_path = join_path(dir, "generation_config.json");
  if (path_entry_exists(generation_path)) {
    KV_ASSIGN_OR_RETURN(m.extra_eos_ids, generation_eos_ids(generation_path));
  }
  return Status::ok_status();
}

}  // namespace

Result<std::unique_ptr<TokenizerModel>> read_hf_tokenizer(const std::string& dir) {
  auto m = std::make_unique<TokenizerModel>();
  Template post;
  const std::string tokenizer_path = join_path(dir, "tokenizer.json");
  // The accessors above check types, so nlohmann should not throw; a miss still becomes a Status.
  try {
    if (path_entry_exists(tokenizer_path)) {
      BpeTables tables;
      KV_ASSIGN_OR_RETURN(Json j, parse_tokenizer_file(tokenizer_path, tables));
      KV_RETURN_IF_ERROR(parse_tokenizer_json(j, tables, *m, post).with_context(tokenizer_path));
      m->vocab_source = "model.vocab of tokenizer.json";
    } else if (file_exists(join_path(dir, "vocab.json")) && file_exists(join_path(dir, "merges.txt"))) {
      KV_RETURN_IF_ERROR(load_gpt2_files(join_path(dir, "vocab.json"), join_path(dir, "merges.txt"), *m));
    } else if (file_exists(join_path(dir, "encoder.json")) && file_exists(join_path(dir, "vocab.bpe"))) {
      KV_RETURN_IF_ERROR(load_gpt2_files(join_path(dir, "encoder.json"), join_path(dir, "vocab.bpe"), *m));
    } else {
      return not_found("no tokenizer in " + dir +
                       ": expected tokenizer.json, or vocab.json + merges.txt, or encoder.json + vocab.bpe");
    }
    KV_RETURN_IF_ERROR(apply_configs(dir, *m, post));
  } catch (const Json::exception& e) {
    return invalid_argument("tokenizer files in " + dir + " have an unexpected structure: " + e.what());
  }
  return m;
}

Result<std::vector<int32_t>> BpeTokenizer::read_generation_eos_ids(const std::string& path) const {
  try {
    KV_ASSIGN_OR_RETURN(std::vector<int32_t> ids, generation_eos_ids(path));
    std::vector<int32_t> out;
    for (int32_t id : ids) {
      KV_RETURN_IF_ERROR(check_token_id(id, model_->pieces.size(), "end-of-generation token").with_context(path));
      add_eos_id(out, id);
    }
    return out;
  } catch (const Json::exception& e) {
    return invalid_argument(path + " has an unexpected structure: " + e.what());
  }
}

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::from_hf_dir(const std::string& dir) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<TokenizerModel> model, read_hf_tokenizer(dir));
  KV_RETURN_IF_ERROR(finalize_model(*model).with_context("tokenizer in " + dir));
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(model)));
}

}  // namespace kvshare
