// libFuzzer target: the body of a /v1/completions or /v1/chat/completions request (server/openai_api.h), as an
// HTTP thread of `kvshare serve` parses it. The first byte picks the endpoint. A body is either refused with an
// OpenAI error (status 400, a message, the field when one is at fault) or gives a call whose sampling parameters
// validate; then every response shape is written from made-up outputs, and must serialize as JSON.
#include <algorithm>

#include "fuzz_util.h"
#include "server/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  using namespace kvshare::server;
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) != 0;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  GenerationCall call;
  ApiError error;
  if (!parse_generation_call(body, chat, call, error)) {
    fuzz::check(error.status == 400, "a refused body's status is not 400");
    fuzz::check(!error.message.empty(), "a refused body without a message");
    (void)error.to_json().dump();
    return 0;
  }
  fuzz::check(call.params.validate().ok(), "an accepted body's sampling parameters do not validate");
  fuzz::check(chat ? !call.messages.empty() : !call.prompts.empty(), "an accepted body without a prompt");
  fuzz::check(call.top_logprobs < 0 || (call.params.logprobs && *call.params.logprobs == call.top_logprobs),
              "logprobs asked but not passed to the engine");
  // The engine computes the prompt's logprobs once, with the most alternatives echo or prompt_logprobs lists.
  const int32_t prompt_k = std::max(call.echo_logprobs() ? call.top_logprobs : -1, call.prompt_logprobs);
  fuzz::check(prompt_k < 0 ? !call.params.prompt_logprobs.has_value() : call.params.prompt_logprobs == prompt_k,
              "the engine is not asked for the prompt logprobs echo or prompt_logprobs list");
  fuzz::check(call.params.n >= call.n && (!call.best_of() || (call.params.logprobs && !call.stream)),
              "best_of runs fewer completions than n, streams, or cannot rank");

  // Responses from outputs with every optional part, text that is not UTF-8 included.
  ResponseContext ctx;
  ctx.id = "cmpl-fuzz";
  ctx.model = call.model;
  ctx.token_piece = [](int32_t id) { return std::string(1, static_cast<char>(id)); };  // 200, 255: partial UTF-8
  Output o;
  o.text = std::string(body.substr(0, 8));
  o.token_ids = {1, 200, 3};
  o.prompt_token_ids = {7, 128, 9};
  o.logprobs.resize(3);
  for (auto& lp : o.logprobs) lp.top = {{255, -1.5f}, {0, -2.0f}};
  ChoiceState state;
  state.echo_text = call.echo && !call.prompts.empty() ? call.prompts[0].text : "";
  auto prompt = std::make_shared<PromptLogprobs>();
  prompt->token_ids = {7, 128, 9};
  prompt->logprobs = {o.logprobs[0], o.logprobs[1]};
  state.prompt = prompt;
  Output restated = o;  // a finished output restates the logprobs a stream already took
  take_logprobs(state, o);
  const auto dump = [](const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); };
  (void)dump(stream_chunk(ctx, call, state, o));
  o = restated;
  o.finished = true;
  o.finish_reason = FinishReason::kStop;
  o.stop_str = "x";
  take_logprobs(state, o);
  fuzz::check(state.logprobs.empty() || call.top_logprobs < 0, "a restated token's logprobs were taken twice");
  (void)dump(stream_chunk(ctx, call, state, o));
  fuzz::check(stream_chunk(ctx, call, state, o).is_null(), "a finished choice streamed twice");
  (void)dump(completion_response(ctx, call, {{ChoiceState{}, o}}, Usage{3, 3, 1}));
  (void)dump(completion_response(ctx, call, {{state, o}}, Usage{3, 3, 1}));  // with the prompt's logprobs
  (void)dump(usage_chunk(ctx, call, Usage{}));
  return 0;
}
