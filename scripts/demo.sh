#!/usr/bin/env bash
# The main job on the embedded default: installs and builds kvshare, makes a GPT-2-small-shaped model
# with random weights and GPT-2's real tokenizer, then runs a batch of prompts that share a long
# instruction, with prefix reuse on and off, and prints both summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build.sh
model=.deps/models/gpt2-small
if [ ! -f "$model/model.safetensors" ]; then
  ./build/kvshare make-model --arch gpt2 --shape gpt2-small --tokenizer .deps/gpt2-tokenizer --out "$model" --seed 1
fi
mkdir -p .deps/demo
python3 scripts/demo_prompts.py > .deps/demo/prompts.jsonl
echo "== 32 prompts sharing one long instruction, prefix reuse ON =="
./build/kvshare generate --model "$model" --input .deps/demo/prompts.jsonl --output .deps/demo/results.jsonl \
  --max-tokens 16 --temperature 0 --ignore-eos
echo "== the same batch, prefix reuse OFF =="
./build/kvshare generate --model "$model" --input .deps/demo/prompts.jsonl --output .deps/demo/results-no-reuse.jsonl \
  --max-tokens 16 --temperature 0 --ignore-eos --no-prefix-cache
python3 - <<'PY'
import json
on = [json.loads(l) for l in open(".deps/demo/results.jsonl")]
off = [json.loads(l) for l in open(".deps/demo/results-no-reuse.jsonl")]
same = all(a["token_ids"] == b["token_ids"] for a, b in zip(on, off))
print("outputs identical with reuse on and off:", "yes" if same else "NO")
print("first result:", json.dumps(on[0])[:300])
PY
