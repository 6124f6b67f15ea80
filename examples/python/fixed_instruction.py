#!/usr/bin/env python3
"""One fixed instruction, several inputs: the Hugging Face `past_key_values` recipe, in kvshare.

First the explicit way, as past_key_values users think of it: compute the instruction's K/V once
(`llm.cache_prefix`), then run every input after it. Then the automatic way: just generate; kvshare finds the
shared instruction and computes it once by itself. Last, the same batch with prefix reuse off, for the time
it saves. The three give the same tokens.

    python3 examples/python/fixed_instruction.py [MODEL] [--max-tokens N]

MODEL defaults to .deps/models/gpt2-small, which `bash scripts/demo.sh` makes (random weights: the text is
noise, the timing and the reuse are real).
"""
import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
try:
    import kvshare
except ImportError:  # not installed: the module in the build tree
    sys.path.insert(0, str(ROOT / "build" / "python"))
    import kvshare
from kvshare import LLM, SamplingParams

INSTRUCTION = (
    "You are a support assistant for a small bookshop. Read the customer's message and answer in one short, "
    "friendly sentence. The shop opens at nine in the morning and closes at six in the evening, every day but "
    "Sunday. It sells new and second-hand books, maps, postcards and notebooks. Orders can be collected in the "
    "shop or sent by post; postage is free above thirty euros. Books can be returned within fourteen days with "
    "the receipt. The reading group meets on the first Thursday of each month at seven in the evening.\n"
)
INPUTS = [
    "Customer: Are you open on Sunday?",
    "Customer: How much is postage for a forty-euro order?",
    "Customer: Can I return a book I bought last week?",
    "Customer: When does the reading group meet?",
]


def run(title, llm, prompts, params):
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    cached = [o.num_cached_tokens for o in outs]
    print(f"{title}: {seconds:.2f} s, prompt tokens from the cache: {cached} of "
          f"{[len(o.prompt_token_ids) for o in outs]}")
    return outs, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / ".deps" / "models" / "gpt2-small"))
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    if not pathlib.Path(a.model).exists():
        sys.exit(f"no model at {a.model}: run `bash scripts/demo.sh` first (it makes one), or give a model path")
    params = SamplingParams(temperature=0, max_tokens=a.max_tokens)
    prompts = [INSTRUCTION + x for x in INPUTS]

    llm = LLM(a.model, kv_cache_memory="1GiB")
    print(f"{len(INPUTS)} inputs after one instruction of "
          f"{len(llm.get_tokenizer().encode(INSTRUCTION))} tokens, {a.max_tokens} tokens out each, greedy")

    # 1. Explicit: the instruction's K/V computed once and pinned, as with a hand-made past_key_values.
    t0 = time.perf_counter()
    with llm.cache_prefix(INSTRUCTION):
        prefix_seconds = time.perf_counter() - t0
        explicit, seconds = run("explicit prefix (cache_prefix), reuse on", llm, prompts, params)
    print(f"  (+ {prefix_seconds:.2f} s computing the instruction once in cache_prefix)")

    # 2. Automatic: a cold cache, then one plain generate; the first prompt computes the instruction.
    llm.reset_prefix_cache()
    automatic, t_on = run("automatic reuse, reuse on", llm, prompts, params)

    # 3. Reuse off: every prompt computes the instruction again.
    off = LLM(a.model, kv_cache_memory="1GiB", enable_prefix_caching=False)
    without, t_off = run("reuse off", off, prompts, params)

    print(f"reuse on: {t_on:.2f} s, reuse off: {t_off:.2f} s ({t_off / t_on:.1f}x)")
    same = all(x.outputs[0].token_ids == y.outputs[0].token_ids == z.outputs[0].token_ids
               for x, y, z in zip(explicit, automatic, without))
    print("outputs identical with reuse on and off:", "yes" if same else "NO")
    for x, o in zip(INPUTS, automatic):
        print(f"  {x!r} -> {o.outputs[0].text!r}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
