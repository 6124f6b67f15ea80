// libFuzzer target: JSON mode's recognizer (JsonPrefix, src/sampling/json_guide.h) against nlohmann's strict parser.
// A text the recognizer takes whole parses as an object; an object the parser takes (whitespace runs and nesting
// inside the recognizer's limits) is taken whole; a text it takes in part can always go on with some byte.
#include "fuzz_util.h"
#include "sampling/json_guide.h"
#include "sampling/json_object_test_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool whitespace : {true, false}) {
    JsonPrefix p(whitespace);
    size_t taken = 0;
    while (taken < size && p.feed(data[taken])) ++taken;
    if (taken == size && !p.complete()) {  // a start: some byte must go on from it
      bool goes_on = false;
      for (int b = 0; b < 256 && !goes_on; ++b) {
        JsonPrefix q = p;
        goes_on = q.feed(static_cast<uint8_t>(b));
      }
      fuzz::check(goes_on, "the recognizer took a text that no byte can continue");
    }
    if (!whitespace) continue;
    const NlohmannVerdict v = nlohmann_verdict(text);
    const bool parsed = v.error_id == 0 && v.object;
    if (taken == size && p.complete())  // 406: a number a double cannot hold, which RFC 8259 leaves to the reader
      fuzz::check(parsed || v.error_id == 406, "the recognizer took a text that is not one JSON object");
    if (parsed && within_json_mode_limits(text))
      fuzz::check(taken == size && p.complete(), "the recognizer refused a JSON object within its limits");
  }
  return 0;
}
