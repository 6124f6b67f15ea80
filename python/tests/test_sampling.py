"""The sampling fields through the Python module: n completions, stop strings, logprobs, penalties and their
errors (the engine's own tests check the numbers; these check what Python users see)."""
import math

import pytest

from kvshare import Logprob, SamplingParams, StructuredOutputsParams


def test_new_fields_round_trip_and_defaults():
    p = SamplingParams(min_p=0.1, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1,
                       logit_bias={5: 2.0}, min_tokens=3, stop=["\n", "END"], include_stop_str_in_output=True,
                       n=2, logprobs=4)
    assert abs(p.min_p - 0.1) < 1e-6 and p.logit_bias == {5: 2.0} and p.stop == ["\n", "END"]
    assert (p.min_tokens, p.include_stop_str_in_output, p.n, p.logprobs) == (3, True, 2, 4)
    assert SamplingParams(stop="one").stop == ["one"]
    d = SamplingParams()
    assert (d.min_p, d.presence_penalty, d.frequency_penalty, d.repetition_penalty) == (0.0, 0.0, 0.0, 1.0)
    assert (d.logit_bias, d.min_tokens, d.stop, d.include_stop_str_in_output, d.n, d.logprobs) == \
        ({}, 0, [], False, 1, None)
    assert "n=2" in repr(p) and "stop=['\\n', 'END']" in repr(p)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n (completions"),
    ({"logprobs": 21}, "logprobs"),
    ({"min_p": 1.5}, "min_p"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"logit_bias": {1: 101}}, "logit_bias"),
    ({"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
    ({"stop": [""]}, "stop"),
])
def test_bad_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SamplingParams(**kwargs)


def test_stop_must_be_strings():
    with pytest.raises(TypeError, match="stop"):
        SamplingParams(stop=[1])


def test_fields_take_when_set_what_the_constructor_takes():
    # p.stop = "x" and p.top_k = None raised TypeError, though SamplingParams(stop="x", top_k=None) is vLLM's usage.
    p = SamplingParams(top_k=5, stop=["a"], stop_token_ids=[3], logit_bias={1: 1.0})
    p.stop = "x"
    assert p.stop == ["x"]
    p.stop = None
    assert p.stop == []
    p.top_k = None
    assert p.top_k == -1
    p.stop_token_ids = None
    assert p.stop_token_ids == []
    p.logit_bias = {7: -2.5}
    assert p.logit_bias == {7: -2.5}
    p.logit_bias = None
    assert p.logit_bias == {}
    with pytest.raises(TypeError, match="stop"):
        p.stop = [1]
    with pytest.raises(TypeError, match="temperature must be a number"):
        p.temperature = "hot"
    with pytest.raises(TypeError, match="max_tokens must be an int"):
        p.max_tokens = 2.5
    with pytest.raises(AttributeError, match="best_of"):
        p.best_of = 2  # not a field: an error, not an attribute the engine never reads


def test_list_fields_change_in_place_and_are_checked_when_used(stories):
    # They were copies read out of the C++ struct: p.stop.append(...) changed the copy, and the stop was ignored.
    greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    text = stories.generate("Once upon a time", greedy)[0].outputs[0].text
    word = next(w for w in text.split()[2:] if w.isalpha() and len(w) > 2)
    greedy.stop.append(word)
    assert greedy.stop == [word]
    out = stories.generate("Once upon a time", greedy)[0].outputs[0]
    assert (out.text, out.stop_reason) == (text[:text.index(word)], word)
    first = stories.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=1))[0].outputs[0].token_ids[0]
    biased = SamplingParams(temperature=0, max_tokens=1)
    biased.logit_bias[first] = -100.0
    assert stories.generate("Once upon a time", biased)[0].outputs[0].token_ids[0] != first
    stopped = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    stopped.stop_token_ids.append(first)
    out = stories.generate("Once upon a time", stopped)[0].outputs[0]
    assert (out.token_ids, out.stop_reason) == ([first], first)
    # A value changed in place is checked when a request is made of it, with the field's name.
    bad = SamplingParams()
    bad.stop.append("")
    with pytest.raises(ValueError, match="stop"):
        stories.generate("Once upon a time", bad)
    with pytest.raises(ValueError, match=r"sampling_params\[1\]: .*min_tokens"):
        late = SamplingParams(max_tokens=4)
        late.min_tokens = 9
        stories.generate(["a", "b"], [SamplingParams(), late])


