"""kvshare from Python, in vLLM's shape: batched LLM inference on the CPU that computes every shared prompt
prefix once.

    from kvshare import LLM, SamplingParams
    llm = LLM("path/to/model")                      # a Hugging Face folder or a .gguf file
    params = SamplingParams(temperature=0, max_tokens=32)
    for out in llm.generate(["Q: what is a KV cache?", "Q: why share prefixes?"], params):
        print(out.outputs[0].text, out.num_cached_tokens)
"""
from __future__ import annotations

import copy
import json
import numbers
import operator
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ._kvshare import MAX_KV_CACHE_FRACTION, _Engine, _Request, _SamplingParams, _Tokenizer

__all__ = ["LLM", "SamplingParams", "StructuredOutputsParams", "RequestOutput", "CompletionOutput", "Logprob", "Tokenizer", "PrefixHandle"]
__version__ = "0.1.0"

_MAX_N = 128  # SamplingParams::kMaxN

PromptType = Union[str, Sequence[int], Dict[str, Any]]
Conversation = Sequence[Dict[str, Any]]


def _schema_text(schema: Any) -> str:
    """A JSON schema's text, from a dict, a JSON string, or a class with pydantic's model_json_schema()."""
    if hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    if isinstance(schema, str):
        return schema
    if isinstance(schema, (dict, bool)):
        return json.dumps(schema)  # the order of its properties kept: the output writes them in that order
    raise TypeError(f"json must be a JSON schema (a dict, its JSON text, or a pydantic model), not "
                    f"{type(schema).__name__}")


class StructuredOutputsParams:
    """What the output must be, as vLLM's StructuredOutputsParams, of which kvshare does `choice`, `json` and
    `json_object`. choice=[...]: the generated text is one of these strings (a label, a class), each token drawn
    among those that keep it the start of one; it ends once the text is a choice that no other one continues (where
    one does, the model's EOS may end it there). json=schema (a dict, its JSON text, or a pydantic model): the text
    is JSON that follows the schema (what a schema may say: docs/limits.md), its properties in the schema's order.
    json_object=True: the text is one JSON object. Either ends when the JSON closes; disable_any_whitespace=True
    writes it compactly. vLLM's other constraints (regex, grammar, structural_tag) raise ValueError."""

    _CONSTRAINTS = ("regex", "grammar", "structural_tag")

    def __init__(self, *, choice: Optional[Sequence[str]] = None, json: Any = None, regex: Optional[str] = None,
                 grammar: Optional[str] = None, json_object: Optional[bool] = None,
                 structural_tag: Optional[str] = None, disable_fallback: bool = False,
                 disable_any_whitespace: bool = False, disable_additional_properties: bool = False,
                 whitespace_pattern: Optional[str] = None) -> None:
        # disable_fallback, disable_additional_properties, whitespace_pattern: vLLM's options for its grammar
        # backends; they change nothing here.
        given = {"regex": regex, "grammar": grammar, "structural_tag": structural_tag}
        for name in self._CONSTRAINTS:
            if given[name] is not None and given[name] is not False:
                raise ValueError(f"StructuredOutputsParams({name}=...) is not supported: kvshare constrains the "
                                 "output to a list of strings (choice=[...]), a JSON schema (json=...) or any JSON "
                                 "object (json_object=True)")
        for name, flag in (("json_object", json_object), ("disable_any_whitespace", disable_any_whitespace)):
            if flag is not None and not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, not {type(flag).__name__}")
        self.json_object = bool(json_object)
        self.json = None if json is None else _schema_text(json)
        self.disable_any_whitespace = bool(disable_any_whitespace)
        self._check(choice)
        self.choice = None
        if choice is not None:
            if isinstance(choice, (str, bytes, dict)) or not isinstance(choice, Iterable):
                raise TypeError(f"choice must be a list of str, not {type(choice).__name__}")
            self.choice = list(choice)
            for c in self.choice:
                if not isinstance(c, str):
                    raise TypeError(f"choice must be a list of str, got a list holding {type(c).__name__}")

    def _check(self, choice: Any = None, prefix: str = "StructuredOutputsParams") -> None:
        asked = [n for n, v in (("choice=[...]", choice), ("json=...", self.json),
                               ("json_object=True", self.json_object or None)) if v is not None]
        if len(asked) > 1:
            raise ValueError(f"{prefix} takes one of choice=[...], json=... and json_object=True, got "
                             + " and ".join(asked))
        if not asked:
            raise ValueError(f"{prefix} needs choice=[...] (the strings the output may be), json=... (a JSON "
                             "schema) or json_object=True")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StructuredOutputsParams):
            return NotImplemented
        # Equal when they constrain the same way (whitespace matters to JSON only).
        json_mode = self.json_object or self.json is not None
        other_json_mode = other.json_object or other.json is not None
        return (self.choice, self.json, self.json_object, json_mode and self.disable_any_whitespace) == \
            (other.choice, other.json, other.json_object, other_json_mode and other.disable_any_whitespace)

    __hash__ = None

    def __repr__(self) -> str:
        if self.choice is not None:
            return f"StructuredOutputsParams(choice={self.choice!r})"
        what = f"json={self.json!r}" if self.json is not None else "json_object=True"
        return f"StructuredOutputsParams({what}, disable_any_whitespace={self.disable_any_whitespace!r})"


