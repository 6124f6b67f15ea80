"""kvshare.LLM end to end on the tiny real models of ../shared: the golden continuation, the same tokens as
the CLI, reuse on = off, prompt forms, per-prompt parameters, explicit prefixes, the tokenizer, errors."""
import json
import pathlib
import subprocess

import pytest

import kvshare
from kvshare import LLM, SamplingParams
from conftest import MODELS, shared_path

GREEDY = SamplingParams(temperature=0, max_tokens=24)

STORY = ("Once upon a time, there was a little girl named Lily. One day, she went to the park with her mom. They saw "
         "a big tree with many birds. Lily was very happy. She loved to play outside in the park with her")
ENDINGS = [" dog.", " friends. One day", " mom and dad.", " big red ball. She"]


def batch_lines(stop_id):
    """JSONL lines for the CLI, covering every prompt form and sampling field."""
    lines = [{"prompt": STORY + e} for e in ENDINGS]
    lines += [
        {"prompt_token_ids": [1, 403, 407, 261, 378]},
        {"prompt": STORY + " cat.", "cache_salt": "tenant-a"},
        {"prompt": STORY + " cat.", "cache_salt": "tenant-b"},
        {"prompt": ""},
        {"prompt": "The sun was", "max_tokens": 5},
        {"prompt": "Tom had a toy", "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 7, "max_tokens": 30},
        {"prompt": "Tom had a toy", "temperature": 1.0, "seed": 11, "max_tokens": 30},
        {"prompt": "The dog ran", "ignore_eos": True, "max_tokens": 40},
        {"prompt": STORY + " dog.", "stop_token_ids": [stop_id], "max_tokens": 40},
    ]
    return lines


def as_python(line):
    """The same request as one LLM.generate prompt + its SamplingParams (the CLI's defaults: greedy, 24)."""
    params = SamplingParams(temperature=line.get("temperature", 0), top_p=line.get("top_p", 1.0),
                            top_k=line.get("top_k"), max_tokens=line.get("max_tokens", 24), seed=line.get("seed"),
                            stop_token_ids=line.get("stop_token_ids"), ignore_eos=line.get("ignore_eos", False))
    prompt = {k: line[k] for k in ("prompt", "prompt_token_ids", "cache_salt") if k in line}
    return prompt, params


def test_golden_greedy_continuation(stories):
    golden = json.loads(shared_path("models/stories260K/golden/once_upon_a_time.json").read_text())
    n = len(golden["completion_token_ids"])
    [out] = stories.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=n))
    assert out.prompt == "Once upon a time"
    assert out.prompt_token_ids == golden["prompt_token_ids"]
    assert out.outputs[0].token_ids == golden["completion_token_ids"]
    assert out.outputs[0].finish_reason == "length"
    assert ("Once upon a time" + out.outputs[0].text).startswith(golden["text"])


def test_same_tokens_as_the_cli(model_path, cli, tmp_path):
    llm = LLM(model_path, kv_cache_memory="64MiB")
    stop_id = llm.get_tokenizer().encode(".", add_special_tokens=False)[-1]
    lines = batch_lines(stop_id)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    subprocess.run([cli, "generate", "--model", model_path, "--input", str(tmp_path / "in.jsonl"), "--output",
                    str(tmp_path / "out.jsonl"), "--kv-cache-memory", "64MiB", "--temperature", "0",
                    "--max-tokens", "24", "--no-progress"], check=True, capture_output=True)
    expected = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    prompts, params = zip(*(as_python(l) for l in lines))
    outputs = llm.generate(list(prompts), list(params))
    assert len(outputs) == len(expected) == len(lines)
    for line, want, got in zip(lines, expected, outputs):
        assert got.outputs[0].token_ids == want["token_ids"], line
        assert got.outputs[0].text == want["text"], line
        assert got.outputs[0].finish_reason == want["finish_reason"], line
        assert len(got.prompt_token_ids) == want["prompt_tokens"], line
        assert got.num_cached_tokens == want["cached_tokens"], line
    eos = set(llm.get_tokenizer().eos_token_ids)
    assert outputs[-1].outputs[0].finish_reason == "stop" and outputs[-1].outputs[0].token_ids[-1] in eos | {stop_id}
    assert any(o.num_cached_tokens > 0 for o in outputs)


