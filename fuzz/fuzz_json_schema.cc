// libFuzzer target: JSON schemas (JsonSchema::compile, src/sampling/json_schema.h) and the recognizer that follows
// them (JsonPrefix). The input is a schema's text, a NUL byte, then a text to follow it. Compiling never crashes
// and refuses with a message; a schema it takes gives a text it takes whole that is JSON a strict parser takes
// (numbers a double cannot hold aside), and a text it takes in part goes on with some byte (no dead end).
#include <cstring>

#include "fuzz_util.h"
#include "sampling/json_guide.h"
#include "sampling/json_object_test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t schema_size = nul == nullptr ? size : static_cast<size_t>(nul - data);
  const std::string_view schema_text(reinterpret_cast<const char*>(data), schema_size);
  Result<std::shared_ptr<const JsonSchema>> schema = JsonSchema::compile(schema_text);
  if (!schema.ok()) {
    fuzz::check_error(schema.status(), "JsonSchema::compile");
    return 0;
  }
  const std::string text = nul == nullptr ? "" : std::string(reinterpret_cast<const char*>(nul + 1),
                                                             size - schema_size - 1);
  for (bool whitespace : {true, false}) {
    JsonPrefix p(**schema, whitespace);
    size_t taken = 0;
    while (taken < text.size() && p.feed(static_cast<uint8_t>(text[taken]))) ++taken;
    if (taken < text.size()) continue;
    if (p.complete()) {
      const NlohmannVerdict v = nlohmann_verdict(text);
      fuzz::check(v.error_id == 0 || v.error_id == 406, "the recognizer took a text that is not JSON");
      continue;
    }
    bool goes_on = false;
    for (int b = 0; b < 256 && !goes_on; ++b) {
      JsonPrefix q = p;
      goes_on = q.feed(static_cast<uint8_t>(b));
    }
    fuzz::check(goes_on, "the recognizer took a text that no byte can continue");
  }
  return 0;
}
