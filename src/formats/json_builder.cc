#include "formats/json_builder.h"

#include "core/json_limits.h"

namespace kvshare {

bool JsonBuilder::binary(binary_t& /*v*/) { return fail("a binary value"); }  // only CBOR and the like have these

bool JsonBuilder::start_object(std::size_t /*size*/) {
  stack_.push_back(put(json::object()));
  return true;
}

bool JsonBuilder::key(string_t& k) {
  json::object_t& object = stack_.back()->get_ref<json::object_t&>();
  const size_t before = object.size();
  slot_ = &object[k];
  if (reject_duplicates_ && object.size() == before) {  // the key was there already
    duplicate_ = k;
    return false;
  }
  return true;
}

bool JsonBuilder::end_object() {
  stack_.pop_back();
  return true;
}

bool JsonBuilder::start_array(std::size_t /*size*/) {
  stack_.push_back(put(json::array()));
  return true;
}

bool JsonBuilder::end_array() {
  stack_.pop_back();
  return true;
}

bool JsonBuilder::parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                              const nlohmann::detail::exception& e) {
  return fail(e.what());
}

Status run_json_builder(std::string_view text, JsonBuilder& builder) {
  if (Status st = check_json_limits(text, "the JSON text"); !st.ok()) return data_loss("invalid JSON: " + st.message());
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const nlohmann::json::exception& e) {
    return data_loss(std::string("invalid JSON: ") + e.what());
  }
  if (!builder.duplicate().empty())
    return data_loss("invalid JSON: the key '" + builder.duplicate().substr(0, 80) + "' appears twice in one object");
  if (!ok) return data_loss("invalid JSON: " + builder.error());
  return {};
}

}  // namespace kvshare