def test_reuse_on_equals_off(model_path):
    prompts = [STORY + e for e in ENDINGS] * 2
    on = LLM(model_path, kv_cache_memory="64MiB", block_size=4, max_num_batched_tokens=37)
    # (the other engine's KV memory made resident at start-up: the same results)
    off = LLM(model_path, kv_cache_memory="64MiB", enable_prefix_caching=False, kv_cache_prefault=True)
    got_on = on.generate(prompts, GREEDY)
    got_off = off.generate(prompts, GREEDY)
    assert [o.outputs[0].token_ids for o in got_on] == [o.outputs[0].token_ids for o in got_off]
    assert all(o.num_cached_tokens == 0 for o in got_off)
    assert sum(o.num_cached_tokens for o in got_on) > 0
    # A second call reuses what the first one cached; results do not change.
    again = on.generate(prompts[0], GREEDY)[0]
    assert again.num_cached_tokens > 0
    assert again.outputs[0].token_ids == got_on[0].outputs[0].token_ids
    m = on.metrics()
    assert m["prefix_hit_tokens"] > 0 and m["blocks_total"] > 0


def test_prompt_forms_and_input_order(stories):
    tok = stories.get_tokenizer()
    ids = tok.encode("Once upon a time")
    outs = stories.generate(["Once upon a time", ids, {"prompt": "Once upon a time"},
                             {"prompt_token_ids": ids, "cache_salt": "x"}, "The cat"], GREEDY)
    assert [o.prompt for o in outs] == ["Once upon a time", None, "Once upon a time", None, "The cat"]
    assert all(o.prompt_token_ids == ids for o in outs[:4])
    assert len({tuple(o.outputs[0].token_ids) for o in outs[:4]}) == 1
    assert outs[4].prompt_token_ids == tok.encode("The cat")
    # One prompt on its own (a str, a token list or a dict) gives a list of one output.
    assert len(stories.generate("The cat", GREEDY)) == 1
    assert stories.generate(ids, GREEDY)[0].outputs[0].token_ids == outs[0].outputs[0].token_ids
    assert stories.generate([], GREEDY) == []


def test_per_prompt_params(stories):
    prompts = ["The dog ran", "The dog ran", "The dog ran"]
    params = [SamplingParams(temperature=0, max_tokens=3), SamplingParams(temperature=0, max_tokens=9),
              SamplingParams(temperature=0.7, top_k=10, seed=3, max_tokens=9)]
    outs = stories.generate(prompts, params)
    assert [len(o.outputs[0].token_ids) for o in outs] == [3, 9, 9]
    assert outs[1].outputs[0].token_ids[:3] == outs[0].outputs[0].token_ids
    # A seeded request gets the same tokens alone or in a batch.
    alone = stories.generate("The dog ran", params[2])[0]
    assert alone.outputs[0].token_ids == outs[2].outputs[0].token_ids
    # Stop tokens end generation and stay in the output.
    stop = outs[1].outputs[0].token_ids[4]
    first = outs[1].outputs[0].token_ids.index(stop)
    out = stories.generate("The dog ran", SamplingParams(temperature=0, max_tokens=9, stop_token_ids=[stop]))[0]
    assert out.outputs[0].token_ids == outs[1].outputs[0].token_ids[: first + 1]
    assert out.outputs[0].finish_reason == "stop"


def test_ignore_eos():
    # tinystories-656k's greedy story ends with EOS; stories260K's runs on for hundreds of tokens.
    model_path = str(shared_path(MODELS["tinystories-656k"]))
    llm = LLM(model_path, kv_cache_memory="64MiB")
    tok = llm.get_tokenizer()
    prompt = STORY + " dog."
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=200))[0].outputs[0]
    if out.finish_reason != "stop":
        pytest.skip(f"the greedy story of {model_path} does not reach EOS within 200 tokens")
    assert out.token_ids[-1] in tok.eos_token_ids
    more = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=len(out.token_ids) + 5,
                                               ignore_eos=True))[0].outputs[0]
    assert more.token_ids[: len(out.token_ids)] == out.token_ids
    assert len(more.token_ids) == len(out.token_ids) + 5 and more.finish_reason == "length"


