// libFuzzer target: a chat template (ChatTemplate::from_string: the Jinja parser) rendered over a conversation
// (ChatTemplate::apply: the renderer). The input is up to two parts cut at "\n--8<--\n": the template and the
// conversation JSON (a list of messages, or an object with "messages", "tools", ...); without a second part, or
// when it is not JSON, a fixed two-turn conversation is used. It renders as the CLI does, then as the server does
// (tool calls' arguments given as JSON text passed as objects). Errors must be Statuses; limits are lowered so
// that one input runs in milliseconds (the limits themselves are tested in jinja_test).
#include "chat/chat_template.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvshare;
  const auto parts = fuzz::split_parts(data, size, 2);
  auto tpl = ChatTemplate::from_string(std::string(parts[0]), "<s>", "</s>");
  if (!tpl.ok()) {
    fuzz::check_error(tpl.status(), "ChatTemplate::from_string");
    return 0;
  }
  nlohmann::ordered_json conversation = nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}])");
  if (parts.size() == 2) {
    auto j = nlohmann::ordered_json::parse(parts[1], nullptr, false);
    if (!j.is_discarded()) conversation = std::move(j);
  }
  jinja::RenderOptions options;
  // Lowered from 1 MiB, 10^5, 10^4 and 64 MiB (c70f690): inputs that ran to those limits took tens of
  // milliseconds each under ASan, and mutations of them held a long run near 170 executions per second.
  options.limits.max_output_bytes = 256 << 10;
  options.limits.max_loop_iterations = 10'000;
  options.limits.max_range = 1'000;
  options.limits.max_string_bytes = 4 << 20;
  options.now = [] {
    std::tm t{};
    t.tm_year = 124;
    t.tm_mday = 1;
    return t;
  };
  for (bool add_generation_prompt : {false, true}) {  // the second as the server renders: tool_arguments_as_objects
    auto text = tpl->apply(conversation, add_generation_prompt, options, add_generation_prompt);
    if (!text.ok()) fuzz::check_error(text.status(), "ChatTemplate::apply");
  }
  return 0;
}
