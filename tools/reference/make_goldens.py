#!/usr/bin/python3
"""Write a JSON golden file from the reference implementation.

  /usr/bin/python3 tools/reference/make_goldens.py --model DIR \
      --prompt-ids 1,2,3 --steps 64 --out FILE [--emulate-bf16-matmul]

Golden content (all floats are float32 values written in the shortest decimal
form that round-trips to the same float32):
  model, architecture, dtype (stored weight dtypes), compute, emulate_bf16_matmul,
  vocab_size, prompt_token_ids,
  logits_prefix_len   number of leading vocab ids stored per logits row
                      (= vocab_size if vocab_size <= 4096, else 512),
  logits_last         logits of the last prompt position (first logits_prefix_len ids),
  logits_rows         {"<position>": logits} for first / middle / last prompt positions,
  argmax_last, top5_last, top20_last   ([id, logit] pairs, descending),
  argmax_rows, top20_rows              the same per stored row,
  greedy_token_ids    `steps` greedy tokens continuing the prompt (argmax, lowest
                      id on ties, no stop at EOS), each step recomputed from scratch,
  greedy_min_margin   smallest top1-top2 logit gap met during greedy decoding
                      (a small value warns that a tiny numeric difference could
                      flip a token), and its step.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

FULL_VOCAB_LIMIT = 4096
PREFIX_LEN = 512


def f32(x):
    """Shortest decimal string that parses back to the same float32."""
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite logit {v}")
    return str(v)


def topk_pairs(row, k):
    vals, idx = torch.topk(row, k)  # ties: torch returns them in some order; sort stably
    pairs = sorted(zip(idx.tolist(), vals.tolist()), key=lambda p: (-p[1], p[0]))
    return [[i, v] for i, v in pairs]


def default_rows(n):
    return sorted({0, (n - 1) // 2, n - 1})


def make_golden(model, name, prompt_ids, steps, emulate_bf16=False, rows=None):
    logits = model.logits(prompt_ids, emulate_bf16=emulate_bf16)
    vocab = logits.shape[1]
    prefix = vocab if vocab <= FULL_VOCAB_LIMIT else PREFIX_LEN
    rows = default_rows(len(prompt_ids)) if rows is None else rows
    greedy, margins = reference.greedy(model, prompt_ids, steps, emulate_bf16=emulate_bf16)
    last = logits[-1]
    min_step = int(np.argmin(margins)) if margins else None
    return {
        "model": name,
        "architecture": model.arch,
        "dtype": "+".join(model.stored_dtypes),
        "compute": "float32" + (" (linear-layer inputs rounded to bf16)" if emulate_bf16 else ""),
        "emulate_bf16_matmul": bool(emulate_bf16),
        "vocab_size": vocab,
        "prompt_token_ids": list(prompt_ids),
        "logits_prefix_len": prefix,
        "logits_last": last[:prefix].tolist(),
        "logits_rows": {str(r): logits[r][:prefix].tolist() for r in rows},
        "argmax_last": int(torch.argmax(last)),
        "top5_last": topk_pairs(last, min(5, vocab)),
        "top20_last": topk_pairs(last, min(20, vocab)),
        "argmax_rows": {str(r): int(torch.argmax(logits[r])) for r in rows},
        "top20_rows": {str(r): topk_pairs(logits[r], min(20, vocab)) for r in rows},
        "greedy_token_ids": greedy,
        "greedy_min_margin": margins[min_step] if margins else None,
        "greedy_min_margin_step": min_step,
        "generator": "tools/reference/make_goldens.py (independent HF-semantics float32 reference)",
    }


def dumps(golden):
    """JSON with one key per line and every list on a single line; floats as
    shortest float32 round-trip strings."""

    def enc(v):
        if isinstance(v, float):
            return f32(v)
        if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(json.dumps(k) + ": " + enc(x) for k, x in v.items()) + "}"
        raise TypeError(type(v))

    lines = []
    for k, v in golden.items():
        if isinstance(v, dict) and v and all(isinstance(x, list) for x in v.values()):
            inner = ",\n".join(f"    {json.dumps(kk)}: {enc(x)}" for kk, x in v.items())
            lines.append(f"  {json.dumps(k)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(k)}: {enc(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model folder (config.json + safetensors)")
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--steps", type=int, default=64, help="greedy tokens to generate")
    ap.add_argument("--out", required=True, help="output JSON file")
    ap.add_argument("--name", help="model name in the golden (default: folder name)")
    ap.add_argument("--rows", help="comma-separated prompt positions to store (default: first,middle,last)")
    ap.add_argument("--emulate-bf16-matmul", action="store_true",
                    help="round linear-layer inputs to bf16 for weights stored as BF16")
    args = ap.parse_args()

    prompt = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    if not prompt:
        ap.error("empty --prompt-ids")
    model = reference.load_model(args.model)
    if args.emulate_bf16_matmul and "BF16" not in model.stored_dtypes:
        print("warning: --emulate-bf16-matmul given but no weight is stored as BF16 (no effect)",
              file=sys.stderr)
    rows = [int(x) for x in args.rows.split(",")] if args.rows else None
    if rows and any(r < 0 or r >= len(prompt) for r in rows):
        ap.error("--rows must be positions inside the prompt")
    name = args.name or os.path.basename(os.path.normpath(args.model))
    golden = make_golden(model, name, prompt, args.steps, args.emulate_bf16_matmul, rows)
    text = dumps(golden)
    json.loads(text)  # sanity: valid JSON
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(text)} bytes); greedy: {golden['greedy_token_ids']}; "
          f"min margin {golden['greedy_min_margin']:.4g} at step {golden['greedy_min_margin_step']}")


if __name__ == "__main__":
    main()
