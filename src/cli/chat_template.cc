// kvshare chat-template (--model PATH | --template FILE) --messages FILE.json: the prompt a chat template makes
// of a conversation, printed byte for byte with nothing added (no trailing newline).
#include <cstdio>
#include <fstream>
#include <sstream>

#include "chat/chat_template.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "core/json_limits.h"
#include "core/mapped_file.h"
#include "formats/json_error.h"

namespace kvshare::cli {

int run_chat_template(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      {"model", true, "a Hugging Face folder (tokenizer_config.json's chat_template) or a .gguf file"},
      {"template", true, "a Jinja chat template file (instead of --model)"},
      {"messages", true,
       "a JSON file: a list of messages [{\"role\", \"content\", ...}], or an object with \"messages\" and other "
       "variables the template reads (\"tools\", \"documents\", \"enable_thinking\", ...)"},
      {"no-generation-prompt", false, "render with add_generation_prompt = false (default true)"},
      {"bos-token", true, "the bos_token text (default: the model's, or empty with --template)"},
      {"eos-token", true, "the eos_token text (default: the model's, or empty with --template)"},
      {"help", false, "show this help"},
  };
  auto args = Args::parse("chat-template", specs, argv);
  if (!args.ok()) return usage_error("chat-template", args.status());
  if (args->has("help")) {
    std::fputs(usage("chat-template (--model PATH | --template FILE) --messages FILE.json",
                     "Print the prompt the chat template renders for a conversation, byte for byte.", specs)
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args->positional().empty())
    return usage_error("chat-template", invalid_argument("unexpected argument '" + args->positional()[0] + "'"));
  const auto model = args->get("model"), tpl_file = args->get("template"), messages = args->get("messages");
  if (model.has_value() == tpl_file.has_value())
    return fail("chat-template", invalid_argument("give exactly one of --model and --template"));
  if (!messages) return fail("chat-template", invalid_argument("--messages FILE.json is required"));

  auto load = [&]() -> Result<ModelChatTemplates> {
    if (model) return ModelChatTemplates::from_model(*model);
    KV_ASSIGN_OR_RETURN(std::string source, read_chat_template_file(*tpl_file));
    auto t = ChatTemplate::from_string(source);
    if (!t.ok()) return t.status().with_context(*tpl_file);
    return ModelChatTemplates::single(std::move(t).value());
  };
  Result<ModelChatTemplates> templates = load();
  if (!templates.ok()) return fail("chat-template", templates.status());

  auto text = read_text_file(*messages);
  if (!text.ok()) return fail("chat-template", text.status());
  if (Status st = check_json_limits(*text, *messages); !st.ok()) return fail("chat-template", st);
  const auto conversation = nlohmann::ordered_json::parse(*text, nullptr, false);
  if (conversation.is_discarded())
    return fail("chat-template", invalid_argument(*messages + " is not valid JSON" + json_syntax_error(*text)));
  // As transformers picks among a model's named templates: "tool_use" for a conversation with tools, where the
  // model lists one; else the default.
  const bool has_tools = conversation.is_object() && conversation.contains("tools") && !conversation["tools"].is_null();
  auto picked = templates->pick("", has_tools);
  if (!picked.ok()) return fail("chat-template", picked.status());
  ChatTemplate tpl = **picked;
  if (auto bos = args->get("bos-token")) tpl.set_bos_token(*bos);
  if (auto eos = args->get("eos-token")) tpl.set_eos_token(*eos);
  auto rendered = tpl.apply(conversation, !args->has("no-generation-prompt"));
  if (!rendered.ok()) return fail("chat-template", rendered.status());
  std::fwrite(rendered->data(), 1, rendered->size(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace kvshare::cli