def test_fields_take_integer_and_sequence_types_and_name_the_field_when_wrong():
    p = SamplingParams(stop_token_ids=(2, 3), stop=("a", "b"), logprobs=True, seed=2**63, max_tokens=True)
    assert (p.stop_token_ids, p.stop, p.logprobs, p.seed, p.max_tokens) == ([2, 3], ["a", "b"], 1, 2**63, 1)
    assert SamplingParams(seed=2**64 - 1).seed == 2**64 - 1
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        SamplingParams(seed=2**64)
    with pytest.raises(ValueError, match="seed"):
        SamplingParams(seed=-1)
    with pytest.raises(TypeError, match="stop_token_ids must be a list of int token ids, holding.* str"):
        SamplingParams(stop_token_ids=["3"])
    with pytest.raises(TypeError, match="logit_bias must be a dict with int token ids as keys"):
        SamplingParams(logit_bias={"5": 1.0})  # string keys, as OpenAI JSON has them
    with pytest.raises(TypeError, match="logit_bias must map token ids to numbers"):
        SamplingParams(logit_bias={5: "high"})
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=2**70)
    with pytest.raises(ValueError, match="token id"):
        SamplingParams(stop_token_ids=[2**40])
    q = SamplingParams()
    q.stop_token_ids.append("3")  # checked when used, with the field's name
    with pytest.raises(TypeError, match="stop_token_ids"):
        q._native()


def test_numpy_values_are_taken_as_their_python_values():
    np = pytest.importorskip("numpy")
    p = SamplingParams(stop_token_ids=np.array([2, 3]), ignore_eos=np.bool_(True), temperature=np.float32(0.5),
                       max_tokens=np.int64(7), logit_bias={np.int64(4): np.float64(1.5)})
    assert (p.stop_token_ids, p.ignore_eos, p.temperature, p.max_tokens, p.logit_bias) == \
        ([2, 3], True, 0.5, 7, {4: 1.5})
    assert all(type(t) is int for t in p.stop_token_ids)


def test_allowed_token_ids_and_skip_special_tokens(stories):
    tok = stories.get_tokenizer()
    labels = [tok.encode(w, add_special_tokens=False)[-1] for w in (" yes", " no")]
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=12, ignore_eos=True, allowed_token_ids=labels)
    out = stories.generate("Once upon a time", params)[0].outputs[0]
    assert len(out.token_ids) == 12 and set(out.token_ids) <= set(labels)
    eos = tok.eos_token_id
    shown = SamplingParams(max_tokens=2, ignore_eos=True, allowed_token_ids=[eos], skip_special_tokens=False)
    assert stories.generate("Once upon a time", shown)[0].outputs[0].text == tok.decode([eos, eos])
    shown.skip_special_tokens = True
    assert stories.generate("Once upon a time", shown)[0].outputs[0].text == ""
    with pytest.raises(ValueError, match="allowed_token_ids must not be empty"):
        SamplingParams(allowed_token_ids=[])
    with pytest.raises(ValueError, match="allowed_token_ids: token id 99999 is outside the vocabulary"):
        stories.generate("x", SamplingParams(allowed_token_ids=[99999]))


