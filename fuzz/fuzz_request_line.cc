// libFuzzer target: one line of a batch job's JSONL input (parse_request_line, as `kvshare generate --input`
// reads it). A line either is refused with a Status or gives a request whose sampling parameters validate.
#include "cli/request_line.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const std::string line(reinterpret_cast<const char*>(data), size);
  SamplingParams defaults;
  defaults.max_tokens = 16;
  auto r = cli::parse_request_line(line, defaults);
  if (!r.ok()) {
    fuzz::check_error(r.status(), "parse_request_line");
    return 0;
  }
  fuzz::check(r->params.validate().ok(), "an accepted line's sampling parameters do not validate");
  // The same line parses to the same request (no hidden state).
  auto again = cli::parse_request_line(line, defaults);
  fuzz::check(again.ok() && again->prompt == r->prompt && again->prompt_token_ids == r->prompt_token_ids &&
                  again->params.stop_token_ids == r->params.stop_token_ids &&
                  again->params.allowed_token_ids == r->params.allowed_token_ids &&
                  again->params.skip_special_tokens == r->params.skip_special_tokens &&
                  again->params.bad_words == r->params.bad_words && again->cache_salt == r->cache_salt,
              "parsing the same line twice gave different requests");
  return 0;
}
