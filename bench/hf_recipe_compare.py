#!/usr/bin/env python3
"""kvshare.LLM against the recipe it replaces: Hugging Face's hand-made `past_key_values` prefix cache.

The recipe (transformers' docs, "re-use a prompt cache"): run the shared prefix once, keep its
past_key_values, and for each prompt deep-copy them and generate() from there, one prompt at a time. Here the
model is a plain PyTorch GPT-2 written from transformers' GPT2LMHeadModel (modeling_gpt2.py, eager
attention, Conv1D weights, full logits as GPT2LMHeadModel computes them) because transformers cannot be
installed on these machines; Debian's python3-torch (1.13) runs it. kvshare runs the same prompts through
LLM.generate, which finds and reuses the shared prefixes by itself.

Workload: G groups x P prompts; each prompt is a group's shared prefix (S tokens) plus its own question
(Q tokens); O tokens out, greedy, EOS ignored (both sides produce exactly O tokens). Token ids are drawn from a
seeded generator, so both sides see the same prompts.

    /usr/bin/python3 bench/hf_recipe_compare.py --check            # same greedy tokens on a few prompts?
    /work/quiet.sh /usr/bin/python3 bench/hf_recipe_compare.py --run recipe
    /work/quiet.sh /usr/bin/python3 bench/hf_recipe_compare.py --run kvshare
    /work/quiet.sh /usr/bin/python3 bench/hf_recipe_compare.py --run batched   # plain generate(), no prefix cache

Each --run prints one JSON line (wall seconds of the generation, model load excluded). Needs python3-torch,
python3-numpy and libopenblas0-pthread (apt; without it Debian's torch multiplies with the reference BLAS),
and the kvshare module (PYTHONPATH=build/python, or pip install).
"""
import argparse
import copy
import json
import math
import os
import pathlib
import random
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
THREADS = 2
# Debian's torch calls the system BLAS (libblas.so.3): install libopenblas0-pthread, or it is the reference BLAS,
# some 20x slower. OpenBLAS takes its thread count from the environment, torch's own kernels from set_num_threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def import_torch():
    """torch with THREADS threads. Its OpenMP threads must not spin while OpenBLAS's threads run on the same two
    cores (OMP_WAIT_POLICY=PASSIVE: a decode step went from 0.32 to 0.09 s here); set before torch loads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    torch.set_num_threads(THREADS)
    return torch


def workload(vocab, groups, per_group, shared, question, seed, eos):
    """[(group, token ids)] in group order: each group's prefix + each prompt's own question."""
    rng = random.Random(seed)

    def draw(n):
        out = []
        while len(out) < n:
            t = rng.randrange(vocab)
            if t != eos:
                out.append(t)
        return out

    prompts = []
    for g in range(groups):
        prefix = draw(shared)
        for _ in range(per_group):
            prompts.append((g, prefix + draw(question)))
    return prompts


# ---------------------------------------------------------------------------------------------------------
# GPT-2 as transformers' GPT2LMHeadModel computes it (eval mode: no dropout), batched, with past_key_values.
# ---------------------------------------------------------------------------------------------------------


class GPT2:
    def __init__(self, model_dir):
        import torch
        sys.path.insert(0, str(ROOT / "tools" / "reference"))
        from reference import load_model_tensors  # the project's safetensors reader (numpy)

        self.torch = torch
        self.model_dir = str(model_dir)
        cfg = json.loads((pathlib.Path(model_dir) / "config.json").read_text())
        self.d, self.n_head, self.n_layer = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
        self.hd = self.d // self.n_head
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.eos = cfg.get("eos_token_id", 50256)
        raw = load_model_tensors(model_dir)
        t = {k[len("transformer."):] if k.startswith("transformer.") else k: torch.from_numpy(v[0])
             for k, v in raw.items()}
        self.wte, self.wpe = t["wte.weight"], t["wpe.weight"]
        self.vocab = self.wte.shape[0]
        self.layers = [{name: t[f"h.{i}.{name}"] for name in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
            "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
            "mlp.c_proj.weight", "mlp.c_proj.bias")} for i in range(self.n_layer)]
        self.ln_f = (t["ln_f.weight"], t["ln_f.bias"])
        self.scale = torch.full([], self.hd ** 0.5, dtype=torch.float32)
        n_pos = cfg["n_positions"]
        self.causal = torch.ones(n_pos, n_pos, dtype=torch.bool).tril()  # GPT2Attention's "bias" buffer

    def conv1d(self, x, w, b):
        # transformers' Conv1D: weight [in, out]; addmm(bias, x, weight)
        shape = x.shape[:-1] + (w.shape[1],)
        return self.torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(shape)

    def ln(self, x, w, b):
        return self.torch.nn.functional.layer_norm(x, (self.d,), w, b, self.eps)

    @staticmethod
    def gelu_new(x):
        return 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3.0))).tanh())

    def split_heads(self, x):  # [B, T, d] -> [B, H, T, hd]
        return x.view(x.shape[0], x.shape[1], self.n_head, self.hd).permute(0, 2, 1, 3)

    def attention(self, q, k, v):
        # GPT2Attention._attn (eager): scores / sqrt(hd), causal mask with finfo.min, softmax, @ v
        torch = self.torch
        w = torch.matmul(q, k.transpose(-1, -2)) / self.scale
        tq, tk = q.shape[-2], k.shape[-2]
        causal = self.causal[tk - tq:tk, :tk]
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v)

    def forward(self, input_ids, past_key_values=None):
        """input_ids [B, T] (the tokens after the past); returns logits [B, T, vocab] and the new past
        (per layer (k, v), each [B, H, past + T, hd])."""
        torch = self.torch
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[-2]
        T = input_ids.shape[1]
        x = self.wte[input_ids] + self.wpe[torch.arange(past_len, past_len + T)]
        presents = []
        for i, L in enumerate(self.layers):
            h = self.ln(x, L["ln_1.weight"], L["ln_1.bias"])
            q, k, v = self.conv1d(h, L["attn.c_attn.weight"], L["attn.c_attn.bias"]).split(self.d, dim=2)
            q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
            if past_key_values is not None:
                k = torch.cat((past_key_values[i][0], k), dim=-2)
                v = torch.cat((past_key_values[i][1], v), dim=-2)
            presents.append((k, v))
            a = self.attention(q, k, v).permute(0, 2, 1, 3).reshape(x.shape)
            x = x + self.conv1d(a, L["attn.c_proj.weight"], L["attn.c_proj.bias"])
            h = self.ln(x, L["ln_2.weight"], L["ln_2.bias"])
            h = self.gelu_new(self.conv1d(h, L["mlp.c_fc.weight"], L["mlp.c_fc.bias"]))
            x = x + self.conv1d(h, L["mlp.c_proj.weight"], L["mlp.c_proj.bias"])
        x = self.ln(x, *self.ln_f)
        return torch.matmul(x, self.wte.t()), tuple(presents)  # lm_head tied to wte, over every position

    def greedy(self, input_ids, new_tokens, past_key_values=None):
        """generate(do_sample=False) for exactly new_tokens tokens: the uncached tokens once, then one token
        per step with the growing past. input_ids [B, T] holds the whole prompt (past included)."""
        torch = self.torch
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[-2]
        step_input, out = input_ids[:, past_len:], []
        for _ in range(new_tokens):
            logits, past_key_values = self.forward(step_input, past_key_values)
            step_input = logits[:, -1, :].argmax(dim=-1, keepdim=True)
            out.append(step_input)
        return torch.cat(out, dim=1).tolist()


def run_recipe(model, prompts, shared, out_len):
    """The past_key_values recipe: each group's prefix once, then per prompt a deep copy of its cache and
    generate() from there."""
    torch = model.torch
    results, cache, cached_group = [], None, None
    for g, ids in prompts:
        if g != cached_group:
            _, cache = model.forward(torch.tensor([ids[:shared]]))
            cached_group = g
        past = copy.deepcopy(cache)
        results.append(model.greedy(torch.tensor([ids]), out_len, past)[0])
    return results


def run_batched(model, prompts, out_len):
    """Plain batched generate(): every prompt whole, no prefix cache (the prompts have equal lengths)."""
    return model.greedy(model.torch.tensor([ids for _, ids in prompts]), out_len)


def compare_logits(model, prompts, shared):
    """Max |difference| between the logits kvshare's CLI dumps for each prompt's first generated token and the
    PyTorch model's (and the largest |logit|), or None when build/kvshare is absent."""
    import subprocess
    import tempfile
    import numpy as np
    cli = ROOT / "build" / "kvshare"
    if not cli.exists():
        print(f"(no {cli}: logits not compared)")
        return None
    torch = model.torch
    with tempfile.TemporaryDirectory() as tmp:
        lines = "".join(json.dumps({"prompt_token_ids": ids}) + "\n" for _, ids in prompts)
        pathlib.Path(tmp, "in.jsonl").write_text(lines)
        subprocess.run([str(cli), "generate", "--model", model.model_dir, "--input", f"{tmp}/in.jsonl",
                        "--output", f"{tmp}/out.jsonl", "--max-tokens", "1", "--temperature", "0", "--ignore-eos",
                        "--dump-logits", f"{tmp}/logits.bin"], check=True, capture_output=True)
        got = np.fromfile(f"{tmp}/logits.bin", dtype="<f4").reshape(len(prompts), model.vocab)
    diff = big = 0.0
    for row, (_, ids) in zip(got, prompts):
        logits, _ = model.forward(torch.tensor([ids]))
        want = logits[0, -1].numpy()
        diff, big = max(diff, float(np.abs(want - row).max())), max(big, float(np.abs(want).max()))
    return diff, big