def test_bad_words_are_not_generated(stories):
    tok = stories.get_tokenizer()
    greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    free = stories.generate("Once upon a time", greedy)[0].outputs[0]
    # A word the model said that is one token of its own.
    words = [(t, tok.decode([t]).strip()) for t in free.token_ids]
    t, word = next((t, w) for t, w in words if len(w) > 2 and tok.encode(w, add_special_tokens=False) == [t])
    greedy.bad_words = [word]
    out = stories.generate("Once upon a time", greedy)[0].outputs[0]
    assert t not in out.token_ids and out.token_ids != free.token_ids
    at = free.token_ids.index(t)
    assert out.token_ids[:at] == free.token_ids[:at]  # the same until the banned word
    greedy.bad_words.append("  ")  # changed in place: checked again
    with pytest.raises(ValueError, match=r"bad_words\[1\] is empty or only whitespace"):
        stories.generate("Once upon a time", greedy)
    with pytest.raises(TypeError, match="bad_words must be a list of str"):
        SamplingParams(bad_words="darn")
    assert SamplingParams(bad_words=None).bad_words == []


def test_structured_outputs_choice(stories):
    # vLLM's spelling: the text is one of the choices, for every completion.
    choices = ["happy", "sad", "a little bit scared"]
    params = SamplingParams(temperature=1.5, seed=2, n=8, max_tokens=30,
                            structured_outputs=StructuredOutputsParams(choice=choices))
    outs = stories.generate(["Once upon a time", "The dog felt"], params)
    for out in outs:
        assert all(c.text in choices and c.finish_reason == "stop" for c in out.outputs), \
            [c.text for c in out.outputs]
    assert len({c.text for out in outs for c in out.outputs}) > 1
    assert params.structured_outputs == StructuredOutputsParams(choice=choices, disable_any_whitespace=True)
    assert "choice=['happy'" in repr(params)
    params.structured_outputs.choice.append("")  # changed in place: checked again
    with pytest.raises(ValueError, match=r"choice\[3\] is empty"):
        stories.generate("x", params)
    params.structured_outputs.choice[3] = 3
    with pytest.raises(TypeError, match="structured_outputs.choice must be a list of str, got a list holding int"):
        stories.generate("x", params)
    with pytest.raises(ValueError, match=r"min_tokens \(1\) cannot be combined with choice"):
        stories.generate("x", SamplingParams(min_tokens=1, structured_outputs=StructuredOutputsParams(choice=["a"])))
    with pytest.raises(ValueError, match=r"StructuredOutputsParams\(regex=...\) is not supported"):
        StructuredOutputsParams(regex="[a-z]+")
    with pytest.raises(ValueError, match="needs choice=.* or json_object=True"):
        StructuredOutputsParams()
    with pytest.raises(TypeError, match="choice must be a list of str"):
        StructuredOutputsParams(choice="yes")
    with pytest.raises(TypeError, match="structured_outputs must be a StructuredOutputsParams or None"):
        SamplingParams(structured_outputs={"choice": ["a"]})


def test_structured_outputs_json_object(stories):
    # The text is the start of one JSON object, compact here; each that stops is whole and parses. A few tokens only
    # ({ } " : 1), so that the tiny model closes its objects.
    import json
    tok = stories.get_tokenizer()
    few = [tok.encode(piece, add_special_tokens=False)[-1] for piece in ["{", "}", '"', ":", "1"]]
    assert [tok.decode([t]) for t in few] == ["{", "}", '"', ":", "1"]
    params = SamplingParams(temperature=1.0, seed=3, n=8, max_tokens=40, allowed_token_ids=few,
                            structured_outputs=StructuredOutputsParams(json_object=True, disable_any_whitespace=True))
    whole = 0
    for out in stories.generate(["Once upon a time", "The dog felt"], params):
        for c in out.outputs:
            assert c.text.startswith("{"), c.text
            if c.finish_reason == "stop":
                assert isinstance(json.loads(c.text), dict), c.text
                whole += 1
            else:
                assert c.finish_reason == "length", c.finish_reason
    assert whole >= 4
    assert "json_object=True" in repr(params)
    assert StructuredOutputsParams(json_object=True) != params.structured_outputs  # whitespace matters to JSON
    with pytest.raises(ValueError, match=r"min_tokens \(1\) cannot be combined with json_object"):
        stories.generate("x", SamplingParams(min_tokens=1,
                                             structured_outputs=StructuredOutputsParams(json_object=True)))
    with pytest.raises(ValueError, match=r"takes one of .*, got choice=\[...\] and json_object=True"):
        StructuredOutputsParams(choice=["a"], json_object=True)
    with pytest.raises(TypeError, match="json_object must be True or False"):
        StructuredOutputsParams(json_object="yes")
    # Changed after it was made: checked again when a request is made (it gave pybind11's constructor dump).
    so = StructuredOutputsParams(json_object=True)
    for field, value, error in [("json_object", "x", TypeError), ("disable_any_whitespace", "yes", TypeError),
                                ("json_object", False, ValueError)]:
        setattr(so, field, value)
        with pytest.raises(error, match=f"structured_outputs"):
            stories.generate("x", SamplingParams(structured_outputs=so))
        so = StructuredOutputsParams(json_object=True)
    assert StructuredOutputsParams(json_object=True, disable_any_whitespace=None) == \
        StructuredOutputsParams(json_object=True)


