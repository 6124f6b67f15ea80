#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora (fuzz/corpus/NAME/) from generated inputs only: micro models made by
# `kvshare make-model` over a small tokenizer written here, the project's own chat-template test cases, and
# hand-written request lines. Nothing comes from ../shared (the long runs in docs/fuzzing.md add its files as
# extra seeds in place). Run from the source root with a built kvshare: bash fuzz/make_corpus.sh [build/kvshare]
set -euo pipefail
cd "$(dirname "$0")/.."
kvshare="${1:-build/kvshare}"
out=fuzz/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The folders this script writes; fuzz/corpus/http_body is hand-written and kept.
rm -rf "$out"/{safetensors,safetensors_index,gguf,tokenizer_json,vocab_merges,config,request_line,chat_template,json_object}
mkdir -p "$out"/{safetensors,safetensors_index,gguf,tokenizer_json,vocab_merges,config,request_line,chat_template,json_object}

# A small byte-level BPE tokenizer (256 byte tokens, 40 merges, <|endoftext|>), as vocab.json + merges.txt and
# as tokenizer.json; and a SentencePiece-style tokenizer.json (Metaspace, byte fallback).
python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
# GPT-2's printable alphabet for the 256 bytes: printable Latin-1 bytes stand for themselves, the others are
# shifted to code points from 256 up.
keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
alphabet, shift = {}, 0
for b in range(256):
    if b in keep:
        alphabet[b] = chr(b)
    else:
        alphabet[b] = chr(256 + shift)
        shift += 1
vocab = {alphabet[b]: b for b in range(256)}
words = ["the", "and", "once", "upon", "time", "there", "was"]
merges = []
def add(a, b):
    merges.append(a + " " + b)
    if a + b not in vocab:
        vocab[a + b] = len(vocab)
sp = alphabet[32]
for w in words:
    w = sp + w
    cur = w[0]
    for ch in w[1:]:
        if cur + ch not in vocab or (cur + " " + ch) not in merges:
            add(cur, ch)
        cur += ch
vocab["<|endoftext|>"] = len(vocab)
bpe = os.path.join(work, "bpe")
os.makedirs(bpe)
json.dump(vocab, open(os.path.join(bpe, "vocab.json"), "w"), ensure_ascii=False)
open(os.path.join(bpe, "merges.txt"), "w").write("#version: 0.2\n" + "\n".join(merges) + "\n")
tok = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
}
tj = os.path.join(work, "bpe_json")
os.makedirs(tj)
json.dump(tok, open(os.path.join(tj, "tokenizer.json"), "w"), ensure_ascii=False)
# SentencePiece style: <unk> <s> </s>, 256 byte tokens, then pieces.
spm = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    spm["<0x%02X>" % b] = len(spm)
spm_merges = []
for piece in ["\u2581", "o", "n", "c", "e", "t", "h", "a", "i", "m", "u", "p"]:
    spm.setdefault(piece, len(spm))
for a, b in [("\u2581", "o"), ("n", "c"), ("\u2581o", "nc"), ("\u2581onc", "e"), ("t", "h"), ("\u2581", "th"), ("\u2581th", "e")]:
    spm_merges.append(a + " " + b)
    spm.setdefault(a + b, len(spm))
