"""Independent float32 PyTorch reference for two Hugging Face architectures.

  * GPT-2   as transformers' GPT2LMHeadModel
  * Llama   as transformers' LlamaForCausalLM (also Qwen2ForCausalLM, which is
            Llama with biases on q/k/v)

Written from scratch (no `transformers`, no `safetensors` package): the
safetensors reader below is a few lines of json + numpy.frombuffer.

Everything is computed in float32 on the CPU, one sequence at a time (no batch
dimension, no padding).  Optionally (`emulate_bf16_matmul=True`) the input
activations of every linear layer whose weight was *stored* as BF16 are rounded
to bf16 (round-to-nearest-even) before the float32 matmul, which is what the
C++ engine does for bf16 weights.

Run with Debian's interpreter: /usr/bin/python3 (torch 1.13, numpy).
"""

import json
import math
import os
import struct

import numpy as np
import torch

torch.set_grad_enabled(False)

# ---------------------------------------------------------------------------
# safetensors / config loading
# ---------------------------------------------------------------------------

_NP_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # raw bits; widened below
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def bf16_bits_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 (exact: bf16 is the top half of f32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """Return {name: (np.ndarray float32-or-native, stored_dtype_str)}.

    Floating tensors (F32/F16/BF16/F64) are returned as float32 arrays; F16 and
    BF16 are widened exactly.  The `__metadata__` entry is skipped.
    """
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        if dt not in _NP_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        npdt = np.dtype(_NP_DTYPES[dt]).newbyteorder("<")
        count = int(np.prod(shape)) if shape else 1
        if end - start != count * npdt.itemsize:
            raise ValueError(f"{path}: tensor {name}: byte size mismatch")
        arr = np.frombuffer(data, dtype=npdt, count=count, offset=base + start).reshape(shape)
        if dt == "BF16":
            arr = bf16_bits_to_f32(arr)
        elif dt in ("F16", "F64"):
            arr = arr.astype(np.float32)  # F16 -> F32 is exact
        else:
            arr = arr.copy()  # detach from the file buffer, native byte order
        out[name] = (arr, dt)
    return out


def load_model_tensors(model_dir):
    """Load every tensor of an HF folder: model.safetensors, or the shards listed
    in model.safetensors.index.json, or (fallback) all *.safetensors files."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
        weight_map, files = None, ["model.safetensors"]
    else:
        weight_map = None
        files = sorted(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors in {model_dir}")
    tensors = {}
    for fn in files:
        for name, val in read_safetensors(os.path.join(model_dir, fn)).items():
            if weight_map is not None and weight_map.get(name, fn) != fn:
                continue  # the index says this name lives in another shard
            if name in tensors:
                raise ValueError(f"tensor {name} present in two shards")
            tensors[name] = val
    if weight_map is not None:
        missing = set(weight_map) - set(tensors)
        if missing:
            raise ValueError(f"index lists tensors not found in shards: {sorted(missing)[:5]}")
    return tensors


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def detect_arch(cfg):
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if mt == "gpt2" or "GPT2LMHeadModel" in archs:
        return "gpt2"
    if mt == "qwen2" or "Qwen2ForCausalLM" in archs:
        return "qwen2"
    if mt == "llama" or "LlamaForCausalLM" in archs:
        return "llama"
    raise ValueError(f"unsupported model_type={mt!r} architectures={archs!r}")


# ---------------------------------------------------------------------------
# numerics helpers
# ---------------------------------------------------------------------------


def round_to_bf16(x):
    """Round float32 tensor values to the nearest bf16 (ties to even), returned
    as float32.  NaN stays NaN, +-inf stays inf, overflow rounds to inf."""
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16) << 16
    rounded = rounded & 0xFFFFFFFF
    # back to signed int32 bit pattern
    rounded = torch.where(rounded >= 0x80000000, rounded - 0x100000000, rounded)
    y = rounded.to(torch.int32).view(torch.float32)
    return torch.where(torch.isnan(x), x, y)


class Linear:
    """y = x @ W^T + b with W in nn.Linear layout [out, in].

    `stored` is the on-disk dtype of W; with emulate_bf16 and stored == BF16 the
    input activations are rounded to bf16 first (accumulation stays float32).
    """

    def __init__(self, weight, bias=None, stored="F32"):
        self.w = weight
        self.b = bias
        self.stored = stored

    def __call__(self, x, emulate_bf16=False):
        if emulate_bf16 and self.stored == "BF16":
            x = round_to_bf16(x)
        y = torch.matmul(x, self.w.t())
        if self.b is not None:
            y = y + self.b
        return y


def gelu_new(x):
    # transformers' NewGELUActivation ("gelu_new"): tanh approximation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def activation(name):
    if name == "gelu_new":
        return gelu_new
    if name in ("gelu_pytorch_tanh", "gelu_fast"):
        if name == "gelu_fast":
            return lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
        return lambda x: torch.nn.functional.gelu(x, approximate="tanh")
    if name == "gelu":
        return torch.nn.functional.gelu
    if name in ("silu", "swish"):
        return torch.nn.functional.silu
    if name == "relu":
        return torch.relu
    raise ValueError(f"unsupported activation {name!r}")


def causal_softmax_attention(q, k, v, q_pos0, scale=None, divisors=()):
    """q [H, Tq, d], k/v [H, Tk, d]; query i sits at absolute position q_pos0+i,
    key j at position j.  Returns [H, Tq, d].  Softmax in float32."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    if scale is not None:
        scores = scores * scale
    for div in divisors:
        scores = scores / div
    tq, tk = q.shape[1], k.shape[1]
    qpos = torch.arange(q_pos0, q_pos0 + tq)[:, None]
    kpos = torch.arange(tk)[None, :]
    mask = kpos <= qpos
    scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return torch.matmul(probs, v)


# ---------------------------------------------------------------------------
# model base: forward over a whole sequence, optional KV cache
# ---------------------------------------------------------------------------


class CausalLM:
    arch = None

    def new_cache(self):
        return [None] * self.n_layer

    def logits(self, token_ids, cache=None, emulate_bf16=False):
        """token_ids: list[int] of the *new* tokens.  If `cache` (from
        new_cache()) is given, the tokens continue the cached sequence and the
        cache is extended in place.  Returns float32 logits [T, vocab]."""
        raise NotImplementedError

    @property
    def stored_dtypes(self):
        return sorted(set(self._stored.values()))


def _take(tensors, name, used):
    arr, dt = tensors[name]
    used.add(name)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), dt


