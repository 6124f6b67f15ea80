// libFuzzer target: the body of a /v1/completions or /v1/chat/completions request (server/openai_api.h), as an
// HTTP thread of `kvshare serve` parses it. The first byte picks the endpoint; a model's reply may follow the body
// after fuzz_util's separator. A body is either refused with an
// OpenAI error (status 400, a message, the field when one is at fault) or gives a call whose sampling parameters
// validate; then every response shape is written from made-up outputs, and must serialize as JSON. The second and
// third bits of the first byte pick the server's tool-call parser: a chat reply streamed in pieces then says what the
// whole reply says (content, tool calls, finish_reason).
#include <algorithm>

#include "fuzz_util.h"
#include "server/openai_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  using namespace kvshare::server;
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) != 0;
  const std::vector<std::string_view> parts = fuzz::split_parts(data + 1, size - 1, 2);
  const std::string body(parts[0]);
  const std::string reply(parts.back());  // a model's reply: what follows a separator, else the body
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

  // A chat reply, streamed in three pieces, against the whole.
  ctx.tool_parser = static_cast<ToolCallParser>((data[0] >> 1) % 3);
  if (!chat || call.best_of() || call.tool_choice == GenerationCall::ToolChoice::kNamed) return 0;
  Output whole;
  whole.text = reply;
  whole.finished = true;
  whole.finish_reason = FinishReason::kStop;
  const json message = completion_response(ctx, call, {{ChoiceState{}, whole}}, Usage{})["choices"][0]["message"];
  ChoiceState streamed;
  std::string content;
  json calls = json::array(), finish;
  for (size_t end : {reply.size() / 3, reply.size() * 2 / 3, reply.size()}) {
    Output piece = whole;
    piece.text = reply.substr(0, end);
    piece.finished = end == reply.size();
    const json chunk = stream_chunk(ctx, call, streamed, piece);
    if (chunk.is_null()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string()) content += delta["content"].get<std::string>();
    for (const json& c : delta.value("tool_calls", json::array())) {
      calls.push_back(c);
      calls.back().erase("index");
    }
    finish = chunk["choices"][0]["finish_reason"];
  }
  fuzz::check(content == (message["content"].is_string() ? message["content"].get<std::string>() : ""),
              "streamed content differs from the whole reply's");
  fuzz::check(calls == message.value("tool_calls", json::array()), "streamed tool calls differ from the whole reply's");
  const json reason = completion_response(ctx, call, {{ChoiceState{}, whole}}, Usage{})["choices"][0]["finish_reason"];
  fuzz::check(finish == reason, "a streamed finish_reason differs from the whole reply's");
  return 0;
}
