"""LLM.chat on tiny real models given real chat templates: the rendered prompt equals the CLI's
(`kvshare chat-template`) and Hugging Face's (the committed goldens), it is tokenized without an extra BOS,
the replies equal generate() on the same tokens, and template errors are ValueErrors with the template's
message."""
import json
import pathlib
import shutil
import subprocess

import pytest

from kvshare import LLM, SamplingParams
from conftest import MODELS, SOURCE_DIR, shared_path

GOLDENS = SOURCE_DIR / "tests" / "goldens" / "chat_templates"
GREEDY = SamplingParams(temperature=0, max_tokens=12)


def case(name):
    return json.loads((GOLDENS / "cases" / f"{name}.json").read_text())


def golden(template, case_name, mode="generation_prompt"):
    return json.loads((GOLDENS / "expected" / f"{template}.json").read_text())[case_name][mode]


def with_template(tmp_path: pathlib.Path, template_name: str) -> pathlib.Path:
    """tinystories-656k (a real model whose tokenizer_config has BOS "<|start_story|>" and add_bos_token) as a
    folder in tmp_path whose tokenizer_config.json carries the real chat template `template_name`."""
    src = shared_path(MODELS["tinystories-656k"])
    source = shared_path(f"chat-templates/{template_name}.jinja").read_text()
    out = tmp_path / template_name
    out.mkdir()
    for f in src.iterdir():
        if f.name == "tokenizer_config.json":
            config = json.loads(f.read_text())
            config["chat_template"] = source
            (out / f.name).write_text(json.dumps(config))
        elif f.name.endswith(".safetensors"):
            (out / f.name).symlink_to(f)
        else:
            shutil.copy(f, out / f.name)
    return out


def cli_render(cli, model, messages, tmp_path, generation_prompt=True):
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    args = [cli, "chat-template", "--model", str(model), "--messages", str(tmp_path / "messages.json")]
    if not generation_prompt:
        args.append("--no-generation-prompt")
    return subprocess.run(args, check=True, capture_output=True).stdout.decode()


def test_qwen_template_matches_the_goldens_and_the_cli(tmp_path, cli):
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    for name in ("multi_turn", "user_only", "unicode"):
        for agp, mode in ((True, "generation_prompt"), (False, "no_generation_prompt")):
            [out] = llm.chat(case(name), GREEDY, add_generation_prompt=agp, use_tqdm=False)
            assert out.prompt == golden("Qwen-Qwen2.5-7B-Instruct", name, mode)["output"], (name, mode)
            assert out.prompt == cli_render(cli, model, case(name), tmp_path, agp)
            # Tokenized as vLLM does: the template's text, with no BOS added (Qwen's template writes none).
            tok = llm.get_tokenizer()
            assert out.prompt_token_ids == tok.encode(out.prompt, add_special_tokens=False)
            assert out.prompt_token_ids[0] != tok.bos_token_id


