// Builds an nlohmann::json value from the events of nlohmann's SAX parser, in time linear in the text.
//
// nlohmann's callback parser (json::parse(text, callback)) scans the enclosing object for discarded values each
// time a nested object ends, which makes a file with n entries take time quadratic in n (a safetensors header
// of 100,000 tensors took minutes). This builder does no such scan. Subclasses can take parts of the document
// out as they stream past (tokenizer.json's vocabulary and merges) by handling those events themselves.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace kvshare {

class JsonBuilder : public nlohmann::json::json_sax_t {
 public:
  using json = nlohmann::json;
  // With reject_duplicate_keys, a key that appears twice in one object stops the parse (duplicate() names it);
  // else the last value wins, as nlohmann's own parse does.
  explicit JsonBuilder(bool reject_duplicate_keys) : reject_duplicates_(reject_duplicate_keys) {}

  json& result() { return root_; }
  const std::string& duplicate() const { return duplicate_; }
  const std::string& error() const { return error_; }

  bool null() override { return put(nullptr) != nullptr; }
  bool boolean(bool v) override { return put(v) != nullptr; }
  bool number_integer(number_integer_t v) override { return put(v) != nullptr; }
  bool number_unsigned(number_unsigned_t v) override { return put(v) != nullptr; }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return put(v) != nullptr; }
  bool string(string_t& v) override { return put(std::move(v)) != nullptr; }
  bool binary(binary_t& v) override;
  bool start_object(std::size_t size) override;
  bool key(string_t& k) override;
  bool end_object() override;
  bool start_array(std::size_t size) override;
  bool end_array() override;
  bool parse_error(std::size_t position, const std::string& last_token, const nlohmann::detail::exception& e) override;

 protected:
  // Stores `v` where the grammar says the next value goes, and returns where it went.
  template <typename T>
  json* put(T&& v) {
    if (stack_.empty()) {
      root_ = json(std::forward<T>(v));
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.get_ref<json::array_t&>().emplace_back(std::forward<T>(v));
      return &parent.get_ref<json::array_t&>().back();
    }
    *slot_ = json(std::forward<T>(v));  // set by key(), which always comes first inside an object
    return slot_;
  }
  // Stops the parse with `message` (reported by error()).
  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

 private:
  bool reject_duplicates_;
  json root_;
  std::vector<json*> stack_;  // the open objects and arrays, innermost last
  json* slot_ = nullptr;      // the value of the key just read
  std::string duplicate_;
  std::string error_;
};

// Runs `builder` over `text`. Fails with data_loss("invalid JSON: ...") on a syntax error, a duplicate key
// (when the builder rejects them) or an error a subclass raised.
Status run_json_builder(std::string_view text, JsonBuilder& builder);

}  // namespace kvshare
