"""kvshare.Tokenizer (LLM.get_tokenizer(), Tokenizer.from_pretrained) with Hugging Face's names, on real tokenizers:
llama.cpp's test vectors, the vocabulary's own spellings, the special tokens, and apply_chat_template against the
committed Hugging Face goldens."""
import json
import pathlib

import pytest

from kvshare import LLM, Tokenizer
from conftest import MODELS, SOURCE_DIR, shared_path

GOLDENS = SOURCE_DIR / "tests" / "goldens" / "chat_templates"


def vectors(name):
    """llama.cpp's vectors: (text, ids) pairs; texts are encoded with no BOS/EOS and special text not parsed."""
    base = shared_path(f"tokenizers/vectors/{name}")
    texts = base.with_name(base.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    lines = base.with_name(base.name + ".out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


@pytest.mark.parametrize("tokenizer,name", [("tokenizers/gpt2", "ggml-vocab-gpt-2.gguf"),
                                            ("tokenizers/vectors/ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf")])
def test_vectors(tokenizer, name):
    tok = Tokenizer.from_pretrained(shared_path(tokenizer))
    cases = vectors(name)
    assert len(cases) > 30
    for text, ids in cases:
        assert tok.encode(text, add_special_tokens=False, split_special_tokens=True) == ids, text
        assert tok.decode(ids) == text


def test_gpt2_names_as_transformers_has_them():
    tok = Tokenizer.from_pretrained(shared_path("tokenizers/gpt2"))
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("Hi<|endoftext|>") == [17250, 50256]
    assert tok.encode("Hi<|endoftext|>", split_special_tokens=True)[-1] != 50256
    assert tok.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"
    assert tok.decode([15496, 995, 50256], skip_special_tokens=True) == "Hello world"
    assert tok.decode(995) == " world"
    assert tok.vocab_size == len(tok) == 50257
    assert tok.bos_token_id == tok.eos_token_id == 50256
    assert tok.eos_token == "<|endoftext|>"
    assert tok.convert_ids_to_tokens(995) == "\u0120world"
    assert tok.convert_ids_to_tokens([15496, 995, 50256]) == ["Hello", "\u0120world", "<|endoftext|>"]
    assert tok.convert_ids_to_tokens([15496, 50256], skip_special_tokens=True) == ["Hello"]
    # Every id is spelled as vocab.json spells it.
    vocab = json.loads(shared_path("tokenizers/gpt2/vocab.json").read_text(encoding="utf-8"))
    spelled = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    assert {s: i for i, s in enumerate(spelled)} == vocab
    assert not tok.has_chat_template
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert tok.convert_ids_to_tokens([995, 50257]) == ["\u0120world", None]  # None past the vocabulary, as HF's
    assert tok.convert_ids_to_tokens(50257) is None
    with pytest.raises(ValueError, match="token ids are from 0"):
        tok.convert_ids_to_tokens([-3])
    with pytest.raises(TypeError):
        tok.decode(["a"])


def test_sentencepiece_spellings():
    tok = Tokenizer.from_pretrained(shared_path("tokenizers/vectors/ggml-vocab-llama-spm.gguf"))
    ids = tok.encode("Hello\nworld")
    assert ids[0] == tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.convert_ids_to_tokens(ids[1]) == "\u2581Hello"
    assert "<0x0A>" in tok.convert_ids_to_tokens(ids)  # the newline's byte-fallback token, as spelled
    assert tok.decode(ids, skip_special_tokens=True) == "Hello\nworld"


def case(name):
    return json.loads((GOLDENS / "cases" / f"{name}.json").read_text())


def golden(template, case_name, mode):
    return json.loads((GOLDENS / "expected" / f"{template}.json").read_text())[case_name][mode]["output"]


def test_apply_chat_template_matches_hugging_face():
    # The Qwen3 tokenizer folder carries Qwen3's real chat template.
    tok = Tokenizer.from_pretrained(shared_path("tokenizers/qwen3"))
    assert tok.has_chat_template
    for name in ("tools_no_calls", "tool_calls", "multi_turn"):
        c = case(name)
        messages, tools = (c["messages"], c.get("tools")) if isinstance(c, dict) else (c, None)
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        assert text == golden("Qwen-Qwen3-0.6B", name, "generation_prompt"), name
        # Hugging Face's defaults: add_generation_prompt=False, tokenize=True (ids, with no BOS added).
        ids = tok.apply_chat_template(messages, tools=tools)
        assert tok.decode(ids) == golden("Qwen-Qwen3-0.6B", name, "no_generation_prompt")
        assert ids == tok.encode(tok.decode(ids), add_special_tokens=False)
    # A batch of conversations gives a list.
    both = tok.apply_chat_template([case("user_only"), case("multi_turn")], tokenize=False)
    assert both == [golden("Qwen-Qwen3-0.6B", n, "no_generation_prompt") for n in ("user_only", "multi_turn")]
    # continue_final_message: the prompt ends inside the assistant's message.
    closed = golden("Qwen-Qwen3-0.6B", "assistant_last", "no_generation_prompt")
    assert tok.apply_chat_template(case("assistant_last"), tokenize=False, continue_final_message=True) == \
        closed[:-len("<|im_end|>\n")]
    with pytest.raises(ValueError, match="cannot both be on"):
        tok.apply_chat_template(case("assistant_last"), add_generation_prompt=True, continue_final_message=True)
    with pytest.raises(TypeError, match="tools"):
        tok.apply_chat_template(case("user_only"), tools={"name": "f"})


def test_llm_tokenizer_is_the_models(model_path):
    llm_tok = LLM(model_path, kv_cache_memory="16MiB").get_tokenizer()
    alone = Tokenizer.from_pretrained(model_path)
    text = "Once upon a time, Lily saw a big red ball."
    assert llm_tok.encode(text) == alone.encode(text)
    assert llm_tok.convert_ids_to_tokens(llm_tok.encode(text)) == alone.convert_ids_to_tokens(alone.encode(text))
    assert (llm_tok.bos_token_id, llm_tok.eos_token_id, llm_tok.vocab_size) == \
        (alone.bos_token_id, alone.eos_token_id, alone.vocab_size)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_pretrained(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(ValueError):
        Tokenizer.from_pretrained(tmp_path)