# Schemas of each kind a schema may say (docs/limits.md): keys in order, required and optional, lengths, enums,
# integers, arrays with bounds, anyOf, and a tree through $ref.
JSON_SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 8},
                                      "age": {"type": "integer"}, "mood": {"enum": ["happy", "sad", 3]},
                                      "pets": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                               "maxItems": 2}},
     "required": ["name", "mood"]},
    {"type": "array", "minItems": 1, "maxItems": 3,
     "items": {"type": "object", "properties": {"x": {"type": "number"}, "ok": {"type": "boolean"}},
               "required": ["ok"], "additionalProperties": False}},
    {"$defs": {"T": {"type": "object", "properties": {
        "v": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}, "maxItems": 2}}, "required": ["v"]}},
     "$ref": "#/$defs/T"},
]


def stopped_values(outputs):
    """The JSON value of each completion that stopped (one cut short by max_tokens is passed over)."""
    import json
    for out in outputs:
        for c in out.outputs:
            if c.finish_reason == "length":
                continue
            assert c.finish_reason == "stop", c.finish_reason
            yield c, json.loads(c.text)


@pytest.mark.parametrize("schema", JSON_SCHEMAS, ids=["object", "array", "tree"])
def test_structured_outputs_json_schema_is_followed(stories, schema):
    # Every completion that stops is JSON the reference validator (the jsonschema package) takes, with the keys in
    # the schema's order; sampled hot, so that the walks differ. The tiny model writes whatever the schema lets it.
    import jsonschema
    params = SamplingParams(temperature=1.5, seed=11, n=12, max_tokens=160,
                            structured_outputs=StructuredOutputsParams(json=schema))
    whole = 0
    for c, value in stopped_values(stories.generate(["Once upon a time", "The dog felt", ""], params)):
        jsonschema.validate(value, schema)
        top = schema["$defs"]["T"] if "$ref" in schema else schema  # the tree's root is a T
        objects = [(value, top)] if isinstance(value, dict) else [(v, schema["items"]) for v in value]
        for obj, its_schema in objects:
            assert list(obj) == [k for k in its_schema.get("properties", {}) if k in obj], c.text
        whole += 1
    assert whole >= 12, whole