def _strip_prefix(tensors, prefix):
    """Accept names with or without a model prefix (e.g. 'transformer.')."""
    out = {}
    for k, v in tensors.items():
        out[k[len(prefix):] if k.startswith(prefix) else k] = v
    return out


# ---------------------------------------------------------------------------
# GPT-2 (GPT2LMHeadModel)
# ---------------------------------------------------------------------------


class GPT2(CausalLM):
    arch = "gpt2"

    def __init__(self, cfg, tensors):
        self.cfg = cfg
        self.d = cfg.get("n_embd", 768)
        self.n_layer = cfg.get("n_layer", 12)
        self.n_head = cfg.get("n_head", 12)
        self.n_pos = cfg.get("n_positions", 1024)
        self.vocab = cfg.get("vocab_size", 50257)
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.n_inner = cfg.get("n_inner") or 4 * self.d
        self.act = activation(cfg.get("activation_function", "gelu_new"))
        self.scale_attn = cfg.get("scale_attn_weights", True)
        self.scale_by_layer = cfg.get("scale_attn_by_inverse_layer_idx", False)
        self.hd = self.d // self.n_head
        if self.hd * self.n_head != self.d:
            raise ValueError("n_embd must be divisible by n_head")

        # The HF checkpoints exist both as 'transformer.h.0...' (saved from
        # GPT2LMHeadModel) and 'h.0...' (saved from GPT2Model, e.g. openai gpt2).
        lm_head = tensors.get("lm_head.weight")
        t = _strip_prefix({k: v for k, v in tensors.items() if k != "lm_head.weight"}, "transformer.")
        used = set()
        self._stored = {}

        def get(name):
            w, dt = _take(t, name, used)
            self._stored[name] = dt
            return w

        def conv1d(prefix):  # HF Conv1D: weight [in, out]; y = x @ W + b
            w = get(prefix + ".weight")
            b = get(prefix + ".bias")
            return Linear(w.t().contiguous(), b, self._stored[prefix + ".weight"])

        self.wte = get("wte.weight")
        self.wpe = get("wpe.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"h.{i}."
            self.layers.append(dict(
                ln1=(get(p + "ln_1.weight"), get(p + "ln_1.bias")),
                c_attn=conv1d(p + "attn.c_attn"),
                attn_proj=conv1d(p + "attn.c_proj"),
                ln2=(get(p + "ln_2.weight"), get(p + "ln_2.bias")),
                c_fc=conv1d(p + "mlp.c_fc"),
                mlp_proj=conv1d(p + "mlp.c_proj"),
            ))
        self.ln_f = (get("ln_f.weight"), get("ln_f.bias"))
        # GPT2LMHeadModel ties lm_head to wte unless tie_word_embeddings is false.
        if cfg.get("tie_word_embeddings", True) or lm_head is None:
            self.lm_head = Linear(self.wte, None, self._stored["wte.weight"])
        else:
            w = torch.from_numpy(np.ascontiguousarray(lm_head[0], dtype=np.float32))
            self._stored["lm_head.weight"] = lm_head[1]
            self.lm_head = Linear(w, None, lm_head[1])
        # Non-parameter buffers in old checkpoints: h.N.attn.bias (the causal
        # mask, shape [1,1,n,n]) and h.N.attn.masked_bias.  Ignored, like HF.
        leftover = [k for k in t if k not in used and not k.endswith((".attn.bias", ".attn.masked_bias"))]
        if leftover:
            print(f"warning: unused tensors (HF would ignore them too): {leftover[:8]}")
        if self.wte.shape[0] != self.vocab:
            raise ValueError(f"wte rows {self.wte.shape[0]} != vocab_size {self.vocab}")

    def _divisors(self, layer_idx):
        # GPT2Attention: scores / sqrt(head_dim) [/ (layer_idx + 1)]
        divs = []
        if self.scale_attn:
            divs.append(torch.full([], self.hd ** 0.5, dtype=torch.float32))
        if self.scale_by_layer:
            divs.append(float(layer_idx + 1))
        return divs

    def _ln(self, x, wb):
        return torch.nn.functional.layer_norm(x, (self.d,), wb[0], wb[1], self.eps)

    def logits(self, token_ids, cache=None, emulate_bf16=False):
        ids = torch.tensor(token_ids, dtype=torch.long)
        pos0 = 0 if cache is None or cache[0] is None else cache[0][0].shape[1]
        T = len(token_ids)
        if pos0 + T > self.n_pos:
            raise ValueError(f"sequence longer than n_positions={self.n_pos}")
        x = self.wte[ids] + self.wpe[torch.arange(pos0, pos0 + T)]
        for li, L in enumerate(self.layers):
            h = self._ln(x, L["ln1"])
            qkv = L["c_attn"](h, emulate_bf16)  # [T, 3d]
            q, k, v = qkv.split(self.d, dim=-1)
            q = q.view(T, self.n_head, self.hd).transpose(0, 1)
            k = k.view(T, self.n_head, self.hd).transpose(0, 1)
            v = v.view(T, self.n_head, self.hd).transpose(0, 1)
            if cache is not None:
                if cache[li] is not None:
                    k = torch.cat([cache[li][0], k], dim=1)
                    v = torch.cat([cache[li][1], v], dim=1)
                cache[li] = (k, v)
            a = causal_softmax_attention(q, k, v, pos0, divisors=self._divisors(li))
            a = a.transpose(0, 1).reshape(T, self.d)
            x = x + L["attn_proj"](a, emulate_bf16)
            h = self._ln(x, L["ln2"])
            h = self.act(L["c_fc"](h, emulate_bf16))
            x = x + L["mlp_proj"](h, emulate_bf16)
        x = self._ln(x, self.ln_f)
        return self.lm_head(x, emulate_bf16)


# ---------------------------------------------------------------------------
# Llama / Qwen2 (LlamaForCausalLM, Qwen2ForCausalLM)
# ---------------------------------------------------------------------------


def rope_inv_freq(cfg, head_dim):
    """inv_freq exactly as transformers computes it (float32 torch ops),
    including rope_scaling rope_type 'llama3' (and 'linear')."""
    base = float(cfg.get("rope_theta", 10000.0))
    dim = int(head_dim * cfg.get("partial_rotary_factor", 1.0))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (base ** exponents)
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv_freq
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype == "default":
        return inv_freq
    if rtype == "linear":
        return inv_freq / rs["factor"]
    if rtype != "llama3":
        raise ValueError(f"unsupported rope_scaling type {rtype!r}")
    factor = rs["factor"]
    lo = rs["low_freq_factor"]
    hi = rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    lo_wavelen = old_ctx / lo  # python floats, like HF
    hi_wavelen = old_ctx / hi
    wavelen = 2 * math.pi / inv_freq  # float32 tensor
    # long wavelengths (low frequencies): divide by factor; short: unchanged
    scaled = torch.where(wavelen > lo_wavelen, inv_freq / factor, inv_freq)
    # in between: blend, with the same float32 operation order as HF
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < hi_wavelen) * ~(wavelen > lo_wavelen)
    return torch.where(medium, blended, scaled)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Llama(CausalLM):
    """LlamaForCausalLM; with arch='qwen2' also Qwen2ForCausalLM."""

    def __init__(self, cfg, tensors, arch="llama"):
        self.arch = arch
        self.cfg = cfg
        self.d = cfg.get("hidden_size", 4096)
        self.n_layer = cfg.get("num_hidden_layers", 32)
        self.n_head = cfg.get("num_attention_heads", 32)
        self.n_kv = cfg.get("num_key_value_heads") or self.n_head
        self.ffn = cfg.get("intermediate_size", 11008)
        self.vocab = cfg.get("vocab_size", 32000)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.hd = cfg.get("head_dim") or self.d // self.n_head
        self.act = activation(cfg.get("hidden_act", "silu"))
        if self.n_head % self.n_kv:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if arch == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
        else:
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            mlp_bias = bool(cfg.get("mlp_bias", False))
        tied = cfg.get("tie_word_embeddings", False)  # LlamaConfig/Qwen2Config default

        used = set()
        self._stored = {}

        def get(name):
            if name not in tensors:
                raise KeyError(f"missing tensor {name}")
            w, dt = _take(tensors, name, used)
            self._stored[name] = dt
            return w

        def linear(prefix, bias):
            w = get(prefix + ".weight")
            b = get(prefix + ".bias") if bias else None
            return Linear(w, b, self._stored[prefix + ".weight"])

        # Tied checkpoints saved by safetensors keep only one of the two shared
        # names (tinystories-656k keeps lm_head.weight only).
        if "model.embed_tokens.weight" in tensors:
            self.embed = get("model.embed_tokens.weight")
            emb_name = "model.embed_tokens.weight"
        elif tied and "lm_head.weight" in tensors:
            self.embed = get("lm_head.weight")
            emb_name = "lm_head.weight"
        else:
            raise KeyError("missing model.embed_tokens.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"model.layers.{i}."
            self.layers.append(dict(
                in_norm=get(p + "input_layernorm.weight"),
                q=linear(p + "self_attn.q_proj", qkv_bias),
                k=linear(p + "self_attn.k_proj", qkv_bias),
                v=linear(p + "self_attn.v_proj", qkv_bias),
                o=linear(p + "self_attn.o_proj", o_bias),
                post_norm=get(p + "post_attention_layernorm.weight"),
                gate=linear(p + "mlp.gate_proj", mlp_bias),
                up=linear(p + "mlp.up_proj", mlp_bias),
                down=linear(p + "mlp.down_proj", mlp_bias),
            ))
        self.norm = get("model.norm.weight")
        if tied:
            self.lm_head = Linear(self.embed, None, self._stored[emb_name])
            used.add("lm_head.weight")  # the tied alias, if present, is the same parameter
        else:
            self.lm_head = linear("lm_head", False)
        leftover = [k for k in tensors if k not in used and not k.endswith("rotary_emb.inv_freq")]
        if leftover:
            print(f"warning: unused tensors (HF would ignore them too): {leftover[:8]}")
        if self.embed.shape != (self.vocab, self.d):
            raise ValueError(f"embedding shape {tuple(self.embed.shape)} != ({self.vocab}, {self.d})")
        self.inv_freq = rope_inv_freq(cfg, self.hd)
        if self.inv_freq.shape[0] * 2 != self.hd:
            raise NotImplementedError("partial rotary embeddings")

    def rms_norm(self, x, w):
        # LlamaRMSNorm: in float32, x * rsqrt(mean(x^2) + eps), then weight * (.)
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.eps))

    def rope(self, positions):
        # freqs = inv_freq (outer) positions, in float32; emb = cat(freqs, freqs)
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()  # attention_scaling is 1.0 for default/linear/llama3

    def logits(self, token_ids, cache=None, emulate_bf16=False):
        ids = torch.tensor(token_ids, dtype=torch.long)
        pos0 = 0 if cache is None or cache[0] is None else cache[0][0].shape[1]
        T = len(token_ids)
        cos, sin = self.rope(torch.arange(pos0, pos0 + T))
        rep = self.n_head // self.n_kv
        scale = self.hd ** -0.5
        x = self.embed[ids]
        for li, L in enumerate(self.layers):
            h = self.rms_norm(x, L["in_norm"])
            q = L["q"](h, emulate_bf16).view(T, self.n_head, self.hd).transpose(0, 1)
            k = L["k"](h, emulate_bf16).view(T, self.n_kv, self.hd).transpose(0, 1)
            v = L["v"](h, emulate_bf16).view(T, self.n_kv, self.hd).transpose(0, 1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if cache is not None:
                if cache[li] is not None:
                    k = torch.cat([cache[li][0], k], dim=1)
                    v = torch.cat([cache[li][1], v], dim=1)
                cache[li] = (k, v)
            # GQA: query head j uses kv head j // rep (HF repeat_kv)
            kr = k.repeat_interleave(rep, dim=0)
            vr = v.repeat_interleave(rep, dim=0)
            a = causal_softmax_attention(q, kr, vr, pos0, scale=scale)
            a = a.transpose(0, 1).reshape(T, self.n_head * self.hd)
            x = x + L["o"](a, emulate_bf16)
            h = self.rms_norm(x, L["post_norm"])
            h = self.act(L["gate"](h, emulate_bf16)) * L["up"](h, emulate_bf16)
            x = x + L["down"](h, emulate_bf16)
        x = self.rms_norm(x, self.norm)
        return self.lm_head(x, emulate_bf16)


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------


def build_model(cfg, tensors):
    arch = detect_arch(cfg)
    if arch == "gpt2":
        return GPT2(cfg, tensors)
    return Llama(cfg, tensors, arch=arch)


def load_model(model_dir):
    return build_model(load_config(model_dir), load_model_tensors(model_dir))


def greedy(model, prompt_ids, steps, emulate_bf16=False, kv_cache=False):
    """Greedy continuation (argmax, first index on ties, no EOS stop).

    kv_cache=False recomputes the whole sequence at every step;
    kv_cache=True feeds the prompt once and then one token at a time.
    Returns (tokens, margins) where margins[i] = top1 - top2 logit at step i.
    """
    seq = list(prompt_ids)
    out, margins = [], []
    cache = model.new_cache() if kv_cache else None
    feed = list(prompt_ids)
    for _ in range(steps):
        if kv_cache:
            last = model.logits(feed, cache=cache, emulate_bf16=emulate_bf16)[-1]
        else:
            last = model.logits(seq, emulate_bf16=emulate_bf16)[-1]
        tok = int(torch.argmax(last))
        top2 = torch.topk(last, 2).values
        margins.append(float(top2[0] - top2[1]))
        out.append(tok)
        seq.append(tok)
        feed = [tok]
    return out, margins