def kvshare_llm(model_dir):
    try:
        import kvshare
    except ImportError:
        sys.path.insert(0, str(ROOT / "build" / "python"))
        import kvshare
    return kvshare, kvshare.LLM(model_dir, kv_cache_memory="2GiB")


def run_kvshare(kvshare, llm, prompts, out_len):
    params = kvshare.SamplingParams(temperature=0, max_tokens=out_len, ignore_eos=True)
    outs = llm.generate([ids for _, ids in prompts], params, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs], sum(o.num_cached_tokens for o in outs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="/work/models/gpt2-small", help="a GPT-2 Hugging Face folder (safetensors)")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--prompts-per-group", type=int, default=8)
    ap.add_argument("--shared", type=int, default=512, help="shared prefix tokens per group")
    ap.add_argument("--question", type=int, default=64, help="each prompt's own tokens")
    ap.add_argument("--out", type=int, default=32, help="generated tokens per prompt")
    ap.add_argument("--seed", type=int, default=1)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", choices=["recipe", "batched", "kvshare"], help="time one side")
    what.add_argument("--check", action="store_true", help="compare the greedy tokens of both sides")
    ap.add_argument("--check-prompts", type=int, default=3, help="prompts --check compares (one per group)")
    a = ap.parse_args()

    cfg = json.loads((pathlib.Path(a.model) / "config.json").read_text())
    prompts = workload(cfg["vocab_size"], a.groups, a.prompts_per_group, a.shared, a.question, a.seed,
                       cfg.get("eos_token_id", 50256))
    shape = dict(groups=a.groups, prompts_per_group=a.prompts_per_group, shared=a.shared, question=a.question,
                 out=a.out)

    if a.check:
        torch = import_torch()
        picked = [prompts[g * a.prompts_per_group + g % a.prompts_per_group] for g in range(a.groups)]
        picked = picked[:a.check_prompts]
        with torch.inference_mode():
            ref = run_recipe(GPT2(a.model), picked, a.shared, a.out)
            logit_diff = compare_logits(GPT2(a.model), picked, a.shared)
        kvshare, llm = kvshare_llm(a.model)
        got, _ = run_kvshare(kvshare, llm, picked, a.out)
        same = [r == k for r, k in zip(ref, got)]
        if logit_diff is not None:
            print(f"logits of the first generated token, kvshare CLI (--dump-logits) vs PyTorch: max |diff| "
                  f"{logit_diff[0]:.2e}, max |logit| {logit_diff[1]:.1f}")
        for i, (r, k) in enumerate(zip(ref, got)):
            first = next((j for j, (x, y) in enumerate(zip(r, k)) if x != y), None)
            print(f"prompt {i}: {'same' if first is None else f'differs from token {first}'} "
                  f"({len(r)} tokens; pytorch {r[:6]}..., kvshare {k[:6]}...)")
        print(json.dumps({"check": "same greedy tokens" if all(same) else "DIFFERENT", **shape}))
        sys.exit(0 if all(same) else 1)

    if a.run == "kvshare":
        t0 = time.perf_counter()
        kvshare, llm = kvshare_llm(a.model)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens, cached = run_kvshare(kvshare, llm, prompts, a.out)
        seconds = time.perf_counter() - t0
        extra = {"cached_prompt_tokens": cached, "omp_num_threads": os.environ["OMP_NUM_THREADS"]}
    else:
        torch = import_torch()
        t0 = time.perf_counter()
        model = GPT2(a.model)
        load = time.perf_counter() - t0
        with torch.inference_mode():
            t0 = time.perf_counter()
            tokens = (run_recipe(model, prompts, a.shared, a.out) if a.run == "recipe"
                      else run_batched(model, prompts, a.out))
            seconds = time.perf_counter() - t0
        extra = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"], "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]}
    assert all(len(t) == a.out for t in tokens)
    digest = hash(tuple(tuple(t) for t in tokens)) & 0xFFFFFFFF
    print(json.dumps({"run": a.run, "seconds": round(seconds, 2), "load_seconds": round(load, 2),
                      "prompts": len(prompts), "tokens_digest": f"{digest:08x}", **shape, **extra}))


if __name__ == "__main__":
    main()