# Pydantic's unions of models: Union[Cat, Dog] (anyOf of two models whose first keys are alike) and a discriminated
# union (oneOf, told apart by a Literal written as const and enum both), as model_json_schema() writes them.
_PET_DEFS = {
    "Cat": {"properties": {"name": {"maxLength": 4, "title": "Name", "type": "string"},
                           "meows": {"maximum": 99, "minimum": 0, "title": "Meows", "type": "integer"}},
            "required": ["name", "meows"], "title": "Cat", "type": "object"},
    "Dog": {"properties": {"name": {"maxLength": 4, "title": "Name", "type": "string"},
                           "barks": {"title": "Barks", "type": "boolean"}},
            "required": ["name", "barks"], "title": "Dog", "type": "object"},
}
UNION_SCHEMAS = [
    {"$defs": _PET_DEFS, "properties": {"pets": {"items": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
                                                 "minItems": 1, "maxItems": 2, "title": "Pets", "type": "array"}},
     "required": ["pets"], "title": "Owner", "type": "object"},
    {"$defs": {name: {**d, "properties": {"kind": {"const": name.lower(), "enum": [name.lower()], "title": "Kind",
                                                   "type": "string"}, **d["properties"]},
                      "required": ["kind", *d["required"]]} for name, d in _PET_DEFS.items()},
     "properties": {"pets": {"items": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"},
                                                         "propertyName": "kind"},
                                       "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
                             "minItems": 1, "maxItems": 2, "title": "Pets", "type": "array"}},
     "required": ["pets"], "title": "Owner", "type": "object"},
]


@pytest.mark.parametrize("schema", UNION_SCHEMAS, ids=["anyOf", "discriminated"])
def test_structured_outputs_unions_of_models_are_followed(stories, schema):
    # Every completion that stops is JSON the reference validator takes, and both models are written: the
    # alternatives begin alike, and each is followed until the text tells them apart.
    import jsonschema
    so = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    params = SamplingParams(temperature=1.5, seed=5, n=12, max_tokens=120, structured_outputs=so)
    whole, keys = 0, set()
    for _, value in stopped_values(stories.generate(["Once upon a time", "The cat and the dog", ""], params)):
        jsonschema.validate(value, schema)
        for pet in value["pets"]:
            keys |= set(pet)
        whole += 1
    assert whole >= 12, whole
    assert {"meows", "barks"} <= keys, keys


def test_structured_outputs_string_formats_parse(stories):
    # Dates, date-times, times and UUIDs (Pydantic's date, datetime, time and UUID fields): every one written parses
    # with Python's own readers (datetime's fromisoformat, uuid.UUID), the independent reference.
    import datetime
    import uuid
    readers = {"date": datetime.date.fromisoformat, "date-time": datetime.datetime.fromisoformat,
               "time": datetime.time.fromisoformat, "uuid": uuid.UUID}
    whole = 0
    for formats in [("date", "date-time"), ("time", "uuid")]:  # (two at a time: the tiny model's context is short)
        schema = {"type": "object", "properties": {f: {"type": "string", "format": f} for f in formats},
                  "required": list(formats)}
        so = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
        params = SamplingParams(temperature=1.5, seed=3, n=8, max_tokens=110, structured_outputs=so)
        for _, value in stopped_values(stories.generate(["Once upon a time", ""], params)):
            for f in formats:
                readers[f](value[f])
            whole += 1
    assert whole >= 4, whole


def test_structured_outputs_email_addresses(stories):
    # format "email" (Pydantic's EmailStr): every address written is a valid e-mail address by the WHATWG's
    # definition (HTML's input type=email), the independent reference, with no empty dot-separated part before the
    # '@' and a dotted domain whose last label is letters, as email-validator wants.
    import re
    whatwg = re.compile(r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                        r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*")
    schema = {"type": "object", "properties": {"to": {"type": "string", "format": "email"}}, "required": ["to"]}
    so = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    # '@' and '"' made likely (this tiny model writes neither of its own): each at the first place it may stand.
    tok = stories.get_tokenizer()
    names = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    at, quote = (next(i for i, n in enumerate(names) if n in (c, "<0x%02X>" % ord(c))) for c in '@"')
    params = SamplingParams(temperature=1.0, seed=4, n=8, max_tokens=60, structured_outputs=so,
                            logit_bias={at: 30, quote: 30})
    whole = 0
    for _, value in stopped_values(stories.generate(["Once upon a time", ""], params)):
        address = value["to"]
        assert whatwg.fullmatch(address), address
        local, domain = address.split("@")
        assert "" not in local.split(".") and "." in domain and domain.rsplit(".", 1)[1].isalpha(), address
        whole += 1
    assert whole >= 8, whole


def test_structured_outputs_patterns_match(stories):
    # Strings under a pattern (Pydantic's Field(pattern=...)) match it as Python's re does (the jsonschema package
    # validates pattern with re.search): anchors, classes, counts, groups and alternatives.
    import jsonschema
    schema = {"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2,3}$"},
        "slug": {"type": "string", "pattern": "^[a-z]{1,6}(?:_[a-z]{1,4})?$"},
        "note": {"type": "string", "pattern": "^[a-z ]{0,8}(cat|dog)$"}}, "required": ["code", "slug", "note"]}
    so = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    params = SamplingParams(temperature=1.2, seed=2, n=8, max_tokens=100, structured_outputs=so)
    whole = 0
    for _, value in stopped_values(stories.generate(["Once upon a time", ""], params)):
        jsonschema.validate(value, schema)
        whole += 1
    assert whole >= 4, whole