class SamplingParams:
    """How a request's tokens are chosen and when its generation stops, with vLLM's field names and defaults.

    temperature 0 is greedy; top_k -1, 0 or None is off; top_p 1 is off; min_p 0 is off; seed None derives one
    from the LLM's seed and the request; stop_token_ids end generation (the stop token is kept in token_ids, not in the text); stop
    strings end it too, also across tokens (the text ends before the stop string unless
    include_stop_str_in_output); ignore_eos keeps going past the model's end-of-sequence tokens; min_tokens: no
    EOS, stop token or stop string before that many tokens; presence_penalty and frequency_penalty (OpenAI,
    [-2, 2]) over the generated tokens, repetition_penalty (> 0, 1 is off) over prompt and generated tokens;
    logit_bias {token id: bias in [-100, 100]}; allowed_token_ids: only these tokens may be sampled; bad_words: a
    list of words and phrases never generated (each as tokenized at the start of a text, and after a space when that
    is as many tokens, vLLM's rule);
    skip_special_tokens (default True, as vLLM's): the text leaves out special tokens the model generates (token_ids
    keep them); truncate_prompt_tokens k: a longer prompt keeps its last k tokens (-1: as many as the context
    holds); n completions per prompt; logprobs k (0 to 20) returns each
    token's Logprob and the k likeliest; prompt_logprobs k the same for the prompt's tokens
    (RequestOutput.prompt_logprobs); structured_outputs=StructuredOutputsParams(choice=[...]): the text is one of
    these strings, StructuredOutputsParams(json=schema): JSON that follows the schema, or
    StructuredOutputsParams(json_object=True): one JSON object (none of them with min_tokens).

    The constructor raises ValueError for a value out of range and TypeError for a value of the wrong type, naming
    the field. Fields may be set later, and stop, stop_token_ids, bad_words and logit_bias changed in place
    (params.stop.append("END")), as vLLM's; the values are checked again when a request is made of them."""

    _FLOATS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
    _INTS = ("max_tokens", "min_tokens", "n")
    _OPTIONAL_INTS = ("seed", "logprobs", "prompt_logprobs", "truncate_prompt_tokens")
    _BOOLS = ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens")
    _FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "stop_token_ids", "ignore_eos", "min_p",
               "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "min_tokens", "stop",
               "include_stop_str_in_output", "n", "logprobs", "prompt_logprobs", "allowed_token_ids",
               "skip_special_tokens", "truncate_prompt_tokens", "bad_words", "structured_outputs")

    def __init__(self, *, temperature: float = 1.0, top_p: float = 1.0, top_k: Optional[int] = None,
                 max_tokens: int = 16, seed: Optional[int] = None, stop_token_ids: Optional[Sequence[int]] = None,
                 ignore_eos: bool = False, min_p: float = 0.0, presence_penalty: float = 0.0,
                 frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                 logit_bias: Optional[Dict[int, float]] = None, min_tokens: int = 0,
                 stop: Union[None, str, Sequence[str]] = None, include_stop_str_in_output: bool = False,
                 n: int = 1, logprobs: Optional[int] = None, prompt_logprobs: Optional[int] = None,
                 allowed_token_ids: Optional[Sequence[int]] = None, skip_special_tokens: bool = True,
                 truncate_prompt_tokens: Optional[int] = None, bad_words: Optional[Sequence[str]] = None,
                 structured_outputs: Optional[StructuredOutputsParams] = None) -> None:
        values = locals()
        for name in self._FIELDS:
            setattr(self, name, values[name])
        self._native()

    def __setattr__(self, name: str, value: Any) -> None:
        """Sets a field as the constructor takes it: stop as a str or a list of str (kept as a list), top_k None
        as -1, stop_token_ids, bad_words and logit_bias None as empty. Ranges are checked when a request is made."""
        if name not in self._FIELDS:
            raise AttributeError(f"SamplingParams has no field {name!r}")
        object.__setattr__(self, name, self._converted(name, value))

    @classmethod
    def _converted(cls, name: str, value: Any) -> Any:
        """`value` as field `name` holds it, or TypeError naming the field. Integers may be any integer type
        (numpy's too), numbers any real, token id lists any iterable of integers."""
        def bad(expected: str, what: Any = value) -> TypeError:
            return TypeError(f"{name} must be {expected}, not {type(what).__name__}")

        def integer(v: Any, expected: str) -> int:
            if isinstance(v, float) or isinstance(v, (str, bytes)):
                raise bad(expected, v)
            try:
                return int(operator.index(v))
            except TypeError:
                raise bad(expected, v) from None

        if name in cls._FLOATS:
            if not isinstance(value, numbers.Real):
                raise bad("a number")
            return float(value)
        if name in cls._BOOLS:
            if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":
                return bool(value)
            raise bad("a bool")
        if name in cls._INTS:
            return integer(value, "an int")
        if name in cls._OPTIONAL_INTS or name == "top_k":
            if value is None:
                return -1 if name == "top_k" else None
            return integer(value, "an int or None")
        if name in ("stop", "bad_words"):  # a stop may be one str; a bad_words str would be taken letter by letter
            one = name == "stop"
            expected = "a str or a list of str" if one else "a list of str"
            if value is None:
                return []
            if one and isinstance(value, str):
                return [value]
            if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
                raise bad(expected)
            out = list(value)
            for x in out:
                if not isinstance(x, str):
                    raise TypeError(f"{name} must be {expected}, got a list holding {type(x).__name__}")
            return out
        if name == "allowed_token_ids" and value is None:
            return None
        if name in ("stop_token_ids", "allowed_token_ids"):
            if value is None:
                return []
            if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
                raise bad("a list of token ids")
            return [integer(t, "a list of int token ids, holding") for t in value]
        if name == "structured_outputs":
            if value is not None and not isinstance(value, StructuredOutputsParams):
                raise bad("a StructuredOutputsParams or None")
            if value is not None:  # its fields may have changed since it was made
                for flag in ("json_object", "disable_any_whitespace"):
                    if not isinstance(getattr(value, flag), bool):
                        raise TypeError(f"structured_outputs.{flag} must be True or False, not "
                                        f"{type(getattr(value, flag)).__name__}")
                if value.json is not None:
                    _schema_text(value.json)  # TypeError for what is not a schema (it is not changed here)
                value._check(value.choice, "structured_outputs")
                for c in value.choice or []:
                    if not isinstance(c, str):
                        raise TypeError(f"structured_outputs.choice must be a list of str, got a list holding "
                                        f"{type(c).__name__}")
            return value
        if name == "logit_bias":
            if value is None:
                return {}
            if not isinstance(value, Mapping):
                raise bad("a dict {token id: bias}")
            out = {}
            for t, b in value.items():
                tid = integer(t, "a dict with int token ids as keys, with a key of type")
                if not isinstance(b, numbers.Real):
                    raise TypeError(f"logit_bias must map token ids to numbers, not to {type(b).__name__}")
                out[tid] = float(b)
            return out
        return value

    def _native(self) -> _SamplingParams:
        """The engine's SamplingParams of the fields as they are now, checked again (a list may have changed in
        place): ValueError for a value out of range, TypeError for one of the wrong type, naming the field."""
        values = {name: self._converted(name, getattr(self, name)) for name in self._FIELDS}
        for name in self._INTS + ("logprobs", "prompt_logprobs", "top_k", "truncate_prompt_tokens"):
            v = values[name]
            if v is not None and not -2**63 <= v < 2**63:
                raise ValueError(f"{name} {v} is out of range")
        for t in values["stop_token_ids"] + list(values["logit_bias"]) + (values["allowed_token_ids"] or []):
            if not -2**63 <= t < 2**63:
                raise ValueError(f"token id {t} is out of range")
        seed = values["seed"]
        if seed is not None and not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        structured = values.pop("structured_outputs")
        choice = None if structured is None or structured.choice is None else list(structured.choice)
        json_object = structured is not None and structured.json_object
        json_schema = None if structured is None or structured.json is None else _schema_text(structured.json)
        json_mode = json_object or json_schema is not None
        return _SamplingParams(**values, choice=choice, json_object=json_object, json_schema=json_schema,
                               disable_any_whitespace=json_mode and structured.disable_any_whitespace)

    def clone(self) -> "SamplingParams":
        """A deep copy (its lists and dict are its own), as vLLM's clone()."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SamplingParams):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # mutable, as vLLM's

    def __repr__(self) -> str:
        return "SamplingParams(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS) + ")"


class Logprob:
    """One token's log-probability, as vLLM's Logprob: logprob (the raw log-softmax of the model's logits), rank
    (its place among all tokens, from 1: the likeliest is 1, ties by lower id) and decoded_token (its text; bytes
    that form no character become U+FFFD)."""

    __slots__ = ("logprob", "rank", "decoded_token")

    def __init__(self, logprob: float, rank: Optional[int] = None, decoded_token: Optional[str] = None):
        self.logprob = logprob
        self.rank = rank
        self.decoded_token = decoded_token

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Logprob):
            return NotImplemented
        return (self.logprob, self.rank, self.decoded_token) == (other.logprob, other.rank, other.decoded_token)

    def __repr__(self) -> str:
        return f"Logprob(logprob={self.logprob!r}, rank={self.rank!r}, decoded_token={self.decoded_token!r})"


class Tokenizer:
    """The model's tokenizer and chat template, with the names Hugging Face's tokenizers have: encode, decode,
    convert_ids_to_tokens, bos_token_id, eos_token_id, vocab_size, apply_chat_template. LLM.get_tokenizer()
    gives the engine's; Tokenizer.from_pretrained(path) loads one from a model path without the weights (a Hugging
    Face folder or a .gguf file, also a vocabulary-only one). It is immutable and may be shared across threads."""

    def __init__(self, impl: _Tokenizer):
        self._tok = impl

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike]) -> "Tokenizer":
        """The tokenizer and chat template of a model path. Raises FileNotFoundError when it is missing, ValueError
        when its files are bad."""
        return cls(_Tokenizer.load(os.fspath(path)))

    def encode(self, text: str, add_special_tokens: bool = True, *, split_special_tokens: bool = False) -> List[int]:
        """Token ids of `text`, with BOS (and EOS) as the model's files say when add_special_tokens; text that spells
        a special token ("<|im_end|>") becomes that token unless split_special_tokens (then it is plain text)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        return self._tok.encode(text, bool(add_special_tokens), not split_special_tokens)

    def decode(self, token_ids: Union[int, Sequence[int]], skip_special_tokens: bool = False) -> str:
        """The text of token ids (one id or a list); skip_special_tokens drops BOS, EOS and chat markers. Bytes that
        form no character become U+FFFD. Ids past the tokenizer's vocabulary decode to nothing, as in Hugging Face's
        fast tokenizers and the engine's own outputs (a model's vocabulary may be larger than its tokenizer's:
        Qwen2's has 271 padding ids past it, which sampling can pick); a negative id raises ValueError."""
        ids = self._checked_ids(token_ids)
        return self._tok.decode(ids, bool(skip_special_tokens))

    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]],
                              skip_special_tokens: bool = False) -> Union[str, List[str]]:
        """Each id's token as the vocabulary spells it ("Ġworld" in GPT-2's byte alphabet, "▁world", "<0x0A>"):
        a str for one id, a list for a list; None for an id past the vocabulary, as in Hugging Face's fast
        tokenizers. skip_special_tokens leaves out BOS, EOS and chat markers."""
        vocab = self._tok.vocab_size()
        spell = lambda i: self._tok.id_to_token(i) if i < vocab else None  # noqa: E731
        if isinstance(ids, int) and not isinstance(ids, bool):
            return spell(self._checked_ids(ids)[0])
        return [spell(i) for i in self._checked_ids(ids) if not (skip_special_tokens and self._tok.is_special(i))]

    @property
    def vocab_size(self) -> int:
        return self._tok.vocab_size()

    def __len__(self) -> int:
        return self._tok.vocab_size()

    @property
    def bos_token_id(self) -> Optional[int]:
        """BOS's id, None when the model has none."""
        return self._tok.bos_id() if self._tok.bos_id() >= 0 else None

    @property
    def eos_token_id(self) -> Optional[int]:
        """EOS's id, None when the model has none."""
        return self._tok.eos_id() if self._tok.eos_id() >= 0 else None

    @property
    def eos_token_ids(self) -> List[int]:
        """Every id that ends generation: EOS, end-of-turn tokens, and those of generation_config.json."""
        return self._tok.eos_ids()

    @property
    def bos_token(self) -> Optional[str]:
        return self._tok.id_to_token(self._tok.bos_id()) if self._tok.bos_id() >= 0 else None

    @property
    def eos_token(self) -> Optional[str]:
        return self._tok.id_to_token(self._tok.eos_id()) if self._tok.eos_id() >= 0 else None

    @property
    def has_chat_template(self) -> bool:
        """Whether the model has a chat template (apply_chat_template without chat_template= needs one)."""
        return self._tok.has_chat_template()

    def apply_chat_template(self, conversation: Union[Conversation, Sequence[Conversation]],
                            tools: Optional[Sequence[Dict[str, Any]]] = None,
                            documents: Optional[Sequence[Dict[str, Any]]] = None,
                            chat_template: Optional[str] = None, add_generation_prompt: bool = False,
                            continue_final_message: bool = False, tokenize: bool = True,
                            **kwargs: Any) -> Union[str, List[int], List[str], List[List[int]]]:
        """Renders a conversation (a list of {"role", "content"} dicts; or a list of them, giving a list) with the
        model's chat template, or `chat_template` (a Jinja string), exactly as Hugging Face renders it, with
        Hugging Face's defaults: tokenize=True gives token ids (no BOS added: the template writes the special
        tokens it wants), tokenize=False the text. tools (JSON schemas: {"type": "function", "function": {...}})
        and documents reach the template as `tools` and `documents`, kwargs as more variables
        ("enable_thinking", ...). continue_final_message ends the prompt inside the final message so the model
        continues it (not with add_generation_prompt).

        return_dict=True (with tokenize) gives {"input_ids", "attention_mask"}, as transformers' does without
        padding. transformers' other tokenizer arguments (padding, truncation, max_length, return_tensors,
        return_assistant_tokens_mask, tokenizer_kwargs) are refused unless left at their defaults: they are not
        template variables, and ignoring them would hand back something else than asked for.

        Raises ValueError when there is no template, the template fails (its message, raise_exception
        included), or the arguments contradict each other; TypeError when a value is not JSON."""
        for name in ("padding", "truncation", "max_length", "return_tensors", "return_assistant_tokens_mask",
                     "tokenizer_kwargs"):
            if kwargs.pop(name, None):
                raise ValueError(f"apply_chat_template: {name} is not supported (kvshare gives plain lists, "
                                 f"neither padded, truncated nor tensors); leave it out")
        return_dict = bool(kwargs.pop("return_dict", False))
        if return_dict and not tokenize:
            raise ValueError("apply_chat_template: return_dict=True needs tokenize=True")

        def as_dict(ids: Any) -> Any:
            if not return_dict:
                return ids
            if ids and isinstance(ids[0], list):
                return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}

        if _is_conversation(conversation):
            return as_dict(self._render_one(conversation, tools, documents, chat_template, add_generation_prompt,
                                            continue_final_message, tokenize, kwargs))
        if isinstance(conversation, (list, tuple)) and conversation and all(_is_conversation(c) for c in conversation):
            return as_dict([self._render_one(c, tools, documents, chat_template, add_generation_prompt,
                                             continue_final_message, tokenize, kwargs) for c in conversation])
        raise TypeError("conversation must be a list of {\"role\", \"content\"} dicts, or a non-empty list of them")

    def _render_one(self, conversation: Conversation, tools: Any, documents: Any, chat_template: Optional[str],
                    add_generation_prompt: bool, continue_final_message: bool, tokenize: bool,
                    kwargs: Dict[str, Any], tool_arguments_as_objects: bool = False) -> Union[str, List[int]]:
        if chat_template is not None and not isinstance(chat_template, str):
            raise TypeError("chat_template must be the template's Jinja source as a str")
        variables = dict(kwargs)
        if "messages" in variables:
            raise ValueError("the template's variables may not hold \"messages\"; pass the conversation itself")
        variables["messages"] = list(conversation)
        for name, value in (("tools", tools), ("documents", documents)):
            if value is None:
                continue  # left undefined, as the CLI and the server leave it
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
                raise TypeError(f"{name} must be a list of dicts (JSON schemas), not {type(value).__name__}")
            variables[name] = list(value)
        try:
            payload = json.dumps(variables, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"the conversation and the template's variables must be JSON values: {e}") from None
        text = self._tok.apply_chat_template(payload, bool(add_generation_prompt), bool(continue_final_message),
                                             chat_template, tool_arguments_as_objects)
        return self._tok.encode(text, False, True) if tokenize else text

    def _checked_ids(self, token_ids: Union[int, Sequence[int]]) -> List[int]:
        ids = [token_ids] if isinstance(token_ids, int) and not isinstance(token_ids, bool) else list(token_ids)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"token ids are ints, not {type(i).__name__}")
            if not 0 <= i < 2**31:
                raise ValueError(f"token ids are from 0 to 2^31 - 1, not {i}")
        return ids

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos_token_id={self.bos_token_id}, "
                f"eos_token_id={self.eos_token_id}, has_chat_template={self.has_chat_template})")