def test_cache_prefix(stories_path):
    llm = LLM(stories_path, kv_cache_memory="64MiB")
    prompts = [STORY + e for e in ENDINGS]
    reference = [o.outputs[0].token_ids for o in LLM(stories_path, kv_cache_memory="64MiB",
                                                     enable_prefix_caching=False).generate(prompts, GREEDY)]
    with llm.cache_prefix(STORY) as handle:
        assert isinstance(handle, kvshare.PrefixHandle)
        outs = llm.generate(prompts, GREEDY)
        assert all(o.num_cached_tokens >= 16 for o in outs)
    assert handle.released
    assert [o.outputs[0].token_ids for o in outs] == reference
    handle2 = llm.cache_prefix(llm.get_tokenizer().encode(STORY))
    llm.release_prefix(handle2)
    with pytest.raises(ValueError, match="no pinned prefix with handle"):  # was FileNotFoundError
        llm.release_prefix(handle2.handle)


def test_reset_prefix_cache(stories_path):
    llm = LLM(stories_path, kv_cache_memory="64MiB")
    prompts = [STORY + e for e in ENDINGS]
    first = llm.generate(prompts, GREEDY)
    assert llm.generate(prompts[:1], GREEDY)[0].num_cached_tokens >= 16
    assert llm.reset_prefix_cache() is True
    again = llm.generate(prompts[:1], GREEDY)[0]
    assert again.num_cached_tokens == 0
    assert again.outputs[0].token_ids == first[0].outputs[0].token_ids


def test_tokenizer(model_path):
    tok = LLM(model_path, kv_cache_memory="16MiB").get_tokenizer()
    ids = tok.encode(STORY)
    assert ids[0] == tok.bos_token_id
    assert tok.encode(STORY, add_special_tokens=False) == ids[1:]
    assert tok.decode(ids, skip_special_tokens=True).strip() == STORY
    assert len(tok) == tok.vocab_size > 0
    # Past the tokenizer's vocabulary, as Hugging Face's fast tokenizers and the engine's own text: nothing (a model
    # may sample such an id where its vocabulary is larger; decoding its output raised).
    assert tok.decode(ids + [tok.vocab_size]) == tok.decode(ids)
    with pytest.raises(ValueError, match="token ids are from 0"):
        tok.decode([-1])


def test_progress_bar_callback(stories):
    counts = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0

        def update(self, n=1):
            self.n += n

        def close(self):
            counts.append((self.total, self.n))

    stories.generate(["a", "b", "c"], GREEDY, use_tqdm=Bar)
    assert counts == [(3, 3)]


