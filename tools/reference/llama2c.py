"""Load a llama2.c checkpoint (.bin, legacy "version 0" format of Karpathy's
run.c) into the HF-semantics Llama of reference.py.

File layout: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len); vocab_size < 0 means the classifier is stored
separately (not shared with the token embedding).  Then float32 arrays in this
order: token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim],
wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
two unused RoPE tables [seq_len, head_size/2] each, and wcls [vocab, dim] if
not shared.  Matrices are [out, in] like nn.Linear.

run.c rotates interleaved pairs (2i, 2i+1) of each head with frequency
theta^(-2i/head_size); HF's rotate_half rotates the pair (i, i + head_size/2)
with the same frequency.  Permuting the rows of wq and wk within each head
(new row i <- old 2i, new row i + head_size/2 <- old 2i + 1) turns one into the
other; q.k dot products are unchanged because q and k get the same permutation.
"""

import struct

import numpy as np

import reference


def interleaved_to_half_perm(n_heads, head_size):
    """Row order that maps llama2.c/Meta interleaved RoPE rows to HF layout."""
    half = head_size // 2
    order = []
    for h in range(n_heads):
        base = h * head_size
        order += [base + 2 * i for i in range(half)]
        order += [base + 2 * i + 1 for i in range(half)]
    return np.array(order)


def read_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        arr = floats[pos:pos + n].reshape(shape).astype(np.float32)
        pos += n
        return arr

    w = {}
    w["emb"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len, hs // 2)  # freq_cis_real (unused)
    take(seq_len, hs // 2)  # freq_cis_imag (unused)
    w["wcls"] = w["emb"] if shared else take(vocab, dim)
    if pos != floats.size:
        raise ValueError(f"{path}: {floats.size - pos} trailing floats; not a llama2.c v0 checkpoint?")
    cfg = dict(
        model_type="llama",
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        vocab_size=vocab,
        max_position_embeddings=seq_len,
        rms_norm_eps=1e-5,  # run.c's rmsnorm
        rope_theta=10000.0,
        rope_scaling=None,
        tie_word_embeddings=shared,
        hidden_act="silu",
    )
    return cfg, w


def to_hf_tensors(cfg, w):
    """llama2.c arrays -> {HF name: (array, 'F32')} with q/k rows permuted."""
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    hs = cfg["hidden_size"] // n_heads
    pq = interleaved_to_half_perm(n_heads, hs)
    pk = interleaved_to_half_perm(n_kv, hs)
    t = {"model.embed_tokens.weight": w["emb"], "model.norm.weight": w["rms_final"]}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = w["wcls"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = w["rms_att"][i]
        t[p + "self_attn.q_proj.weight"] = w["wq"][i][pq]
        t[p + "self_attn.k_proj.weight"] = w["wk"][i][pk]
        t[p + "self_attn.v_proj.weight"] = w["wv"][i]
        t[p + "self_attn.o_proj.weight"] = w["wo"][i]
        t[p + "post_attention_layernorm.weight"] = w["rms_ffn"][i]
        t[p + "mlp.gate_proj.weight"] = w["w1"][i]
        t[p + "mlp.down_proj.weight"] = w["w2"][i]
        t[p + "mlp.up_proj.weight"] = w["w3"][i]
    return {k: (np.ascontiguousarray(v), "F32") for k, v in t.items()}


def load_llama2c_model(path):
    cfg, w = read_llama2c(path)
    return reference.build_model(cfg, to_hf_tensors(cfg, w))


def read_llama2c_tokenizer(path, vocab_size):
    """tokenizer.bin of llama2.c: int32 max_len, then per token float32 score,
    int32 length, bytes.  Returns the list of token byte strings."""
    with open(path, "rb") as f:
        data = f.read()
    off = 4
    toks = []
    for _ in range(vocab_size):
        _score, n = struct.unpack_from("<fi", data, off)
        off += 8
        toks.append(data[off:off + n])
        off += n
    return toks


def llama2c_decode(toks, ids):
    """Like run.c's decode: drop the leading space after BOS, <0xNN> -> byte."""
    out = bytearray()
    prev = None
    for i in ids:
        piece = toks[i]
        if i in (1, 2):  # BOS/EOS
            prev = i
            continue
        if prev == 1 and piece.startswith(b" "):
            piece = piece[1:]
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            piece = bytes([int(piece[3:5], 16)])
        out += piece
        prev = i
    return out.decode("utf-8", errors="replace")