class CompletionOutput:
    """One completion of a request (index 0..n-1 of SamplingParams.n): its text, token ids, why it stopped
    ("stop" or "length") and, as vLLM's, stop_reason: the stop string or stop token id that ended it (None for
    the model's end-of-sequence token or a length stop). logprobs, when SamplingParams.logprobs was set, holds
    one {token id: Logprob} per generated token, with the chosen token and the top ones, as vLLM's."""

    __slots__ = ("index", "text", "token_ids", "finish_reason", "stop_reason", "logprobs")

    def __init__(self, index: int, text: str, token_ids: List[int], finish_reason: Optional[str],
                 stop_reason: Union[None, int, str] = None, logprobs: Optional[List[Dict[int, Logprob]]] = None):
        self.index = index
        self.text = text
        self.token_ids = token_ids
        self.finish_reason = finish_reason
        self.stop_reason = stop_reason
        self.logprobs = logprobs

    @property
    def cumulative_logprob(self) -> Optional[float]:
        """The sum of the generated tokens' log-probabilities (None without logprobs)."""
        if self.logprobs is None:
            return None
        return float(sum(lp[t].logprob for lp, t in zip(self.logprobs, self.token_ids)))

    def __repr__(self) -> str:
        return (f"CompletionOutput(index={self.index}, text={self.text!r}, token_ids={self.token_ids}, "
                f"finish_reason={self.finish_reason!r}, stop_reason={self.stop_reason!r})")


