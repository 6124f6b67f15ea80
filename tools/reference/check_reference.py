#!/usr/bin/python3
"""Self-checks of the reference implementation.  Run:

  /usr/bin/python3 tools/reference/check_reference.py [--shared /work/shared/models]

Checks (each prints PASS/FAIL; exit status 1 on any failure):
  1. bf16 rounding = torch's own float32->bfloat16 conversion (round to nearest even).
  2. safetensors reader: F32/F16/BF16 tensors, single file and sharded index.
  3. GPT-2 vs an independent composition of torch.nn.TransformerEncoderLayer
     (pre-LN, torch's own multi-head attention); names with and without
     'transformer.'; KV-cache decoding = full recompute.
  4. RoPE: llama2.c interleaved rotation == HF rotate_half after the q/k row
     permutation; llama3 inv_freq == float64 closed form.
  5. Qwen2: q/k/v biases loaded and used; --emulate-bf16-matmul rounds linear inputs.
  6. stories260K.bin (llama2.c checkpoint, converted with the permutation):
     greedy continuation of [1, 403, 407, 261, 378] == the 60 completion ids of
     stories260K/golden/once_upon_a_time.json (and, as a negative control, does
     not match without the permutation).
  7. tinystories-656k (HF folder): BOS + BPE("Once upon a time"), 64 greedy
     tokens decoded to text; KV-cache decoding gives the same tokens.
"""

import argparse
import json
import math
import os
import struct
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c  # noqa: E402
import reference as R  # noqa: E402
from bpe_tokenizer import BPETokenizer  # noqa: E402

FAILED = []


def report(name, ok, detail=""):
    print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""))
    if not ok:
        FAILED.append(name)


# ---------------------------------------------------------------------------
# helpers: write HF folders for synthetic models
# ---------------------------------------------------------------------------