def test_template_that_writes_bos_gets_one_bos(tmp_path, cli):
    model = with_template(tmp_path, "meta-llama-Llama-3.1-8B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    tok = llm.get_tokenizer()
    messages = case("system_user")
    [out] = llm.chat(messages, GREEDY, use_tqdm=False)
    assert out.prompt == cli_render(cli, model, messages, tmp_path)
    assert out.prompt.startswith("<|start_story|>")  # the template writes {{ bos_token }}: the model's BOS text
    # The golden was rendered with bos_token "<s>"; otherwise the same text.
    want = golden("meta-llama-Llama-3.1-8B-Instruct", "system_user")["output"]
    assert want.startswith("<s>") and out.prompt == "<|start_story|>" + want[len("<s>"):]
    assert out.prompt_token_ids[0] == tok.bos_token_id
    assert out.prompt_token_ids[1] != tok.bos_token_id  # no second BOS from the tokenizer
    assert tok.encode(out.prompt)[:2] == [tok.bos_token_id] * 2  # (which encode with special tokens would add)


def test_replies_equal_generate_on_the_same_tokens(tmp_path):
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    conversations = [case("multi_turn"), case("user_only"), case("system_user")]
    params = [SamplingParams(temperature=0, max_tokens=10), SamplingParams(temperature=0.9, seed=5, max_tokens=14),
              SamplingParams(temperature=0, max_tokens=7)]
    chats = llm.chat(conversations, params, use_tqdm=False)
    assert [o.prompt for o in chats] == [golden("Qwen-Qwen2.5-7B-Instruct", c)["output"]
                                         for c in ("multi_turn", "user_only", "system_user")]
    direct = llm.generate([o.prompt_token_ids for o in chats], params, use_tqdm=False)
    for c, d, p in zip(chats, direct, params):
        assert c.outputs[0].token_ids == d.outputs[0].token_ids
        assert c.outputs[0].text == d.outputs[0].text
        assert len(c.outputs[0].token_ids) <= p.max_tokens
    # One conversation given alone is the same as in the list.
    [alone] = llm.chat(conversations[0], params[0], use_tqdm=False)
    assert alone.outputs[0].token_ids == chats[0].outputs[0].token_ids


def test_chat_template_argument_and_kwargs(stories):
    # stories260K has no template of its own: a template given as a string, with a variable of our own.
    template = ("{{ bos_token }}{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}"
                "{% if add_generation_prompt %}<{{ persona }}>{% endif %}")
    [out] = stories.chat([{"role": "user", "content": "Tom had a cat."}], GREEDY, chat_template=template,
                         chat_template_kwargs={"persona": "teller"}, use_tqdm=False)
    bos = stories.get_tokenizer().bos_token_id
    assert out.prompt == stories.get_tokenizer().decode([bos]) + "[user|Tom had a cat.]<teller>"
    assert out.prompt_token_ids.count(bos) == 1 and out.prompt_token_ids[0] == bos
    [no_gen] = stories.chat([{"role": "user", "content": "Tom had a cat."}], GREEDY, chat_template=template,
                            add_generation_prompt=False, use_tqdm=False)
    assert no_gen.prompt.endswith("[user|Tom had a cat.]")


def test_transformers_tokenizer_arguments(stories):
    # transformers' tokenizer arguments of apply_chat_template became template variables and were ignored:
    # return_dict=True gave a plain list, return_tensors="pt" no tensor.
    tok = stories.get_tokenizer()
    template = "{% for m in messages %}[{{ m.content }}]{% endfor %}"
    chat = [{"role": "user", "content": "Tom had a cat."}]
    ids = tok.apply_chat_template(chat, chat_template=template)
    assert tok.apply_chat_template(chat, chat_template=template, return_dict=True) == \
        {"input_ids": ids, "attention_mask": [1] * len(ids)}
    both = tok.apply_chat_template([chat, chat], chat_template=template, return_dict=True)
    assert both["input_ids"] == [ids, ids] and both["attention_mask"] == [[1] * len(ids)] * 2
    with pytest.raises(ValueError, match="needs tokenize=True"):
        tok.apply_chat_template(chat, chat_template=template, return_dict=True, tokenize=False)
    for name, value in [("return_tensors", "pt"), ("padding", True), ("truncation", True), ("max_length", 8)]:
        with pytest.raises(ValueError, match=name + " is not supported"):
            tok.apply_chat_template(chat, chat_template=template, **{name: value})
    assert tok.apply_chat_template(chat, chat_template=template, padding=False, return_tensors=None) == ids


def test_tools_reach_the_template(tmp_path):
    # Qwen2.5's real template writes the tools' JSON schemas between <tools> tags: the prompts equal Hugging Face's.
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    c = case("tools_no_calls")
    [out] = llm.chat(c["messages"], GREEDY, tools=c["tools"], use_tqdm=False)
    assert out.prompt == golden("Qwen-Qwen2.5-7B-Instruct", "tools_no_calls")["output"]
    for tool in c["tools"]:
        assert json.dumps(tool, ensure_ascii=False) in out.prompt
    assert out.prompt_token_ids == llm.get_tokenizer().encode(out.prompt, add_special_tokens=False)
    assert out.outputs[0].token_ids
    # tool_calls renders past this tiny model's 512-token context: its prompt through the tokenizer chat() uses.
    c = case("tool_calls")
    assert llm.get_tokenizer().apply_chat_template(c["messages"], tools=c["tools"], tokenize=False,
                                                   add_generation_prompt=True) == \
        golden("Qwen-Qwen2.5-7B-Instruct", "tool_calls")["output"]
    with pytest.raises(ValueError, match="context"):
        llm.chat(c["messages"], GREEDY, tools=c["tools"], use_tqdm=False)
    # Without tools the same conversation has no tools section; chat_template_kwargs may carry them too (vLLM).
    c = case("tools_no_calls")
    [plain] = llm.chat(c["messages"], GREEDY, use_tqdm=False)
    assert "<tools>" not in plain.prompt
    [via_kwargs] = llm.chat(c["messages"], GREEDY, chat_template_kwargs={"tools": c["tools"]}, use_tqdm=False)
    assert via_kwargs.prompt == golden("Qwen-Qwen2.5-7B-Instruct", "tools_no_calls")["output"]
    with pytest.raises(TypeError, match="tools"):
        llm.chat(c["messages"], GREEDY, tools="search")


def test_tool_call_arguments_sent_as_text_reach_the_template_as_objects(stories):
    # OpenAI's clients give a call's arguments as JSON text; chat() passes them to the template as the object, as
    # vLLM's chat does (tojson writes the call as the model wrote it), while apply_chat_template leaves them as
    # Hugging Face does.
    template = ("{% for m in messages %}{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments | tojson }}"
                "{% else %}{{ m.content }}{% endif %}|{% endfor %}")
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "-3 C"}]
    [out] = stories.chat(chat, GREEDY, chat_template=template, add_generation_prompt=False, use_tqdm=False)
    assert out.prompt == 'Hi|{"city": "Oslo"}|-3 C|'
    assert stories.get_tokenizer().apply_chat_template(chat, chat_template=template, tokenize=False) == \
        'Hi|"{\\"city\\": \\"Oslo\\"}"|-3 C|'