class RequestOutput:
    """A finished request: its prompt (None when given as token ids), the prompt's token ids, how many of
    them came from the prefix cache, and its SamplingParams.n completions in outputs (by index). prompt_logprobs,
    when SamplingParams.prompt_logprobs was set, holds None for the first prompt token, then one
    {token id: Logprob} per prompt token (the token and the top ones), as vLLM's."""

    __slots__ = ("request_id", "prompt", "prompt_token_ids", "num_cached_tokens", "outputs", "finished",
                 "prompt_logprobs")

    def __init__(self, request_id: str, prompt: Optional[str], prompt_token_ids: List[int], num_cached_tokens: int,
                 outputs: List[CompletionOutput], finished: bool = True,
                 prompt_logprobs: Optional[List[Optional[Dict[int, Logprob]]]] = None):
        self.prompt_logprobs = prompt_logprobs
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.num_cached_tokens = num_cached_tokens
        self.outputs = outputs
        self.finished = finished

    def __repr__(self) -> str:
        return (f"RequestOutput(request_id={self.request_id!r}, prompt={self.prompt!r}, "
                f"prompt_token_ids={self.prompt_token_ids}, num_cached_tokens={self.num_cached_tokens}, "
                f"outputs={self.outputs!r}, finished={self.finished})")