def write_safetensors(path, tensors):
    """tensors: {name: (float32 array, 'F32'|'F16'|'BF16')}."""
    header, blobs, off = {}, [], 0
    for name, (arr, dt) in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if dt == "F32":
            raw = arr.astype("<f4").tobytes()
        elif dt == "F16":
            raw = arr.astype("<f2").tobytes()
        elif dt == "BF16":
            t = torch.from_numpy(arr.copy()).to(torch.bfloat16)
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raise ValueError(dt)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_hf_folder(folder, cfg, tensors, dtype="F32", shards=1):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = list(tensors)
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"),
                          {n: (tensors[n], dtype) for n in names})
        return
    weight_map = {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        write_safetensors(os.path.join(folder, fn), {n: (tensors[n], dtype) for n in part})
        weight_map.update({n: fn for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def rand(gen, *shape, scale=0.2):
    return (torch.randn(*shape, generator=gen) * scale).numpy()


def random_gpt2(seed=0, d=32, n_layer=2, n_head=4, vocab=97, n_pos=64, prefix="transformer."):
    g = torch.Generator().manual_seed(seed)
    cfg = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_embd=d, n_layer=n_layer,
               n_head=n_head, n_positions=n_pos, vocab_size=vocab, layer_norm_epsilon=1e-5,
               activation_function="gelu_new")
    t = {prefix + "wte.weight": rand(g, vocab, d, scale=1.0), prefix + "wpe.weight": rand(g, n_pos, d)}
    for i in range(n_layer):
        p = f"{prefix}h.{i}."
        t[p + "ln_1.weight"] = 1 + rand(g, d)
        t[p + "ln_1.bias"] = rand(g, d)
        t[p + "attn.c_attn.weight"] = rand(g, d, 3 * d)  # Conv1D: [in, out]
        t[p + "attn.c_attn.bias"] = rand(g, 3 * d)
        t[p + "attn.c_proj.weight"] = rand(g, d, d)
        t[p + "attn.c_proj.bias"] = rand(g, d)
        t[p + "ln_2.weight"] = 1 + rand(g, d)
        t[p + "ln_2.bias"] = rand(g, d)
        t[p + "mlp.c_fc.weight"] = rand(g, d, 4 * d)
        t[p + "mlp.c_fc.bias"] = rand(g, 4 * d)
        t[p + "mlp.c_proj.weight"] = rand(g, 4 * d, d)
        t[p + "mlp.c_proj.bias"] = rand(g, d)
    t[prefix + "ln_f.weight"] = 1 + rand(g, d)
    t[prefix + "ln_f.bias"] = rand(g, d)
    return cfg, t


def random_llama(seed=0, d=32, n_layer=2, n_head=4, n_kv=2, ffn=48, vocab=101, qwen2=False, tied=False,
                 rope_scaling=None):
    g = torch.Generator().manual_seed(seed)
    hd = d // n_head
    cfg = dict(model_type="qwen2" if qwen2 else "llama", hidden_size=d, num_hidden_layers=n_layer,
               num_attention_heads=n_head, num_key_value_heads=n_kv, intermediate_size=ffn,
               vocab_size=vocab, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=rope_scaling,
               tie_word_embeddings=tied, attention_bias=False, max_position_embeddings=256)
    t = {"model.embed_tokens.weight": rand(g, vocab, d, scale=1.0), "model.norm.weight": 1 + rand(g, d)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rand(g, d)
        t[p + "self_attn.q_proj.weight"] = rand(g, n_head * hd, d)
        t[p + "self_attn.k_proj.weight"] = rand(g, n_kv * hd, d)
        t[p + "self_attn.v_proj.weight"] = rand(g, n_kv * hd, d)
        t[p + "self_attn.o_proj.weight"] = rand(g, d, n_head * hd)
        if qwen2:
            t[p + "self_attn.q_proj.bias"] = rand(g, n_head * hd)
            t[p + "self_attn.k_proj.bias"] = rand(g, n_kv * hd)
            t[p + "self_attn.v_proj.bias"] = rand(g, n_kv * hd)
        t[p + "post_attention_layernorm.weight"] = 1 + rand(g, d)
        t[p + "mlp.gate_proj.weight"] = rand(g, ffn, d)
        t[p + "mlp.up_proj.weight"] = rand(g, ffn, d)
        t[p + "mlp.down_proj.weight"] = rand(g, d, ffn)
    if not tied:
        t["lm_head.weight"] = rand(g, vocab, d)
    return cfg, t


def max_abs(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------


def check_bf16_rounding():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([
        torch.randn(100000, generator=g) * 10,
        torch.randn(1000, generator=g) * 1e-30,
        torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e-45]),
    ])
    # exact ties: bf16 value + half an ulp, both parities of the kept mantissa
    base = torch.randn(2000, generator=g).to(torch.bfloat16).to(torch.float32)
    tie_bits = base.view(torch.int32) | 0x8000
    x = torch.cat([x, tie_bits.view(torch.float32)])
    ours = R.round_to_bf16(x)
    theirs = x.to(torch.bfloat16).to(torch.float32)
    same = torch.equal(ours.view(torch.int32), theirs.view(torch.int32))
    nan_ok = bool(torch.isnan(R.round_to_bf16(torch.tensor([float("nan")]))).all())
    report("bf16 round-to-nearest-even == torch.bfloat16 conversion", same and nan_ok)


def check_safetensors(tmp):
    cfg, t = random_llama(seed=3)
    ok = True
    for dt, shards in (("F32", 1), ("F16", 1), ("BF16", 1), ("BF16", 3), ("F32", 2)):
        folder = os.path.join(tmp, f"st_{dt}_{shards}")
        write_hf_folder(folder, cfg, t, dtype=dt, shards=shards)
        loaded = R.load_model_tensors(folder)
        for name, arr in t.items():
            got, gdt = loaded[name]
            if dt == "F32":
                want = arr
            elif dt == "F16":
                want = arr.astype(np.float16).astype(np.float32)
            else:
                want = torch.from_numpy(arr.copy()).to(torch.bfloat16).to(torch.float32).numpy()
            if gdt != dt or got.dtype != np.float32 or not np.array_equal(got, want):
                ok = False
        ok = ok and set(loaded) == set(t)
    report("safetensors reader (F32, F16, BF16; single file and sharded index)", ok)


def gpt2_via_torch_nn(cfg, t, ids, prefix="transformer."):
    """GPT-2 forward built from torch.nn.TransformerEncoderLayer (norm_first)."""
    d, n_head, n_layer = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    T = len(ids)

    def P(name):
        return torch.from_numpy(np.ascontiguousarray(t[prefix + name], dtype=np.float32))

    x = P("wte.weight")[torch.tensor(ids)] + P("wpe.weight")[:T]
    x = x[None]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(n_layer):
        layer = torch.nn.TransformerEncoderLayer(d, n_head, dim_feedforward=4 * d, dropout=0.0,
                                                 activation=R.gelu_new, layer_norm_eps=cfg["layer_norm_epsilon"],
                                                 batch_first=True, norm_first=True)
        layer.eval()
        p = f"h.{i}."
        sd = {
            "self_attn.in_proj_weight": P(p + "attn.c_attn.weight").t(),
            "self_attn.in_proj_bias": P(p + "attn.c_attn.bias"),
            "self_attn.out_proj.weight": P(p + "attn.c_proj.weight").t(),
            "self_attn.out_proj.bias": P(p + "attn.c_proj.bias"),
            "linear1.weight": P(p + "mlp.c_fc.weight").t(),
            "linear1.bias": P(p + "mlp.c_fc.bias"),
            "linear2.weight": P(p + "mlp.c_proj.weight").t(),
            "linear2.bias": P(p + "mlp.c_proj.bias"),
            "norm1.weight": P(p + "ln_1.weight"), "norm1.bias": P(p + "ln_1.bias"),
            "norm2.weight": P(p + "ln_2.weight"), "norm2.bias": P(p + "ln_2.bias"),
        }
        layer.load_state_dict({k: v.contiguous() for k, v in sd.items()})
        x = layer(x, src_mask=mask)
    x = torch.nn.functional.layer_norm(x[0], (d,), P("ln_f.weight"), P("ln_f.bias"), cfg["layer_norm_epsilon"])
    return x @ P("wte.weight").t()


def check_gpt2(tmp):
    ids = [5, 17, 3, 96, 42, 0, 8, 8, 61, 23, 11]
    for prefix in ("transformer.", ""):
        cfg, t = random_gpt2(seed=7, prefix=prefix)
        folder = os.path.join(tmp, f"gpt2_{prefix or 'noprefix'}")
        write_hf_folder(folder, cfg, t)
        model = R.load_model(folder)
        ours = model.logits(ids)
        other = gpt2_via_torch_nn(cfg, t, ids, prefix=prefix)
        err = max_abs(ours, other)
        report(f"GPT-2 ({prefix or 'no prefix'}) == torch.nn.TransformerEncoderLayer composition",
               err < 1e-4, f"max |diff| {err:.2e}")
    cache = model.new_cache()
    inc = torch.cat([model.logits(ids[:4], cache=cache)] + [model.logits([i], cache=cache) for i in ids[4:]])
    err = max_abs(inc, ours)
    report("GPT-2 KV-cache incremental logits == full recompute", err < 1e-5, f"max |diff| {err:.2e}")
    a, _ = R.greedy(model, ids, 20)
    b, _ = R.greedy(model, ids, 20, kv_cache=True)
    report("GPT-2 greedy: KV cache == recompute", a == b)


def check_rope():
    g = torch.Generator().manual_seed(5)
    n_heads, hs, theta = 3, 16, 10000.0
    x = torch.randn(7, n_heads * hs, generator=g, dtype=torch.float64)
    pos = torch.arange(7, dtype=torch.float64)
    # llama2.c: pairs (2i, 2i+1), freq = theta^(-2i/hs)
    inter = x.clone().view(7, n_heads, hs // 2, 2)
    freq = theta ** (-(torch.arange(0, hs, 2, dtype=torch.float64)) / hs)
    ang = pos[:, None, None] * freq[None, None, :]
    v0, v1 = inter[..., 0], inter[..., 1]
    inter = torch.stack([v0 * ang.cos() - v1 * ang.sin(), v0 * ang.sin() + v1 * ang.cos()], -1).reshape(7, -1)
    # HF: permute, then rotate_half
    perm = torch.from_numpy(llama2c.interleaved_to_half_perm(n_heads, hs))
    xp = x[:, perm].view(7, n_heads, hs)
    emb = torch.cat([ang, ang], -1)
    hf = (xp * emb.cos() + R.rotate_half(xp) * emb.sin()).reshape(7, -1)
    err = max_abs(hf, inter[:, perm])
    report("RoPE: interleaved (llama2.c) == permuted rotate_half (HF)", err < 1e-12, f"max |diff| {err:.1e}")

    rs = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    cfg = {"rope_theta": 500000.0, "rope_scaling": rs}
    ours = R.rope_inv_freq(cfg, 128).double()
    want = []
    for i in range(0, 128, 2):
        f = 1.0 / 500000.0 ** (i / 128)
        wl = 2 * math.pi / f
        if wl < 8192 / 4.0:
            want.append(f)
        elif wl > 8192 / 1.0:
            want.append(f / 8.0)
        else:
            s = (8192 / wl - 1.0) / (4.0 - 1.0)
            want.append((1 - s) * f / 8.0 + s * f)
    rel = float(((ours - torch.tensor(want)) / torch.tensor(want)).abs().max())
    n_mid = sum(1 for i in range(0, 128, 2) if 2048 <= 2 * math.pi * 500000.0 ** (i / 128) <= 8192)
    report("llama3 rope_scaling inv_freq == float64 closed form", rel < 1e-5,
           f"max rel diff {rel:.1e}, {n_mid} smoothed frequencies")


def check_qwen2_and_bf16(tmp):
    cfg, t = random_llama(seed=11, qwen2=True, tied=True)
    folder = os.path.join(tmp, "qwen2")
    write_hf_folder(folder, cfg, t)
    m = R.load_model(folder)
    ids = [1, 2, 3, 50, 99, 7]
    base = m.logits(ids)
    # zeroing the q/k/v biases must change the output (they are used) ...
    t0 = dict(t)
    for k in t0:
        if k.endswith("_proj.bias"):
            t0[k] = np.zeros_like(t0[k])
    nobias = R.build_model(cfg, {k: (v, "F32") for k, v in t0.items()})
    # ... and equal the same model loaded as plain llama (no biases)
    cfg_llama = dict(cfg, model_type="llama")
    llama = R.build_model(cfg_llama, {k: (v, "F32") for k, v in t.items() if not k.endswith(".bias")})
    ok = max_abs(base, nobias.logits(ids)) > 1e-3 and max_abs(nobias.logits(ids), llama.logits(ids)) == 0.0
    report("Qwen2: q/k/v biases loaded and applied; zero biases == Llama", ok)

    # bf16 emulation: only for BF16-stored weights; rounding hits the inputs
    folder = os.path.join(tmp, "llama_bf16")
    cfg, t = random_llama(seed=12, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 16})
    write_hf_folder(folder, cfg, t, dtype="BF16", shards=2)
    mb = R.load_model(folder)
    plain = mb.logits(ids)
    emu = mb.logits(ids, emulate_bf16=True)
    seen = []
    orig = R.Linear.__call__

    def spy(self, x, emulate_bf16=False):
        y = orig(self, x, emulate_bf16)
        xr = R.round_to_bf16(x) if (emulate_bf16 and self.stored == "BF16") else x
        seen.append(torch.equal(R.round_to_bf16(xr), xr))
        return y

    R.Linear.__call__ = spy
    try:
        mb.logits(ids, emulate_bf16=True)
    finally:
        R.Linear.__call__ = orig
    # manual: one linear, bf16 weights, bf16-rounded input, f32 accumulation
    lin = mb.layers[0]["q"]
    xin = torch.randn(3, lin.w.shape[1])
    manual = (R.round_to_bf16(xin).double() @ lin.w.double().t()).float()
    err_lin = max_abs(lin(xin, emulate_bf16=True), manual)
    diff = max_abs(plain, emu)
    f32m = R.load_model(os.path.join(tmp, "qwen2"))
    same_f32 = torch.equal(f32m.logits(ids, emulate_bf16=True), f32m.logits(ids))
    report("--emulate-bf16-matmul: inputs rounded for BF16 weights only",
           all(seen) and len(seen) == 7 * 2 + 1 and 0 < diff < 0.5 and err_lin < 1e-4 and same_f32,
           f"{len(seen)} linears, |emulated - plain| max {diff:.2e}, single-linear err {err_lin:.1e}")


def check_stories260k(shared):
    folder = os.path.join(shared, "stories260K")
    golden = json.load(open(os.path.join(folder, "golden", "once_upon_a_time.json")))
    prompt, want = golden["prompt_token_ids"], golden["completion_token_ids"]
    model = llama2c.load_llama2c_model(os.path.join(folder, "stories260K.bin"))
    got, margins = R.greedy(model, prompt, len(want))
    toks = llama2c.read_llama2c_tokenizer(os.path.join(folder, "tok512.bin"), model.vocab)
    print("  stories260K text:", repr(llama2c.llama2c_decode(toks, prompt + got)))
    n_same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
    report(f"stories260K: {len(want)} greedy tokens == golden completion_token_ids", got == want,
           f"{n_same}/{len(want)} leading tokens equal, min top1-top2 margin {min(margins):.3g}")
    # negative control: the same weights without the q/k permutation
    cfg, w = llama2c.read_llama2c(os.path.join(folder, "stories260K.bin"))
    t = llama2c.to_hf_tensors(cfg, w)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        t[p + "q_proj.weight"] = (w["wq"][i], "F32")
        t[p + "k_proj.weight"] = (w["wk"][i], "F32")
    bad, _ = R.greedy(R.build_model(cfg, t), prompt, len(want))
    report("stories260K negative control: without q/k permutation the output differs", bad != want)


def check_tinystories(shared):
    folder = os.path.join(shared, "tinystories-656k")
    tok = BPETokenizer(os.path.join(folder, "tokenizer.json"))
    prompt = [1] + tok.encode("Once upon a time")
    model = R.load_model(folder)
    got, margins = R.greedy(model, prompt, 64)
    got_kv, _ = R.greedy(model, prompt, 64, kv_cache=True)
    text = tok.decode(prompt + got)
    print("  tinystories-656k prompt ids:", prompt, [tok.id_to_token[i] for i in prompt])
    print("  tinystories-656k greedy ids:", got)
    print("  tinystories-656k text:", repr(text))
    words = text.split()
    english = sum(w.strip('.,!?"\'').lower() in {"the", "a", "and", "she", "to", "was", "her", "it"} for w in words)
    report("tinystories-656k: 64 greedy tokens decode to English text", english >= 5 and "\ufffd" not in text,
           f"{len(words)} words, min top1-top2 margin {min(margins):.3g}")
    report("tinystories-656k: KV-cache greedy == recompute greedy", got == got_kv)
    return prompt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="/work/shared/models", help="folder with stories260K/ and tinystories-656k/")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        check_bf16_rounding()
        check_safetensors(tmp)
        check_gpt2(tmp)
        check_rope()
        check_qwen2_and_bf16(tmp)
    check_stories260k(args.shared)
    check_tinystories(args.shared)
    print("ALL PASS" if not FAILED else f"{len(FAILED)} FAILED: {FAILED}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
