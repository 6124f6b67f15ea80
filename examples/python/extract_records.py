#!/usr/bin/env python3
"""An extraction job: one instruction, many texts, and a JSON schema every answer must follow.

The instruction is computed once and reused for every text (prefix reuse); each answer is drawn token by token
among the tokens that keep it JSON the schema accepts, so every answer that stops parses, has the schema's keys in
its order, and holds only values the schema allows (structured outputs, as OpenAI's response_format json_schema).
The same batch runs with reuse on and off, timed.

    python3 examples/python/extract_records.py [MODEL] [--max-tokens N] [--block-size N]

MODEL defaults to .deps/models/gpt2-small, which `bash scripts/demo.sh` makes (random weights: the values are
noise, but the JSON, the schema's shape, the reuse and the timing are real).
"""
import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
try:
    import kvshare
except ImportError:  # not installed: the module in the build tree
    sys.path.insert(0, str(ROOT / "build" / "python"))
    import kvshare
from kvshare import LLM, SamplingParams, StructuredOutputsParams

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "pets": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
    },
    "required": ["name", "mood"],
    "additionalProperties": False,
}
INSTRUCTION = "Read the text; write the person as JSON: their name, their mood, their pets.\n"
TEXTS = [
    "Lily is five. She has a dog.\n",
    "Tom is nine. He cried.\n",
    "Old Joe has a fish.\n",
    "Sue is happy with her bird.\n",
]


def run(title, llm, prompts, params):
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    print(f"{title}: {seconds:.2f} s, prompt tokens from the cache: {[o.num_cached_tokens for o in outs]}")
    return outs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / ".deps" / "models" / "gpt2-small"))
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=16, help="tokens per KV block; reuse is by whole blocks")
    a = ap.parse_args()
    if not pathlib.Path(a.model).exists():
        sys.exit(f"no model at {a.model}: run `bash scripts/demo.sh` first (it makes one), or give a model path")
    params = SamplingParams(temperature=0, max_tokens=a.max_tokens,
                            structured_outputs=StructuredOutputsParams(json=SCHEMA, disable_any_whitespace=True))
    prompts = [INSTRUCTION + t for t in TEXTS]
    on = run("reuse on", LLM(a.model, block_size=a.block_size), prompts, params)
    off = run("reuse off", LLM(a.model, block_size=a.block_size, enable_prefix_caching=False), prompts, params)
    print("outputs identical with reuse on and off:",
          "yes" if [o.outputs[0].token_ids for o in on] == [o.outputs[0].token_ids for o in off] else "NO")
    for out in on:
        c = out.outputs[0]
        if c.finish_reason != "stop":  # cut short by max_tokens: give it more room
            print(f"cut short ({c.finish_reason}): {c.text!r}")
            continue
        record = json.loads(c.text)
        print("record:", json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
