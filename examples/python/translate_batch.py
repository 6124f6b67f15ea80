#!/usr/bin/env python3
"""A batch of prompts with a common beginning through LLM.generate, with prefix reuse on and off.

    python3 examples/python/translate_batch.py [MODEL] [--block-size N] [--max-tokens N]

kvshare shares K/V in whole blocks (--block-size tokens, 16 by default), so a common beginning shorter than
a block is computed for each prompt; the script says how much of it could be and was reused. MODEL defaults
to .deps/models/gpt2-small, which `bash scripts/demo.sh` makes (random weights: the text is noise).
"""
import argparse
import os
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

PROMPTS = [
    "Translate to French: Hello, how are you?",
    "Translate to French: What is your name?",
    "Translate to French: The weather is nice.",
]


def timed(llm, params):
    t0 = time.perf_counter()
    outs = llm.generate(PROMPTS, params, use_tqdm=False)
    return outs, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / ".deps" / "models" / "gpt2-small"))
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    if not pathlib.Path(a.model).exists():
        sys.exit(f"no model at {a.model}: run `bash scripts/demo.sh` first (it makes one), or give a model path")
    params = SamplingParams(temperature=0, max_tokens=a.max_tokens)

    on = LLM(a.model, kv_cache_memory="256MiB", block_size=a.block_size)
    off = LLM(a.model, kv_cache_memory="256MiB", block_size=a.block_size, enable_prefix_caching=False)
    outs_on, t_on = timed(on, params)
    outs_off, t_off = timed(off, params)

    ids = [o.prompt_token_ids for o in outs_on]
    common = len(os.path.commonprefix(ids))
    print(f"{len(PROMPTS)} prompts; their first {common} tokens are the same; reuse works in whole blocks of "
          f"{a.block_size} tokens, so up to {common // a.block_size * a.block_size} per prompt can come from the "
          f"cache")
    for p, o in zip(PROMPTS, outs_on):
        print(f"  {p!r} -> {o.outputs[0].text!r} ({o.num_cached_tokens} of {len(o.prompt_token_ids)} prompt "
              f"tokens from the cache)")
    print(f"reuse on: {t_on:.3f} s, cached prompt tokens {[o.num_cached_tokens for o in outs_on]}")
    print(f"reuse off: {t_off:.3f} s, cached prompt tokens {[o.num_cached_tokens for o in outs_off]}")
    same = [x.outputs[0].token_ids for x in outs_on] == [y.outputs[0].token_ids for y in outs_off]
    print("outputs identical with reuse on and off:", "yes" if same else "NO")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