class PrefixHandle:
    """A prefix pinned in the KV cache by LLM.cache_prefix; requests that begin with it (and have the same
    cache_salt) reuse its K/V. release() (or leaving a `with` block) unpins it."""

    def __init__(self, llm: "LLM", handle: int):
        self._llm = llm
        self.handle = handle
        self.released = False

    def release(self) -> None:
        if not self.released:
            self._llm._engine.release_prefix(self.handle)
            self.released = True

    def __enter__(self) -> "PrefixHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __int__(self) -> int:
        return self.handle

    def __repr__(self) -> str:
        return f"PrefixHandle({self.handle}{', released' if self.released else ''})"


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def _kv_cache_budget(value: Union[None, int, float, str]) -> tuple:
    """kv_cache_memory -> (bytes, fraction) for EngineConfig: None is the engine's default (a quarter of the
    free memory), an int is bytes, a float in (0, MAX_KV_CACHE_FRACTION] a fraction of the free memory, a string
    a size like "2GiB" or "512MiB" (or a fraction like "0.3"), as the CLI's --kv-cache-memory."""
    if value is None:
        return 0, 0.25
    if isinstance(value, bool):
        raise TypeError("kv_cache_memory must be a size in bytes, a fraction of free memory, or a string like '2GiB'")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {value}")
        return value, 0.25
    if isinstance(value, float):
        if not 0 < value <= MAX_KV_CACHE_FRACTION:
            raise ValueError(f"kv_cache_memory as a float is a fraction of free memory in "
                             f"(0, {MAX_KV_CACHE_FRACTION}], got {value}")
        return 0, value
    if isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(f"kv_cache_memory must be a size like '2GiB' or '512MiB', or a fraction like '0.3'; "
                             f"got {value!r}")
        x = float(m.group(1))
        if x <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {value!r}")
        if unit == "" and x < 1:
            return 0, x
        return int(x * _UNITS[unit]), 0.25
    raise TypeError(f"kv_cache_memory must be None, an int, a float or a str, not {type(value).__name__}")


