#!/usr/bin/env python3
"""Sends the gsp (generated shared prefix) workload to an OpenAI-compatible /v1/completions server.

G groups x P prompts; each group shares a system prompt of S random tokens, each prompt adds Q random
tokens of its own; every request asks for exactly O tokens (greedy, EOS ignored). Prompts go as lists of
token ids, so the server sees exactly these tokens (no tokenizer in between). They arrive interleaved
(g0p0, g1p0, ..., g0p1, g1p1, ...) and C client threads each send the next prompt in that order as soon as
their previous one is answered. Prints one JSON object: wall time from the first send to the last answer,
token counts, the server's reported cache hits, and a digest of the outputs.

Standard library only. Used by bench/llamacpp_compare.sh against llama-server; any server that takes
token-id prompts and `ignore_eos` works (e.g. vLLM, SGLang).

  python3 bench/openai_gsp_client.py --url http://127.0.0.1:8080 --groups 4 --prompts-per-group 8 \
      --system-len 512 --question-len 64 --output-len 32 --concurrency 8
"""

import argparse
import hashlib
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def make_prompts(seed, groups, per_group, system_len, question_len, lo, hi, avoid):
    """Deterministic from the seed: the system prompts first (group order), then the questions (group-major),
    token ids uniform in [lo, hi) minus `avoid`. Returned in interleaved arrival order with (group, index)."""
    rng = random.Random(seed)

    def draw(n):
        out = []
        while len(out) < n:
            t = rng.randrange(lo, hi)
            if t not in avoid:
                out.append(t)
        return out

    systems = [draw(system_len) for _ in range(groups)]
    questions = [[draw(question_len) for _ in range(per_group)] for _ in range(groups)]
    order = []
    for p in range(per_group):
        for g in range(groups):
            order.append((g, p, systems[g] + questions[g][p]))
    return order


class Client:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise SystemExit("openai_gsp_client: only http:// URLs")
        self.host, self.port = u.hostname, u.port or 80
        self.base = u.path.rstrip("/")
        self.timeout = timeout
        self.local = threading.local()

    def post(self, path, body):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        data = json.dumps(body).encode()
        try:
            conn.request("POST", self.base + path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            self.local.conn = None
            raise
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:500].decode(errors='replace')}")
        return json.loads(payload)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", default="", help="the request's model field (llama-server ignores it)")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--prompts-per-group", type=int, default=8)
    ap.add_argument("--system-len", type=int, default=512)
    ap.add_argument("--question-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8, help="client threads, each with one request in flight")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token-lo", type=int, default=1000, help="smallest token id drawn")
    ap.add_argument("--token-hi", type=int, default=40000, help="token ids drawn are below this")
    ap.add_argument("--avoid", default="50256", help="comma-separated token ids never drawn (GPT-2's <|endoftext|>)")
    ap.add_argument("--no-cache-prompt", action="store_true", help="send cache_prompt: false (llama-server)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed requests of 8 unrelated tokens sent before the run (default 1)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per-request timeout, seconds")
    ap.add_argument("--dump-prompts", metavar="FILE",
                    help="write the requests in arrival order as JSON lines that `kvshare generate --input` takes")
    ap.add_argument("--save-outputs", metavar="FILE",
                    help="write each request's generated text in arrival order as JSON lines {\"text\": ...}")
    args = ap.parse_args()

    avoid = {int(x) for x in args.avoid.split(",") if x.strip()}
    prompts = make_prompts(args.seed, args.groups, args.prompts_per_group, args.system_len, args.question_len,
                           args.token_lo, args.token_hi, avoid)
    if args.dump_prompts:
        with open(args.dump_prompts, "w") as f:
            for _, _, toks in prompts:
                f.write(json.dumps({"prompt_token_ids": toks, "max_tokens": args.output_len, "temperature": 0,
                                    "ignore_eos": True}) + "\n")

    client = Client(args.url, args.timeout)

    def body(tokens, max_tokens):
        b = {
            "prompt": tokens,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": not args.no_cache_prompt,
            "stream": False,
        }
        if args.model:
            b["model"] = args.model
        return b

    # Warm-up: a short unrelated prompt, so first-use costs are not timed.
    wrng = random.Random(args.seed + 7919)
    for _ in range(args.warmup):
        client.post("/v1/completions", body([wrng.randrange(args.token_lo, args.token_hi) for _ in range(8)], 2))

    results = [None] * len(prompts)
    errors = []
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_i[0]
                if i >= len(prompts) or errors:
                    return
                next_i[0] += 1
            g, p, toks = prompts[i]
            t0 = time.perf_counter()
            try:
                r = client.post("/v1/completions", body(toks, args.output_len))
            except Exception as e:  # noqa: BLE001 - reported, and the run fails
                with lock:
                    errors.append(f"request {i} (g{g}p{p}): {e}")
                return
            results[i] = (t0, time.perf_counter(), r)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    if errors:
        print(json.dumps({"error": errors[:5], "failed": len(errors)}))
        sys.exit(1)

    prompt_tokens = completion_tokens = cached = 0
    short = []
    latencies = []
    digest = hashlib.sha256()
    for i, (t0, t1, r) in enumerate(results):
        usage = r.get("usage", {})
        timings = r.get("timings", {})
        pt = usage.get("prompt_tokens", len(prompts[i][2]))
        ct = usage.get("completion_tokens", 0)
        prompt_tokens += pt
        completion_tokens += ct
        # llama-server reports cache hits in timings.cache_n; OpenAI-style servers (kvshare, vLLM) in
        # usage.prompt_tokens_details.cached_tokens.
        details = usage.get("prompt_tokens_details") or {}
        cached += timings.get("cache_n", details.get("cached_tokens", 0) or 0)
        if ct != args.output_len:
            short.append((i, ct, r["choices"][0].get("finish_reason")))
        latencies.append(t1 - t0)
        digest.update(json.dumps(r["choices"][0].get("text", "")).encode())
    latencies.sort()
    if args.save_outputs:
        with open(args.save_outputs, "w") as f:
            for _, _, r in results:
                f.write(json.dumps({"text": r["choices"][0].get("text", "")}) + "\n")
    out = {
        "wall_seconds": wall,
        "requests": len(results),
        "concurrency": args.concurrency,
        "cache_prompt": not args.no_cache_prompt,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cached_prompt_tokens": cached,
        "prefix_hit_fraction": cached / prompt_tokens if prompt_tokens else 0.0,
        "requests_per_second": len(results) / wall,
        "output_tokens_per_second": completion_tokens / wall,
        "total_tokens_per_second": (prompt_tokens + completion_tokens) / wall,
        "latency_p50_seconds": latencies[len(latencies) // 2],
        "latency_max_seconds": latencies[-1],
        "requests_not_at_output_len": len(short),
        "outputs_sha256": digest.hexdigest(),
    }
    print(json.dumps(out))
    if short:
        print(f"openai_gsp_client: {len(short)} requests did not generate exactly {args.output_len} tokens, "
              f"e.g. {short[:3]} (ignore_eos not honoured?)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