def test_sampling_params_fields():
    p = SamplingParams(temperature=0.5, top_p=0.9, top_k=None, max_tokens=7, seed=5, stop_token_ids=[2, 3],
                       ignore_eos=True)
    assert (p.temperature, p.top_k, p.max_tokens, p.seed, p.stop_token_ids, p.ignore_eos) == (0.5, -1, 7, 5, [2, 3], True)
    assert abs(p.top_p - 0.9) < 1e-6
    d = SamplingParams()
    assert (d.temperature, d.top_p, d.top_k, d.max_tokens, d.seed, d.stop_token_ids, d.ignore_eos) == \
        (1.0, 1.0, -1, 16, None, [], False)
    assert "max_tokens=7" in repr(p)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 1 << 40}, "max_tokens"),
    ({"seed": -1}, "seed"),
])
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_bad_engine_arguments(stories_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        LLM(str(tmp_path / "no-such-model"))
    with pytest.raises(ValueError, match="block_size"):
        LLM(stories_path, block_size=0, kv_cache_memory="16MiB")
    with pytest.raises(ValueError, match="max_num_seqs"):
        LLM(stories_path, max_num_seqs=0, kv_cache_memory="16MiB")
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(stories_path, max_model_len=1 << 20, kv_cache_memory="16MiB")
    with pytest.raises(ValueError, match="kv_cache_memory"):
        LLM(stories_path, kv_cache_memory="lots")
    for too_large in (0.97, "0.97"):  # a float is checked in Python, a string by the engine; both name the argument
        with pytest.raises(ValueError, match=r"kv_cache_memory.*\(0, 0\.95\]"):
            LLM(stories_path, kv_cache_memory=too_large)
    with pytest.raises(TypeError):
        LLM(stories_path, block_size="16")
    assert LLM(stories_path, seed=None, kv_cache_memory="16MiB").generate("Once", GREEDY)[0].outputs[0].token_ids


def test_errors_keep_what_a_file_wrote(stories_path, tmp_path):
    # A GGUF whose architecture holds a byte that is not UTF-8 and a NUL: the error was a UnicodeDecodeError (the
    # message decoded strictly); it is the ValueError, the byte replaced and the NUL kept.
    data = bytearray(pathlib.Path(stories_path).read_bytes())
    at = data.index(b"general.architecture") + len(b"general.architecture") + 12  # past the type and length
    assert data[at:at + 5] == b"llama"
    data[at:at + 5] = b"l\xff\x00ma"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        LLM(str(bad), kv_cache_memory="16MiB")
    assert "l\ufffd\x00ma" in str(e.value) and "not supported" in str(e.value)


def test_bad_requests(stories):
    vocab = stories.get_tokenizer().vocab_size
    with pytest.raises(ValueError, match="vocabulary"):
        stories.generate([[1, vocab + 5]], GREEDY)
    # One bad prompt fails the call before anything runs (the whole batch ran, then every result was dropped).
    steps = stories.metrics()["steps"]
    with pytest.raises(ValueError, match="prompt 1"):
        stories.generate(["fine", {"prompt_token_ids": [1, -3]}, "also fine"], GREEDY)
    assert stories.metrics()["steps"] == steps
    with pytest.raises(TypeError, match="cache_salt"):  # 0 was taken as no salt
        stories.generate({"prompt": "a", "cache_salt": 0}, GREEDY)
    with pytest.raises(ValueError, match="2 sampling_params for 3 prompts"):
        stories.generate(["a", "b", "c"], [GREEDY, GREEDY])
    with pytest.raises(ValueError, match="unsupported keys"):
        stories.generate({"prompt": "a", "images": []}, GREEDY)
    with pytest.raises(TypeError):
        stories.generate([3.5], GREEDY)
    short = LLM(shared_path("models/stories260K/stories260K.gguf"), kv_cache_memory="16MiB", max_model_len=8)
    with pytest.raises(ValueError, match="prompt 0"):
        short.generate(STORY, GREEDY)
    # The engine still works after a failed call.
    assert len(stories.generate("The cat", GREEDY)[0].outputs[0].token_ids) == 24
    # A request larger than the whole KV cache (32 tokens here: two blocks of 20 KiB of K/V and their bookkeeping)
    # is a bad request, not a busy engine.
    tiny_cache = LLM(shared_path("models/stories260K/stories260K.gguf"), kv_cache_memory="41KiB")
    with pytest.raises(ValueError, match="whole cache holds 32; lower max_tokens"):
        tiny_cache.generate("Once upon a time", SamplingParams(max_tokens=100, temperature=0))
    assert len(tiny_cache.generate("Once", SamplingParams(max_tokens=5, temperature=0))[0].outputs[0].token_ids) == 5


def test_a_call_from_inside_its_own_generate_is_refused(stories):
    # A progress callback (or a signal handler) that calls the same LLM waited for the engine's lock, held by its
    # own thread: the process hung for good.
    class Bar:
        def __init__(self, **kwargs):
            pass

        def update(self, n=1):
            stories.metrics()

        def close(self):
            pass

    with pytest.raises(RuntimeError, match="already running on this thread"):
        stories.generate(["Once", "The cat"], GREEDY, use_tqdm=Bar)
    assert len(stories.generate("The cat", GREEDY)[0].outputs[0].token_ids) == 24  # still usable


def test_gil_is_released_while_the_engine_runs(stories):
    """Another Python thread keeps running while generate is inside the engine."""
    import threading
    import time

    window = []

    def run():
        # Long enough (about 0.3 s on an idle AMD EPYC Zen 5) that a loaded machine still ticks the other thread
        # many times: in 30 ms, under a clean-root check beside two fuzzers, it ticked only 5 times.
        params = SamplingParams(temperature=0, max_tokens=96, ignore_eos=True)
        t0 = time.monotonic()
        stories.generate([STORY + e for e in ENDINGS] * 64, params)
        window.extend([t0, time.monotonic()])

    ticks = []
    thread = threading.Thread(target=run)
    thread.start()
    while thread.is_alive():
        ticks.append(time.monotonic())
        time.sleep(0.001)
    thread.join()
    t0, t1 = window
    inside = [t for t in ticks if t0 < t < t1]
    assert len(inside) > 5, f"{len(inside)} ticks of the other thread in {t1 - t0:.3f} s of generate"