def _int_arg(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _native_at(i: int, params: SamplingParams) -> _SamplingParams:
    try:
        return params._native()
    except (TypeError, ValueError) as e:
        raise type(e)(f"sampling_params[{i}]: {e}") from None


def _is_token_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, int) and not isinstance(t, bool)
                                                                for t in x)


class LLM:
    """An engine over one model: a Hugging Face folder (config.json, safetensors, tokenizer files) or a .gguf
    file. Shared prompt prefixes are computed once and reused across a batch and across calls.

    kv_cache_memory: the KV cache budget, bytes (int), a fraction of free memory (float < 1), or a size
    string ("2GiB"); None takes a quarter of the free memory. block_size: tokens per KV block.
    max_num_seqs / max_num_batched_tokens: sequences and tokens in one step at most (longer prompts are
    prefilled in chunks). max_model_len: the context length (None: the model's). enable_prefix_caching:
    reuse shared prefixes (results are bitwise the same either way). seed: seeds every request that has no
    seed of its own. kv_cache_prefault: make the whole KV cache resident now (a slower start; no step waits
    for fresh pages later).

    Raises FileNotFoundError when the model is missing, ValueError for a bad argument or model file.
    """

    def __init__(self, model: Union[str, os.PathLike], *, kv_cache_memory: Union[None, int, float, str] = None,
                 block_size: int = 16, max_num_seqs: int = 64, max_num_batched_tokens: int = 512,
                 max_model_len: Optional[int] = None, enable_prefix_caching: bool = True, seed: Optional[int] = 0,
                 kv_cache_prefault: bool = False):
        model = os.fspath(model)
        kv_bytes, kv_fraction = _kv_cache_budget(kv_cache_memory)
        if max_model_len is None:
            max_model_len = 0
        elif _int_arg("max_model_len", max_model_len) < 1:
            raise ValueError(f"max_model_len must be positive, got {max_model_len}")
        seed = 0 if seed is None else _int_arg("seed", seed)  # None: vLLM's newer default, the engine's seed 0
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        self._engine = _Engine(model, kv_bytes, kv_fraction, _int_arg("block_size", block_size),
                               _int_arg("max_num_seqs", max_num_seqs),
                               _int_arg("max_num_batched_tokens", max_num_batched_tokens), max_model_len,
                               bool(enable_prefix_caching), seed, bool(kv_cache_prefault))
        self.model = model
        self._next_request = 0
        self._tokenizer = Tokenizer(self._engine.tokenizer())

    def _logprobs(self, rows: Optional[List[Optional[Dict[int, tuple]]]]) -> Optional[List[Optional[Dict[int, Logprob]]]]:
        """The engine's {token id: (logprob, rank)} rows as vLLM's {token id: Logprob}, with each token's text."""
        if rows is None:
            return None
        piece = self._tokenizer._tok.token_piece
        return [None if row is None else
                {t: Logprob(lp, rank, piece(t).decode("utf-8", "replace")) for t, (lp, rank) in row.items()}
                for row in rows]

    def get_tokenizer(self) -> Tokenizer:
        """The model's tokenizer and chat template (see Tokenizer): encode, decode, convert_ids_to_tokens,
        apply_chat_template, bos_token_id, eos_token_id, vocab_size."""
        return self._tokenizer

    def metrics(self) -> Dict[str, Any]:
        """The engine's counters: prefix-cache queries and hits, tokens computed, KV blocks, step times."""
        return self._engine.metrics()

    def cache_prefix(self, prefix: Union[str, Sequence[int]], *, cache_salt: str = "") -> PrefixHandle:
        """Computes the K/V of `prefix` (text, encoded as a prompt is, or token ids) once and pins its full
        blocks until the handle is released, so requests that begin with it reuse them. Usable as a context
        manager: `with llm.cache_prefix(instruction): llm.generate(...)`. Ctrl-C (KeyboardInterrupt) stops a long
        prefix's computation within a step; nothing is pinned and the LLM is ready for the next call."""
        if isinstance(prefix, str):
            handle = self._engine.cache_prefix(prefix, None, cache_salt)
        elif _is_token_ids(prefix):
            handle = self._engine.cache_prefix(None, list(prefix), cache_salt)
        else:
            raise TypeError("cache_prefix takes a string or a non-empty list of token ids")
        return PrefixHandle(self, handle)

    def release_prefix(self, handle: Union[PrefixHandle, int]) -> None:
        """Unpins a prefix from cache_prefix (its blocks stay cached until evicted). ValueError for a handle that
        is not pinned."""
        if isinstance(handle, PrefixHandle):
            handle.release()
        else:
            self._engine.release_prefix(int(handle))

    def reset_prefix_cache(self) -> bool:
        """Forgets every cached prefix block that no request holds (pinned prefixes stay), so later prompts are
        computed anew. Returns True, as vLLM's does when nothing runs (here nothing runs between calls)."""
        self._engine.reset_prefix_cache()
        return True

    def generate(self, prompts: Union[PromptType, Sequence[PromptType]],
                 sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None, *,
                 use_tqdm: Union[bool, Callable[..., Any]] = True) -> List[RequestOutput]:
        """Runs every prompt to the end and returns their RequestOutputs in input order.

        A prompt is a string, a list of token ids (used as they are: no BOS is added), or a dict with
        "prompt" or "prompt_token_ids" and optionally "cache_salt" (prompts share cached blocks only when
        their salts are equal). sampling_params is one SamplingParams for all prompts or a list with one per
        prompt; None means SamplingParams(). use_tqdm shows a progress bar when tqdm is installed (nothing
        otherwise); it may also be a tqdm-like class to use instead.

        Raises ValueError when a prompt or its parameters are bad, or when a prompt with its max_tokens needs
        more KV cache than there is (after the other prompts have run), and RuntimeError when a prompt cannot
        run for another reason (pinned prefixes hold the cache). Ctrl-C
        (KeyboardInterrupt) stops the batch within a step: its unfinished requests are aborted, the exception
        propagates, and the LLM is ready for the next call.
        """
        if isinstance(prompts, (str, dict)) or _is_token_ids(prompts):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params] * len(prompts)
        else:
            params_list = list(sampling_params)
            if len(params_list) != len(prompts):
                raise ValueError(f"got {len(params_list)} sampling_params for {len(prompts)} prompts; give one "
                                 f"SamplingParams for all or one per prompt")
            for i, p in enumerate(params_list):
                if not isinstance(p, SamplingParams):
                    raise TypeError(f"sampling_params[{i}] is a {type(p).__name__}, not a SamplingParams")
        # The engine's copies of the parameters as they are now (a field set or changed in place since the
        # constructor is checked here).
        if isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params._native()] * len(prompts)
        else:
            params_list = [_native_at(i, p) for i, p in enumerate(params_list)]

        requests = []
        shown = []  # the prompt text each output reports (None for token ids)
        for i, (prompt, params) in enumerate(zip(prompts, params_list)):
            text, ids, salt = _parse_prompt(i, prompt)
            requests.append(_Request(text, ids, params, salt))
            shown.append(text)
        if not requests:
            return []

        bar = _progress_bar(use_tqdm, sum(p.n for p in params_list)) if use_tqdm else None  # ticks per completion
        try:
            outputs = self._engine.generate(requests, bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()

        # The engine gives each request's n completions adjacently: group them back per request.
        grouped = []
        at = 0
        for params in params_list:
            count = params.n if 1 <= params.n <= _MAX_N else 1  # an out-of-range n gives one error output
            grouped.append(outputs[at:at + count])
            at += count
        # A bad request stopped the batch before it ran; a completion that failed while running (any of a
        # request's n, not only the first) fails the call too. One message per prompt.
        errors = []
        for i, group in enumerate(grouped):
            error = next((o.error for o in group if o.error is not None), None)
            if error is not None:
                errors.append((i, error))
        if errors:
            lines = [f"prompt {i}: {message}" for i, (_, message) in errors]
            text = "; ".join(lines[:5]) + (f" (and {len(lines) - 5} more)" if len(lines) > 5 else "")
            codes = {code for _, (code, _) in errors}
            cls = RuntimeError if codes & {"RESOURCE_EXHAUSTED", "INTERNAL"} else ValueError
            raise cls(text)

        results = []
        for prompt_text, group, params in zip(shown, grouped, params_list):
            request_id = str(self._next_request)
            self._next_request += 1
            completions = [CompletionOutput(o.index, o.text, list(o.token_ids), o.finish_reason, o.stop_reason,
                                            self._logprobs(o.logprobs)) for o in group]
            o = group[0]
            prompt_logprobs = self._logprobs(o.prompt_logprobs)
            if prompt_logprobs is None and params.prompt_logprobs is not None:
                prompt_logprobs = [None]  # a one-token prompt: its token has no context, as vLLM gives it
            results.append(RequestOutput(request_id, prompt_text, list(o.prompt_token_ids), o.num_cached_tokens,
                                         completions, prompt_logprobs=prompt_logprobs))
        return results

    def chat(self, messages: Union[Conversation, Sequence[Conversation]],
             sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None, *,
             use_tqdm: Union[bool, Callable[..., Any]] = True, chat_template: Optional[str] = None,
             add_generation_prompt: bool = True, continue_final_message: bool = False,
             tools: Optional[Sequence[Dict[str, Any]]] = None,
             chat_template_kwargs: Optional[Dict[str, Any]] = None) -> List[RequestOutput]:
        """Generates the replies to one conversation (a list of {"role", "content"} dicts) or to a list of
        them, and returns their RequestOutputs in input order (.prompt is the rendered prompt).

        Each conversation is rendered with the model's chat template (tokenizer_config.json's chat_template,
        chat_template.jinja, or the GGUF's tokenizer.chat_template), or with `chat_template` (a Jinja string)
        when given, exactly as Hugging Face renders it (Tokenizer.apply_chat_template). tools (JSON schemas:
        [{"type": "function", "function": {"name", "description", "parameters"}}]) reach the template as
        `tools`; chat_template_kwargs are more variables ("documents", "enable_thinking", ...), and win over tools
        as in vLLM. Tool calls' arguments given as JSON text (as OpenAI's clients write them) reach the template
        as objects, as vLLM's chat passes them. continue_final_message ends the prompt inside the final message
        (a partly written assistant reply) so the model continues it; it needs add_generation_prompt=False. The
        prompt is then tokenized as vLLM does, without adding BOS/EOS (the template writes the special tokens it
        wants).
        sampling_params and use_tqdm are as in generate().

        Raises ValueError when the model has no chat template and none is given, or when the template fails
        (its message, e.g. from raise_exception, with the line and column).
        """
        if _is_conversation(messages):
            conversations = [messages]
        elif isinstance(messages, (list, tuple)) and messages and all(_is_conversation(c) for c in messages):
            conversations = list(messages)
        else:
            raise TypeError("messages must be a conversation (a non-empty list of {\"role\", \"content\"} dicts) "
                            "or a non-empty list of conversations")
        options: Dict[str, Any] = {"chat_template": chat_template, "add_generation_prompt": add_generation_prompt,
                                   "continue_final_message": continue_final_message, "tools": tools}
        options.update(chat_template_kwargs or {})  # as vLLM: the kwargs win
        for name in ("messages", "conversation", "tokenize"):
            if name in options:
                raise ValueError(f"chat_template_kwargs may not hold \"{name}\"; pass the conversation as messages")
        prompts = []
        for i, conversation in enumerate(conversations):
            # As apply_chat_template(tokenize=False), but for tool calls' arguments given as JSON text (as OpenAI's
            # clients write them), which reach the template as objects, as vLLM's chat passes them.
            variables = dict(options)
            text = self._tokenizer._render_one(
                conversation, variables.pop("tools", None), variables.pop("documents", None),
                variables.pop("chat_template", None), variables.pop("add_generation_prompt"),
                variables.pop("continue_final_message"), False, variables, tool_arguments_as_objects=True)
            ids = self._tokenizer.encode(text, add_special_tokens=False)
            if not ids:
                raise ValueError(f"conversation {i}: the chat template rendered an empty prompt")
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)


