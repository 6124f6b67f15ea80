// libFuzzer target: JSON mode's recognizer (JsonPrefix, src/sampling/json_object.h) against nlohmann's strict parser.
// A text the recognizer takes whole parses as an object; an object the parser takes (whitespace runs and nesting
// inside the recognizer's limits) is taken whole; a text it takes in part can always go on with some byte.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "sampling/json_object.h"
#include "sampling/json_object_test_util.h"

namespace {

// nlohmann's verdict through its SAX interface: whether the text is one object, and its error's id (406: a number
// a double cannot hold, which RFC 8259 leaves to the reader and the recognizer takes).
struct Verdict : nlohmann::json_sax<nlohmann::json> {
  bool object = false, first = true;
  int error = 0;
  bool value() { first = false; return true; }
  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override { object = object || first; return value(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return value(); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = e.id;
    return false;
  }
};

}  // namespace

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
    Verdict v;
    nlohmann::json::sax_parse(text, &v);
    const bool parsed = v.error == 0 && v.object;
    if (taken == size && p.complete())
      fuzz::check(parsed || v.error == 406, "the recognizer took a text that is not one JSON object");
    if (parsed && within_json_mode_limits(text))
      fuzz::check(taken == size && p.complete(), "the recognizer refused a JSON object within its limits");
  }
  return 0;
}