def test_structured_outputs_json_schema_fields(stories):
    import json

    class Person:  # pydantic's interface, without pydantic
        @staticmethod
        def model_json_schema():
            return {"type": "object", "properties": {"b": {"const": 1}, "a": {"const": True}},
                    "required": ["b", "a"]}

    so = StructuredOutputsParams(json=Person, disable_any_whitespace=True)
    assert so.json == '{"type": "object", "properties": {"b": {"const": 1}, "a": {"const": true}}, ' \
                      '"required": ["b", "a"]}'
    assert so == StructuredOutputsParams(json=so.json, disable_any_whitespace=True)
    assert "json=" in repr(so)
    out = stories.generate("x", SamplingParams(max_tokens=20, structured_outputs=so))[0].outputs[0]
    assert (out.text, out.finish_reason) == ('{"b":1,"a":true}', "stop")
    assert json.loads(out.text) == {"b": 1, "a": True}
    with pytest.raises(ValueError,
                       match=r"json_schema: the keyword \"patternProperties\" is not supported.*\(at /properties/s\)"):
        stories.generate("x", SamplingParams(structured_outputs=StructuredOutputsParams(
            json={"type": "object", "properties": {"s": {"type": "string", "patternProperties": {}}}})))
    with pytest.raises(ValueError, match="json_schema is not valid JSON"):
        stories.generate("x", SamplingParams(structured_outputs=StructuredOutputsParams(json="{")))
    with pytest.raises(ValueError, match=r"takes one of .*, got json=... and json_object=True"):
        StructuredOutputsParams(json={}, json_object=True)
    with pytest.raises(TypeError, match="json must be a JSON schema"):
        StructuredOutputsParams(json=3)
    with pytest.raises(ValueError, match=r"min_tokens \(1\) cannot be combined with json_schema"):
        stories.generate("x", SamplingParams(min_tokens=1, structured_outputs=StructuredOutputsParams(json={})))


def test_truncate_prompt_tokens_keeps_the_last_tokens(stories):
    long = "Once upon a time there was a little dog. " * 60  # over stories260K's context
    with pytest.raises(ValueError, match="context"):
        stories.generate(long, SamplingParams(max_tokens=2))
    out = stories.generate(long, SamplingParams(temperature=0, max_tokens=2, truncate_prompt_tokens=20))[0]
    assert len(out.prompt_token_ids) == 20
    tok = stories.get_tokenizer()
    assert out.prompt_token_ids[0] == tok.bos_token_id, "BOS stays first, as a tokenizer truncating on the left keeps it"
    assert out.prompt_token_ids[1:] == tok.encode(long)[-19:]
    alone = stories.generate([out.prompt_token_ids], SamplingParams(temperature=0, max_tokens=2))[0]
    assert out.outputs[0].token_ids == alone.outputs[0].token_ids
    with pytest.raises(ValueError, match="truncate_prompt_tokens must be -1"):
        SamplingParams(truncate_prompt_tokens=0)