def _is_conversation(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def _parse_prompt(i: int, prompt: Any) -> tuple:
    """(text or None, token ids or None, cache salt) of one prompt."""
    if isinstance(prompt, str):
        return prompt, None, ""
    if _is_token_ids(prompt):
        return None, list(prompt), ""
    if isinstance(prompt, dict):
        unknown = set(prompt) - {"prompt", "prompt_token_ids", "cache_salt"}
        if unknown:
            raise ValueError(f"prompt {i}: unsupported keys {sorted(unknown)} (a prompt dict takes \"prompt\" or "
                             f"\"prompt_token_ids\", and \"cache_salt\")")
        salt = prompt.get("cache_salt")
        salt = "" if salt is None else salt
        if not isinstance(salt, str):  # 0 or False were taken as "no salt"
            raise TypeError(f"prompt {i}: cache_salt must be a string")
        if "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not _is_token_ids(ids):
                raise ValueError(f"prompt {i}: prompt_token_ids must be a non-empty list of ints")
            text = prompt.get("prompt")
            return (text if isinstance(text, str) else None), list(ids), salt
        if "prompt" in prompt:
            if not isinstance(prompt["prompt"], str):
                raise TypeError(f"prompt {i}: \"prompt\" must be a string")
            return prompt["prompt"], None, salt
        raise ValueError(f"prompt {i}: a prompt dict needs \"prompt\" or \"prompt_token_ids\"")
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise ValueError(f"prompt {i}: an empty list of token ids (an empty string \"\" starts from BOS alone)")
    raise TypeError(f"prompt {i}: a prompt is a str, a list of token ids or a dict, not {type(prompt).__name__}")


def _progress_bar(use_tqdm: Any, total: int):
    """A tqdm bar (use_tqdm may be tqdm itself or a replacement with its signature), or None when tqdm is not
    installed (Debian: python3-tqdm): no bar, no error."""
    factory = use_tqdm if callable(use_tqdm) else None
    if factory is None:
        try:
            from tqdm.auto import tqdm as factory  # Debian: python3-tqdm
        except ImportError:
            return None
    return factory(total=total, desc="Processed prompts", unit="prompt")
