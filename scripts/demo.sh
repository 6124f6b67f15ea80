#!/usr/bin/env bash
# The main job on the embedded default: installs and builds kvshare, makes a GPT-2-small-shaped model
# (random weights, GPT-2's real tokenizer), then runs a batch job of 32 prompts that share a long
# instruction, with prefix reuse on and off, and compares them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build.sh
model=.deps/models/gpt2-small
if [ ! -f "$model/model.safetensors" ]; then
  ./build/kvshare make-model --arch gpt2 --shape gpt2-small --tokenizer .deps/gpt2-tokenizer --out "$model" --seed 1 --overwrite
fi
mkdir -p .deps/demo
python3 scripts/demo_prompts.py > .deps/demo/prompts.jsonl
run() {  # run NAME FLAGS...: one batch job, timed
  local name=$1; shift
  local t0=$EPOCHREALTIME
  ./build/kvshare generate --model "$model" --input .deps/demo/prompts.jsonl --output ".deps/demo/$name.jsonl" \
    --max-tokens 16 --temperature 0 --ignore-eos "$@"
  echo "$t0 $EPOCHREALTIME" > ".deps/demo/$name.seconds"
}
echo "== 32 prompts of about 515 tokens sharing a 490-token instruction, prefix reuse ON =="
run reuse-on
echo
echo "== the same batch job with prefix reuse OFF (--no-prefix-cache) =="
run reuse-off --no-prefix-cache
echo
python3 - <<'PY'
import json
on = [json.loads(l) for l in open(".deps/demo/reuse-on.jsonl")]
off = [json.loads(l) for l in open(".deps/demo/reuse-off.jsonl")]
def seconds(name):
    start, end = map(float, open(f".deps/demo/{name}.seconds").read().split())
    return end - start
t_on, t_off = seconds("reuse-on"), seconds("reuse-off")
same = all(a["token_ids"] == b["token_ids"] for a, b in zip(on, off))
print(f"reuse on: {t_on:.1f} s, reuse off: {t_off:.1f} s (whole command, model load included): {t_off / t_on:.1f}x")
print("outputs identical with reuse on and off:", "yes" if same else "NO")
print("results: .deps/demo/reuse-on.jsonl; first line:")
print(json.dumps(on[0])[:400])
PY