def test_copies_and_equality():
    p = SamplingParams(stop=["a"], logit_bias={1: 2.0}, seed=3)
    q = p.clone()
    assert q == p and q is not p
    q.stop.append("b")
    assert p.stop == ["a"] and q != p
    assert "seed=3" in repr(p) and "stop=['a']" in repr(p)
    w = SamplingParams(bad_words=["darn"])
    v = w.clone()
    v.bad_words.append("heck")
    assert w.bad_words == ["darn"] and v != w and "bad_words=['darn']" in repr(w)
    with pytest.raises(ValueError, match="bad_words holds 129 words; at most 128"):
        SamplingParams(bad_words=["a"] * 129)


def test_n_completions_come_back_in_one_request_output(stories):
    params = SamplingParams(temperature=1.0, seed=9, max_tokens=8, n=3, ignore_eos=True, logprobs=2)
    outs = stories.generate(["Once upon a time", "The dog"], [params, SamplingParams(temperature=0, max_tokens=4)])
    assert len(outs) == 2
    assert [c.index for c in outs[0].outputs] == [0, 1, 2]
    assert len(outs[1].outputs) == 1
    texts = {tuple(c.token_ids) for c in outs[0].outputs}
    assert len(texts) > 1, "each completion draws its own tokens"
    for c in outs[0].outputs:
        assert len(c.logprobs) == len(c.token_ids) == 8
        for lp, t in zip(c.logprobs, c.token_ids):
            assert t in lp and lp[t].logprob <= 0.0 and len(lp) in (2, 3)
            assert all(isinstance(x, Logprob) for x in lp.values())
            top = sorted((x for tok, x in lp.items() if tok != t or x.rank <= 2), key=lambda x: x.rank)
            assert [x.rank for x in top] == [1, 2], "the two likeliest are ranked 1 and 2"
            assert top[0].logprob >= top[1].logprob
            assert lp[t].rank >= 1 and (lp[t].rank <= 2) == (lp[t] in top)
        assert math.isclose(c.cumulative_logprob, sum(lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)))
    # The same request again draws the same completions.
    again = stories.generate("Once upon a time", params)[0]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in outs[0].outputs]


def test_stop_string_cuts_the_text(stories):
    greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    text = stories.generate("Once upon a time", greedy)[0].outputs[0].text
    word = next(w for w in text.split()[2:] if w.isalpha() and len(w) > 2)
    cut = text.index(word)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=[word])
    out = stories.generate("Once upon a time", params)[0].outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == (text[:cut], "stop", word)
    params.include_stop_str_in_output = True
    out = stories.generate("Once upon a time", params)[0].outputs[0]
    assert out.text == text[:cut + len(word)]


def test_prompt_logprobs(stories):
    params = SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=1)
    out = stories.generate("Once upon a time", params)[0]
    assert out.prompt_logprobs[0] is None, "the first prompt token has no context"
    assert len(out.prompt_logprobs) == len(out.prompt_token_ids)
    for lp, t in zip(out.prompt_logprobs[1:], out.prompt_token_ids[1:]):
        assert t in lp and lp[t].logprob <= 0.0 and len(lp) in (1, 2)
        assert (lp[t].rank == 1) == (len(lp) == 1), "the likeliest token is ranked 1"
    # Each token's text, as vLLM's decoded_token: the prompt's words, each with its space.
    pieces = [lp[t].decoded_token for lp, t in zip(out.prompt_logprobs[1:], out.prompt_token_ids[1:])]
    assert "".join(pieces).strip() == "Once upon a time" and all(p.startswith(" ") for p in pieces[1:])
    assert stories.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=2))[0].prompt_logprobs is None
    one = stories.generate([[1]], params)[0]  # was None, as if not asked for
    assert one.prompt_logprobs == [None] and len(one.prompt_token_ids) == 1
    with pytest.raises(ValueError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=21)
