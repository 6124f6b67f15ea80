"""Minimal reader for a `tokenizers` tokenizer.json holding a SentencePiece-style
BPE model (Llama-2 / TinyStories style): normalizer = Prepend("▁") + Replace(" ",
"▁"), no pre-tokenizer, merges by rank, byte fallback.  Only what the reference
checks need; not a general tokenizer."""

import json
import re

SPACE = "\u2581"  # ▁
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class BPETokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        if model.get("type") != "BPE":
            raise ValueError("only BPE tokenizer.json models are supported")
        self.vocab = model["vocab"]
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.byte_fallback = model.get("byte_fallback", False)
        self.unk = model.get("unk_token")
        self.fuse_unk = model.get("fuse_unk", False)
        self.ranks = {}
        for rank, m in enumerate(model["merges"]):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            self.ranks[(a, b)] = rank
        self.special_ids = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
        self.normalizer = tj.get("normalizer")

    def normalize(self, text):
        steps = []
        n = self.normalizer
        if n:
            steps = n["normalizers"] if n.get("type") == "Sequence" else [n]
        for st in steps:
            if st["type"] == "Prepend":
                text = st["prepend"] + text
            elif st["type"] == "Replace":
                text = text.replace(st["pattern"]["String"], st["content"])
            else:
                raise ValueError(f"unsupported normalizer {st['type']}")
        return text

    def encode(self, text):
        """Token ids of `text` (no BOS)."""
        text = self.normalize(text)
        # initial symbols: one per character, or its UTF-8 bytes as <0xNN>
        # (byte fallback applies only if every byte token exists, else <unk>;
        # consecutive <unk> are fused when fuse_unk is set)
        syms = []
        for ch in text:
            if ch in self.vocab:
                syms.append(ch)
                continue
            byte_toks = [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
            if self.byte_fallback and all(b in self.vocab for b in byte_toks):
                syms.extend(byte_toks)
            elif not (self.fuse_unk and syms and syms[-1] == self.unk):
                syms.append(self.unk)
        # repeatedly merge the adjacent pair of lowest rank (leftmost on ties)
        while True:
            best = None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [self.vocab[s] for s in syms]

    def decode(self, ids, skip_special=True):
        """Replace ▁ by space, byte-fallback tokens to bytes, strip one leading space."""
        out = bytearray()
        for i in ids:
            if skip_special and i in self.special_ids:
                continue
            tok = self.id_to_token[i]
            m = _BYTE_TOKEN.match(tok)
            if m:
                out.append(int(m.group(1), 16))
            else:
                out.extend(tok.replace(SPACE, " ").encode("utf-8"))
        text = out.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text
