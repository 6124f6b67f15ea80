#!/usr/bin/env bash
# kvshare against llama.cpp on the same GGUF, on this machine, in one sitting.
#
#   bash bench/llamacpp_compare.sh [--model DIR] [--kvshare BIN] [--write FILE] [options]
#
# MODEL is a kvshare model folder made by `kvshare make-model` (it holds MODEL/model.gguf with the same
# weights); default .deps/models/gpt2-small. llama.cpp is built once, outside the repository, by
# bench/llamacpp_build.sh (into ${KVSHARE_LLAMACPP_DIR:-~/.cache/kvshare-llamacpp}; 10-20 minutes on 2 cores).
#
# It measures, both engines on MODEL/model.gguf with 2 threads, kvshare with --kv-cache-prefault (its KV memory
# made resident at start-up, as llama.cpp's KV buffer is cleared when its context is created):
#   1. prefill: llama-bench pp512 (-p 512 -r 5) against kvshare bench control 4 x 512 tokens, 1 output token;
#   2. decode at batch 1: llama-bench tg32 against kvshare bench control 1 x (16 prompt + 64 output) tokens;
#   3. gsp, G groups x P prompts sharing an S-token system prompt, Q-token questions, O output tokens, greedy,
#      EOS ignored: llama-server (--slots slots) driven over /v1/completions with token-id prompts by
#      bench/openai_gsp_client.py (--clients concurrent clients), against kvshare serve behind the same client
#      (served), kvshare generate on the same token ids as a batch job (its defaults, and at most --slots
#      sequences per step), and kvshare bench --workload gsp --compare. With prefix reuse on, --rounds times
#      in turn (medians reported), and once with it off (llama-server --no-cache-prompt --cache-ram 0, kvshare
#      --no-prefix-cache).
# and prints a markdown table (CPU, date, commits, every figure, kvshare / llama.cpp speed ratio), appended to
# FILE with --write. Logs and raw JSON go to a temporary folder named at the start.
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")/.."

model=.deps/models/gpt2-small
kvshare=build/kvshare
write=""
reps=5
groups=4 per_group=8 system_len=512 question_len=64 output_len=32
slots=8
clients=32
few_clients=8
rounds=3
seed=0
threads=2
kv_mem=2GiB
no_reuse_off=0
llama_bin=""

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF
options:
  --model DIR          kvshare model folder holding model.gguf ($model)
  --kvshare BIN        kvshare binary ($kvshare)
  --write FILE         append the table to FILE (e.g. bench/llamacpp_results.md)
  --reps N             llama-bench -r and kvshare --repeat for prefill/decode ($reps)
  --groups G --prompts-per-group P --system-len S --question-len Q --output-len O   gsp shape ($groups x $per_group, $system_len, $question_len, $output_len)
  --slots N            llama-server slots (-np; 8 is its fastest here: 4, 16 and 32 were slower) ($slots)
  --clients C          concurrent clients of either server ($clients)
  --few-clients F      each round also serves both behind F clients, the issue's serving shape; 0: skip ($few_clients)
  --rounds N           rounds of the gsp runs with reuse on ($rounds)
  --seed N             seed of the gsp prompts ($seed)
  --kv-cache-memory M  kvshare's KV budget ($kv_mem)
  --skip-reuse-off     skip the gsp runs with prefix reuse off
  --llamacpp-bin DIR   use llama.cpp binaries from DIR instead of building
EOF
}