sp_tok = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for c, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2)]],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                       {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                 {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": spm, "merges": spm_merges},
}
json.dump(sp_tok, open(os.path.join(work, "spm_tokenizer.json"), "w"), ensure_ascii=False)
PY

sep=$'\n--8<--\n'
text='Once upon a time, there was 1 café — “naïve” <|endoftext|> 日本語 🙂'
tok_config='{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": false}'
spm_config='{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}'

# Tokenizers.
printf '%s' "$(cat "$work/bpe/vocab.json")$sep$(cat "$work/bpe/merges.txt")$sep$tok_config$sep$text" > "$out/vocab_merges/gpt2_style"
printf '%s' "$(cat "$work/bpe/vocab.json")$sep$(cat "$work/bpe/merges.txt")" > "$out/vocab_merges/files_only"
printf '%s' "$(cat "$work/bpe_json/tokenizer.json")$sep$tok_config$sep{\"eos_token_id\": [0, 1]}$sep$text" > "$out/tokenizer_json/byte_level"
printf '%s' "$(cat "$work/spm_tokenizer.json")$sep$spm_config$sep{\"eos_token_id\": 2}$sep$text" > "$out/tokenizer_json/sentencepiece"
printf '%s' "$(cat "$work/spm_tokenizer.json")" > "$out/tokenizer_json/sentencepiece_alone"

# Micro models: safetensors, GGUF, config.json + generation_config.json.
for spec in gpt2:f32 llama:f32 qwen2:bf16 llama:f16 gpt2:bf16; do
  arch=${spec%%:*} dtype=${spec##*:}
  m="$work/$arch-$dtype"
  "$kvshare" make-model --arch "$arch" --shape micro --dtype "$dtype" --tokenizer "$work/bpe" --out "$m" --seed 1 >/dev/null
  cp "$m/model.safetensors" "$out/safetensors/$arch-$dtype"
  cp "$m/model.gguf" "$out/gguf/$arch-$dtype"
  printf '%s' "$(cat "$m/config.json")$sep$(cat "$m/generation_config.json")" > "$out/config/$arch-$dtype"
done
"$kvshare" make-model --arch llama --shape tiny-llama3 --tokenizer "$work/bpe" --out "$work/llama3" >/dev/null
printf '%s' "$(cat "$work/llama3/config.json")$sep{\"eos_token_id\": [1, 2, 3]}" > "$out/config/llama-tiny-llama3"

# Safetensors headers of every shape the format allows, with tiny payloads.
python3 - "$out" <<'PY'
import json, struct, sys
out = sys.argv[1]
def st(name, header, payload):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    open(f"{out}/safetensors/{name}", "wb").write(struct.pack("<Q", len(h)) + h + payload)
st("metadata_alias", {"__metadata__": {"format": "pt", "tied": "w"},
                      "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                      "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
                      "s": {"dtype": "F16", "shape": [], "data_offsets": [22, 24]}}, bytes(range(24)))
st("empty_tensor", {"e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]}}, b"")
st("unaligned", {"h": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
                 "f": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, bytes(6))
# Index files for fuzz_safetensors_index's two fixed shards (tensors a, b in the first; c in the second).
def ix(name, index):
    open(f"{out}/safetensors_index/{name}", "w").write(json.dumps(index, indent=2))
first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
ix("valid", {"metadata": {"total_size": 40}, "weight_map": {"a": first, "b": first, "c": second}})
ix("one_shard", {"weight_map": {"a": first, "b": first}})
ix("wrong_shard", {"weight_map": {"a": second, "b": first, "c": second}})
ix("missing_file", {"weight_map": {"a": "model-00003-of-00003.safetensors"}})
PY

# Batch-job request lines.
n=0
while IFS= read -r line; do
  n=$((n + 1))
  printf '%s' "$line" > "$out/request_line/line$n"
done <<'LINES'
{"prompt": "Once upon a time"}
{"prompt": "Hello", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 1234}
{"prompt_token_ids": [1, 2, 3, 4], "max_tokens": 5.0, "ignore_eos": true, "stop_token_ids": [2, 3]}
{"prompt": "salted", "cache_salt": "tenant-a", "temperature": 0, "seed": null}
{"prompt_token_ids": [], "max_tokens": -1}
{"prompt": 5, "top_p": 1.5, "top_k": 2.5, "seed": -1}
{"prompt": "\u00e9\ud83d\ude42 unicode", "max_tokens": 9223372036854775807, "temperature": 1e400}
[1, 2, 3]
{"prompt": "x", "stop_token_ids": "3", "ignore_eos": 1}
{"prompt": "Is it? Answer:", "max_tokens": 1, "allowed_token_ids": [3, 4], "skip_special_tokens": false, "truncate_prompt_tokens": 4, "bad_words": ["darn", " heck it"]}
{"prompt": "Review: fine. Sentiment:", "guided_choice": ["positive", "negative", "caf\u00e9"], "n": 2, "temperature": 0.7}
{"prompt_token_ids": [5, 6], "structured_outputs": {"choice": ["yes", "yes, sir"], "json": null}, "ignore_eos": true}
{"prompt": "As JSON:", "response_format": {"type": "json_object"}, "structured_outputs": {"disable_any_whitespace": true}, "max_tokens": 64}
LINES

# JSON mode's texts: whole objects, starts of objects, and near misses.
n=0
while IFS= read -r text; do
  n=$((n + 1))
  printf '%s' "$text" > "$out/json_object/text$n"
done <<'TEXTS'
{}
 { "name": "Ann", "age": 31, "tags": ["a", "b"], "ok": true, "none": null }
{"a":{"b":[1,-2.5e+3,0.0,[],{}]},"c":"\u00e9\ud83d\ude00\n\"","d":false}
{"café": "日本", "x": 1E400}
{"a": [1, 2,
{"a": "\ud800\u0041"}
{"a": 01}
[1, 2]
TEXTS

# Chat templates: the project's own tricky templates (tests/goldens/chat_templates/tricky.txt) over their
# context, and the golden conversations under a ChatML-like template.
python3 - "$out" <<'PY'
import sys, os, json
out = sys.argv[1]
sep = "\n--8<--\n"
src = "tests/goldens/chat_templates"
context = open(f"{src}/tricky_context.json").read()
name, lines = None, []
def flush():
    if name:
        open(f"{out}/chat_template/{name}", "w").write("".join(lines).rstrip("\n") + sep + context)
for line in open(f"{src}/tricky.txt"):
    if line.startswith("### "):
        flush()
        name, lines = line[4:].strip(), []
    else:
        lines.append(line)
flush()
chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
          "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
          "{% for part in message['content'] %}{{ part['text'] | default('') }}{% endfor %}{% endif %}"
          "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
for case in sorted(os.listdir(f"{src}/cases")):
    conv = open(f"{src}/cases/{case}").read()
    open(f"{out}/chat_template/case_{os.path.splitext(case)[0]}", "w").write(chatml + sep + conv)
# Tool calls' arguments written every way a template writes them (as objects that keep their text, when the
# target renders with tool_arguments_as_objects).
calls = ("{% for m in messages %}{% for c in m.tool_calls or [] %}{% set a = c.function.arguments %}"
         "{{ a | tojson }}{{ '+' + a }}{{ a }}{% if a is mapping %}{% for k, v in a | items %}{{ k }}={{ v }}"
         "{% endfor %}{% endif %}{% endfor %}{% endfor %}")
conv = open(f"{src}/cases/tool_calls_string_args.json").read()
open(f"{out}/chat_template/tool_call_arguments", "w").write(calls + sep + conv)
PY
du -sh "$out"/*