def test_named_templates(tmp_path):
    # A model listing several templates (Command-R, Hermes 2 Pro: "default", "tool_use", ...): only "default" was
    # read, so tools reached a template without a place for them, and chat_template="tool_use" was taken as the
    # literal text of a template.
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": "{% for m in messages %}[{{ m.content }}]{% endfor %}"},
                               {"name": "tool_use", "template": config["chat_template"]}]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    llm = LLM(str(model), kv_cache_memory="64MiB")
    tok = llm.get_tokenizer()
    c = case("tools_no_calls")
    with_tools = golden("Qwen-Qwen2.5-7B-Instruct", "tools_no_calls")["output"]
    assert tok.apply_chat_template(c["messages"], tools=c["tools"], tokenize=False,
                                   add_generation_prompt=True) == with_tools
    [out] = llm.chat(c["messages"], GREEDY, tools=c["tools"], use_tqdm=False)
    assert out.prompt == with_tools
    plain = tok.apply_chat_template(c["messages"], tokenize=False)
    assert plain == "".join(f"[{m['content']}]" for m in c["messages"])
    assert tok.apply_chat_template(c["messages"], chat_template="tool_use", tokenize=False,
                                   add_generation_prompt=True).startswith("<|im_start|>system")
    assert tok.apply_chat_template(c["messages"], chat_template="rag", tokenize=False) == "rag"  # Jinja source


def test_continue_final_message(tmp_path):
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    closed = golden("Qwen-Qwen2.5-7B-Instruct", "assistant_last", "no_generation_prompt")["output"]
    assert closed.endswith("sound of water<|im_end|>\n")
    [out] = llm.chat(case("assistant_last"), GREEDY, add_generation_prompt=False, continue_final_message=True,
                     use_tqdm=False)
    assert out.prompt == closed[:-len("<|im_end|>\n")]
    # The reply continues the message: the same tokens as generate() from that prompt.
    [direct] = llm.generate({"prompt_token_ids": out.prompt_token_ids}, GREEDY, use_tqdm=False)
    assert out.outputs[0].token_ids == direct.outputs[0].token_ids
    with pytest.raises(ValueError, match="cannot both be on"):
        llm.chat(case("assistant_last"), GREEDY, continue_final_message=True)


def test_chat_errors(stories, tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="no chat template.*chat_template"):
        stories.chat(messages, GREEDY)
    with pytest.raises(ValueError, match="roles must alternate"):
        stories.chat(messages, GREEDY,
                     chat_template="{% if messages|length < 2 %}{{ raise_exception('roles must alternate') }}"
                                   "{% endif %}")
    with pytest.raises(ValueError, match="line 1"):
        stories.chat(messages, GREEDY, chat_template="{% for m in messages %}")
    with pytest.raises(ValueError, match="empty prompt"):
        stories.chat(messages, GREEDY, chat_template="{% if false %}x{% endif %}")
    with pytest.raises(TypeError, match="conversation"):
        stories.chat("hello", GREEDY)
    with pytest.raises(TypeError, match="conversation"):
        stories.chat([], GREEDY)
    with pytest.raises(ValueError, match="messages"):
        stories.chat(messages, GREEDY, chat_template="x", chat_template_kwargs={"messages": []})
    with pytest.raises(TypeError, match="JSON"):
        stories.chat([{"role": "user", "content": object()}], GREEDY, chat_template="x")
    # A real template's own raise_exception, through the model's template.
    model = with_template(tmp_path, "Qwen-Qwen2.5-7B-Instruct")
    llm = LLM(str(model), kv_cache_memory="64MiB")
    want = golden("google-gemma-2-2b-it", "alternation_error")["error"]
    assert want.startswith("Conversation roles must alternate")
    gemma = shared_path("chat-templates/google-gemma-2-2b-it.jinja").read_text()
    with pytest.raises(ValueError) as err:
        llm.chat(case("alternation_error"), GREEDY, chat_template=gemma)
    assert want in str(err.value)
    # The LLM still works.
    assert llm.chat(case("user_only"), GREEDY, use_tqdm=False)[0].outputs[0].token_ids