log() { echo "llamacpp_compare: $*" >&2; }
# Paths given on the command line are relative to the caller's folder, the defaults to the repository's.
abs() { case "$1" in /*|"") echo "$1" ;; *) echo "$caller/$1" ;; esac; }

while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$(abs "$2")"; shift 2 ;;
    --kvshare) kvshare="$(abs "$2")"; shift 2 ;;
    --write) write="$(abs "$2")"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --groups) groups="$2"; shift 2 ;;
    --prompts-per-group) per_group="$2"; shift 2 ;;
    --system-len) system_len="$2"; shift 2 ;;
    --question-len) question_len="$2"; shift 2 ;;
    --output-len) output_len="$2"; shift 2 ;;
    --slots) slots="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --few-clients) few_clients="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --kv-cache-memory) kv_mem="$2"; shift 2 ;;
    --skip-reuse-off) no_reuse_off=1; shift ;;
    --llamacpp-bin) llama_bin="$(abs "$2")"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "llamacpp_compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

gguf="$model/model.gguf"
[ -f "$gguf" ] || { log "no $gguf (make it with: build/kvshare make-model --arch gpt2 --shape gpt2-small --tokenizer .deps/gpt2-tokenizer --out $model --seed 1)"; exit 1; }
[ -x "$kvshare" ] || { log "no kvshare binary at $kvshare (bash scripts/build.sh)"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed"; exit 1; }

if [ -z "$llama_bin" ]; then
  llama_bin="$(bash bench/llamacpp_build.sh)"
fi
for t in llama-bench llama-server; do
  [ -x "$llama_bin/$t" ] || { log "no $llama_bin/$t"; exit 1; }
done

# kvshare's KV budget, made resident at start-up as llama.cpp's KV buffer is (it is allocated and cleared when
# the context is created), so neither engine's timed work waits on fresh pages.
kv_flags=(--kv-cache-memory "$kv_mem" --kv-cache-prefault)

out="$(mktemp -d "${TMPDIR:-/tmp}/kvshare-llamacpp-compare.XXXXXX")"
log "logs and raw results in $out"
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg.start"
echo "${kv_flags[*]}" >"$out/kvshare_kv.flags"

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

# ---- 1, 2: llama-bench pp512 / tg32 -------------------------------------------------------------------------
log "llama-bench pp512 / tg32, $reps repetitions"
"$llama_bin/llama-bench" -m "$gguf" -p 512 -n 32 -t "$threads" -r "$reps" -o json >"$out/llama_bench.json" 2>"$out/llama_bench.log" ||
  { tail -20 "$out/llama_bench.log" >&2; log "llama-bench failed"; exit 1; }

# ---- kvshare prefill / decode ---------------------------------------------------------------------------------
log "kvshare bench control 4 x 512 prompt tokens, 1 output token (prefill), --repeat $reps"
"$kvshare" bench --model "$gguf" --workload control --num-prompts 4 --input-len 512 --output-len 1 \
  --repeat "$reps" "${kv_flags[@]}" --json >"$out/kvshare_prefill.json" 2>"$out/kvshare_prefill.log" ||
  { tail -20 "$out/kvshare_prefill.log" >&2; log "kvshare bench (prefill) failed"; exit 1; }
log "kvshare bench control 1 x (16 prompt + 64 output) tokens (decode), --repeat $reps"
"$kvshare" bench --model "$gguf" --workload control --num-prompts 1 --input-len 16 --output-len 64 \
  --repeat "$reps" "${kv_flags[@]}" --json >"$out/kvshare_decode.json" 2>"$out/kvshare_decode.log" ||
  { tail -20 "$out/kvshare_decode.log" >&2; log "kvshare bench (decode) failed"; exit 1; }

# ---- 3: gsp against llama-server ------------------------------------------------------------------------------
# Each slot holds one sequence of S + Q + O tokens (plus a margin); -c is the total over the slots.
ctx=$((slots * (system_len + question_len + output_len + 16)))
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

gsp_client() {  # gsp_client PORT NAME EXTRA_CLIENT_FLAGS...: the workload through the OpenAI API, into NAME.json
  local port="$1" name="$2"; shift 2
  python3 bench/openai_gsp_client.py --url "http://127.0.0.1:$port" --groups "$groups" --prompts-per-group "$per_group" \
    --system-len "$system_len" --question-len "$question_len" --output-len "$output_len" --concurrency "$clients" \
    --seed "$seed" --save-outputs "$out/$name.outputs.jsonl" "$@" >"$out/$name.json" 2>"$out/$name.client.log" ||
    { cat "$out/$name.client.log" "$out/$name.json" >&2; log "gsp client failed ($name)"; exit 1; }
}

wait_until_up() {  # wait_until_up PORT LOG NAME: until $server_pid answers GET /health with 200 (2 minutes at most)
  local port="$1" server_log="$2" name="$3"
  for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    if curl -sf --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  tail -20 "$server_log" >&2
  log "$name did not come up"
  exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

run_llama_server() {  # run_llama_server NAME SERVER_FLAGS... (client flags in $client_extra)
  local name="$1"; shift
  local port; port="$(free_port)"
  local flags=(-m "$gguf" -t "$threads" -tb "$threads" -np "$slots" -c "$ctx" --host 127.0.0.1 --port "$port"
    --no-webui "$@")
  echo "${flags[*]}" | sed "s/--port $port/--port PORT/" >"$out/$name.flags"
  log "llama-server ${flags[*]}; $clients clients"
  "$llama_bin/llama-server" "${flags[@]}" >"$out/$name.server.log" 2>&1 &
  server_pid=$!
  wait_until_up "$port" "$out/$name.server.log" llama-server
  # shellcheck disable=SC2086
  gsp_client "$port" "$name" $client_extra
  stop_server
}

# kvshare serve driven by the same client as llama-server: the same prompts, arrivals and concurrency.
serve_flags=("${kv_flags[@]}")
echo "${serve_flags[*]}" >"$out/kvshare_serve.flags"
run_kvshare_server() {  # run_kvshare_server NAME EXTRA_SERVE_FLAGS...
  local name="$1"; shift
  local port; port="$(free_port)"
  log "kvshare serve ${serve_flags[*]} $*; $clients clients"
  "$kvshare" serve --model "$gguf" --port "$port" "${serve_flags[@]}" "$@" >"$out/$name.log" 2>&1 &
  server_pid=$!
  wait_until_up "$port" "$out/$name.log" "kvshare serve"
  gsp_client "$port" "$name"
  stop_server
}

# kvshare generate on the very same token-id prompts as llama-server got, as a batch job (it times the job
# without the model load): with its default flags, and with at most $slots sequences per step, as many as
# llama-server has slots.
gen_flags=("${kv_flags[@]}" --no-progress)
echo "${gen_flags[*]}" >"$out/kvshare_gen.flags"
run_generate() {  # run_generate NAME EXTRA_FLAGS...
  local name="$1"; shift
  log "kvshare generate --input gsp_prompts.jsonl ${gen_flags[*]} $*"
  "$kvshare" generate --model "$gguf" --input "$out/gsp_prompts.jsonl" --output "$out/$name.jsonl" \
    "${gen_flags[@]}" "$@" 2>"$out/$name.log" ||
    { tail -20 "$out/$name.log" >&2; log "kvshare generate ($name) failed"; exit 1; }
}

# Reuse on, $rounds rounds; each round runs llama-server, kvshare serve and both kvshare batch jobs one after
# another, so that drift in this shared machine's speed hits every engine alike; the table takes medians.
for r in $(seq 1 "$rounds"); do
  client_extra=""
  [ "$r" = 1 ] && client_extra="--dump-prompts $out/gsp_prompts.jsonl"
  run_llama_server "llama_gsp_on.$r" --cache-prompt
  run_kvshare_server "kvshare_serve_on.$r"
  run_generate "kvshare_gen_on.$r"
  run_generate "kvshare_gen_slots_on.$r" --max-num-seqs "$slots"
  if [ "$few_clients" -gt 0 ]; then
    many_clients="$clients" clients="$few_clients" client_extra=""
    run_llama_server "llama_gsp_on_few.$r" --cache-prompt
    run_kvshare_server "kvshare_serve_on_few.$r"
    clients="$many_clients"
  fi
done
if [ "$no_reuse_off" = 0 ]; then
  client_extra="--no-cache-prompt"
  run_llama_server llama_gsp_off --no-cache-prompt --cache-ram 0
  run_kvshare_server kvshare_serve_off --no-prefix-cache
  run_generate kvshare_gen_off --no-prefix-cache
fi

# ---- 3: kvshare's own gsp benchmark ---------------------------------------------------------------------------
# The same shape with kvshare's own prompts (from its seed), reuse off and on in one process, with the ideal
# speedup and the check that reuse leaves the outputs unchanged.
gsp_flags=(--workload gsp --groups "$groups" --prompts-per-group "$per_group" --system-len "$system_len"
  --question-len "$question_len" --output-len "$output_len" --seed "$seed" "${kv_flags[@]}")
if [ "$no_reuse_off" = 0 ]; then gsp_flags+=(--compare); fi
echo "${gsp_flags[*]}" >"$out/kvshare_gsp.flags"
log "kvshare bench ${gsp_flags[*]}"
"$kvshare" bench --model "$gguf" "${gsp_flags[@]}" --json >"$out/kvshare_gsp.json" 2>"$out/kvshare_gsp.log" ||
  { tail -20 "$out/kvshare_gsp.log" >&2; log "kvshare bench (gsp) failed"; exit 1; }

# ---- the table ------------------------------------------------------------------------------------------------
cut -d' ' -f1-3 /proc/loadavg >"$out/loadavg.end"
kv_commit="$(git -C "$(dirname "$kvshare")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$kv_commit" != unknown ] && [ -n "$(git -C "$(dirname "$kvshare")" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  kv_commit="$kv_commit (with uncommitted changes)"
fi
kv_src="$(git -C "$(dirname "$kvshare")" rev-parse --show-toplevel 2>/dev/null || echo "?")"
llama_src="$(cd "$llama_bin/../.." 2>/dev/null && pwd)/src"
llama_pkg="$(cat "$llama_src/.node-llama-cpp-version" 2>/dev/null || echo '?')"
llama_tag="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("tag", "?"))' "$llama_src/.node-llama-cpp-info.json" 2>/dev/null || echo '?')"
llama_commit="$(git -C "$llama_src" rev-parse --short HEAD 2>/dev/null || echo '?')"
cpu="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"

python3 - "$out" "$cpu" "$kv_commit" "$kv_src" "$llama_pkg" "$llama_commit" "$gguf" "$groups" "$per_group" \
  "$system_len" "$question_len" "$output_len" "$slots" "$reps" "$no_reuse_off" "$kvshare" "$seed" "$llama_tag" \
  "$clients" "$rounds" "$few_clients" >"$out/table.md" <<'EOF'
import datetime, json, os, re, statistics, sys

(out, cpu, kv_commit, kv_src, llama_pkg, llama_commit, gguf, G, P, S, Q, O, slots, reps, no_off, kvbin,
 seed, llama_tag, clients, rounds, few) = sys.argv[1:]
G, P, S, Q, O, slots, reps, clients, rounds, few = map(int, (G, P, S, Q, O, slots, reps, clients, rounds, few))
with_off = no_off == "0"
path = lambda name: os.path.join(out, name)
load = lambda name: json.load(open(path(name)))
readf = lambda name: open(path(name)).read().strip()
lines = lambda name: [json.loads(l) for l in open(path(name)) if l.strip()]
f = lambda x, d=1: f"{x:.{d}f}"
fa_name = {-1: "auto", 0: "off", 1: "on"}

# llama-bench: one entry per test, with every repetition's tokens/s in samples_ts.
lb = load("llama_bench.json")
pp = next(r for r in lb if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r for r in lb if r["n_gen"] > 0 and r["n_prompt"] == 0)

# kvshare prefill: control with 1 output token, so every step is a prefill step. The fastest run's rate from
# its prefill_seconds; the mean over runs from their wall times (the only per-run figure bench keeps).
(pr,) = load("kvshare_prefill.json")["runs"]
assert pr["decode_seconds"] == 0, "prefill run has decode steps"
kv_pp_best = pr["prompt_tokens"] / pr["prefill_seconds"]
kv_pp_walls = [pr["prompt_tokens"] / w for w in pr["all_wall_seconds"]]
# kvshare decode: 1 request, 16 prompt tokens, 64 outputs; the first output comes out of the prefill step,
# the other 63 from one decode step each: (outputs - requests) / decode_seconds, of the fastest run only.
(dr,) = load("kvshare_decode.json")["runs"]
kv_tg_best = (dr["output_tokens"] - dr["requests"]) / dr["decode_seconds"]

def kv_generate(name):
    log = readf(f"{name}.log")
    m = re.search(r"requests \((\d+) bad lines, (\d+) failed\) in ([0-9.]+) s", log)
    if not m or m.group(1) != "0" or m.group(2) != "0":
        raise SystemExit(f"kvshare generate ({name}) did not finish cleanly:\n{log}")
    res = lines(f"{name}.jsonl")
    prompt = sum(r["prompt_tokens"] for r in res)
    return {"wall_seconds": float(m.group(3)), "prefix_hit_fraction": sum(r["cached_tokens"] for r in res) / prompt,
            "texts": [r["text"] for r in res], "all_at_len": all(len(r["token_ids"]) == O for r in res)}

def served(name):  # either server behind openai_gsp_client.py
    r = load(f"{name}.json")
    r["texts"] = [x["text"] for x in lines(f"{name}.outputs.jsonl")]
    r["all_at_len"] = r["requests_not_at_output_len"] == 0
    return r

rounds_of = lambda read, name: [read(f"{name}.{i}") for i in range(1, rounds + 1)]
runs = {"llama": rounds_of(served, "llama_gsp_on"), "serve": rounds_of(served, "kvshare_serve_on"),
        "gen": rounds_of(kv_generate, "kvshare_gen_on"), "gen_slots": rounds_of(kv_generate, "kvshare_gen_slots_on")}
if few > 0:
    runs["llama_few"] = rounds_of(served, "llama_gsp_on_few")
    runs["serve_few"] = rounds_of(served, "kvshare_serve_on_few")
off = {}
if with_off:
    off = {"llama": served("llama_gsp_off"), "serve": served("kvshare_serve_off"), "gen": kv_generate("kvshare_gen_off")}
gj = load("kvshare_gsp.json")
kb = {("on" if r["prefix_cache"] else "off"): r for r in gj["runs"]}

med = lambda rs: statistics.median(r["wall_seconds"] for r in rs)
hit = lambda r: f"hit {100 * r['prefix_hit_fraction']:.1f}%"
def cell(rs):  # median (min–max over rounds), hit fraction of the first round
    w = [r["wall_seconds"] for r in rs]
    return f"{f(statistics.median(w), 2)} ({f(min(w), 2)}–{f(max(w), 2)}; {hit(rs[0])})" if len(w) > 1 else \
        f"{f(w[0], 2)} ({hit(rs[0])})"

rows = [
    ("prefill, pp512 (tok/s)",
     f"{f(pp['avg_ts'])} ± {f(pp['stddev_ts'])} (best {f(max(pp['samples_ts']))})",
     f"{f(statistics.mean(kv_pp_walls))} ± {f(statistics.pstdev(kv_pp_walls))} (best {f(kv_pp_best)})",
     kv_pp_best / max(pp["samples_ts"])),
    ("decode, batch 1 (tok/s)",
     f"{f(tg['avg_ts'])} ± {f(tg['stddev_ts'])} (best {f(max(tg['samples_ts']))})",
     f"best {f(kv_tg_best)}",
     kv_tg_best / max(tg["samples_ts"])),
]
shape = f"gsp {G}×{P} (S {S}, Q {Q}, O {O}), same token ids"
ll_med = med(runs["llama"])
rows.append((f"{shape}, reuse on, served: both servers behind the same {clients} clients (s)",
             cell(runs["llama"]), cell(runs["serve"]), ll_med / med(runs["serve"])))
if few > 0:
    rows.append((f"{shape}, reuse on, served: both servers behind the same {few} clients (s)",
                 cell(runs["llama_few"]), cell(runs["serve_few"]), med(runs["llama_few"]) / med(runs["serve_few"])))
rows.append((f"{shape}, reuse on, kvshare as a batch job, its defaults (s)",
             cell(runs["llama"]), cell(runs["gen"]), ll_med / med(runs["gen"])))
rows.append((f"{shape}, reuse on, kvshare as a batch job, at most {slots} sequences per step (s)",
             cell(runs["llama"]), cell(runs["gen_slots"]), ll_med / med(runs["gen_slots"])))
if with_off:
    rows.append((f"{shape}, reuse off, served (s)", cell([off["llama"]]), cell([off["serve"]]),
                 off["llama"]["wall_seconds"] / off["serve"]["wall_seconds"]))
    rows.append((f"{shape}, reuse off, batch job (s)", cell([off["llama"]]), cell([off["gen"]]),
                 off["llama"]["wall_seconds"] / off["gen"]["wall_seconds"]))
    rows.append(("gsp speedup of prefix reuse (off ÷ on; served, medians)",
                 f"{f(off['llama']['wall_seconds'] / ll_med, 2)}x",
                 f"{f(off['serve']['wall_seconds'] / med(runs['serve']), 2)}x", None))
    rows.append((f"kvshare bench gsp, same shape, its own prompts: reuse off / on (s)", "",
                 f"{f(kb['off']['wall_seconds'], 2)} / {f(kb['on']['wall_seconds'], 2)} = "
                 f"{f(gj['speedup'], 2)}x (ideal {f(gj['ideal_speedup'], 2)}x, hit {100 * kb['on']['prefix_hit_fraction']:.1f}%)",
                 None))
else:
    rows.append((f"kvshare bench gsp, same shape, its own prompts, reuse on (s)", "",
                 f"{f(kb['on']['wall_seconds'], 2)} (hit {100 * kb['on']['prefix_hit_fraction']:.1f}%)", None))
per_round = ", ".join(f"{f(l['wall_seconds'] / k['wall_seconds'], 2)}x / {f(l['wall_seconds'] / g['wall_seconds'], 2)}x"
                      for l, k, g in zip(runs["llama"], runs["serve"], runs["gen"]))

same = lambda x, y: sum(1 for p, q in zip(x, y) if p == q)
n = G * P
ref = runs["gen"][0]["texts"]
every = [r for rs in runs.values() for r in rs] + list(off.values())
checks = [f"every run of either engine, reuse on or off, against kvshare generate's first: "
          f"{sum(same(r['texts'], ref) for r in every)}/{n * len(every)}"]
if "outputs_identical" in gj:
    checks.append(f"kvshare bench --compare: {'identical' if gj['outputs_identical'] else 'DIFFERENT'}")
all_len = all(r["all_at_len"] for r in every)

date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"### kvshare vs llama.cpp, {date}")
print()
print(f"- CPU: {cpu} ({os.cpu_count()} cores; load average {readf('loadavg.start')} at the start, "
      f"{readf('loadavg.end')} at the end); both engines 2 threads, the F32 weights of `{gguf}`")
print(f"- kvshare: commit {kv_commit} (`{kvbin}`)")
print(f"- llama.cpp: commit {pp.get('build_commit', llama_commit)} (build {pp.get('build_number', '?')}) from npm "
      f"node-llama-cpp@{llama_pkg} (its llama.cpp.info.json: tag {llama_tag}), CPU backend, GGML_NATIVE "
      f"({pp.get('cpu_info', '')})")
print(f"- llama-bench `-p 512 -n 32 -t 2 -r {reps}` (flash attention {fa_name.get(pp.get('flash_attn'), pp.get('flash_attn'))}, n_ubatch "
      f"{pp.get('n_ubatch', '?')}); kvshare bench `--workload control --num-prompts 4 --input-len 512 --output-len 1 "
      f"--repeat {reps} {readf('kvshare_kv.flags')}` and `--num-prompts 1 --input-len 16 --output-len 64 --repeat {reps} "
      f"{readf('kvshare_kv.flags')}`")
print(f"- gsp, llama-server `{readf('llama_gsp_on.1.flags')}`"
      + (f" (reuse off: `... --no-cache-prompt --cache-ram 0` and `cache_prompt: false`)" if with_off else "")
      + f", {clients} concurrent clients over /v1/completions (bench/openai_gsp_client.py), arrivals interleaved "
      f"g0p0 g1p0 …, token ids in [1000, 40000) from seed {seed}; kvshare serve `{readf('kvshare_serve.flags')}` "
      f"behind the same client; kvshare `generate --input` of the same requests `{readf('kvshare_gen.flags')}` "
      f"(and `--max-num-seqs {slots}`)"
      + (" (reuse off: `--no-prefix-cache`)" if with_off else "")
      + f"; kvshare bench `{readf('kvshare_gsp.flags')}`")
print()
print("| measure | llama.cpp | kvshare | kvshare ÷ llama.cpp (speed) |")
print("|---|---|---|---|")
for name, a, b, r in rows:
    print(f"| {name} | {a} | {b} | {'' if r is None else f'{r:.2f}x'} |")
print()
print("- tok/s: llama.cpp's mean ± sd over its repetitions, best in brackets; kvshare prefill mean ± sd of "
      "prompt tokens ÷ wall time per run, best from the fastest run's prefill_seconds; kvshare decode from the "
      "fastest run's decode_seconds only. Ratios compare best with best; for gsp, llama.cpp's time ÷ kvshare's.")
print(f"- gsp times leave out model load: each server is up and warmed by one short request before the clock "
      "starts (first send to last answer); kvshare generate times its batch job alone (no warm-up). Reuse on ran "
      f"{rounds} rounds, each llama-server, kvshare serve, then both batch jobs"
      + (f", then both servers again behind {few} clients" if few > 0 else "") + "; cells give the median "
      f"(min–max over rounds), ratios compare medians. Per round, llama-server ÷ kvshare served / batch: {per_round}. "
      "Hits: llama.cpp `timings.cache_n`, kvshare `cached_tokens`.")
print(f"- outputs (text) equal: {'; '.join(checks)}; every request generated exactly {O} tokens: "
      f"{'yes' if all_len else 'NO'}.")
EOF
cat "$out/table.md"
if [ -n "$write" ]; then
  { echo; cat "$out/table.md"; } >>"$write"
  log "appended to $write"
fi
