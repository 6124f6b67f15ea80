"""End-to-end test of `kvshare serve` with curl: every endpoint, field family and error status.

Run by CTest (server_curl_test); needs curl and ../shared/models/tinystories-656k (skips without it).
"""
import gzip
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

serve_util.skip_without_model()


def curl(url, body=None, method=None, headers=(), raw=None, timeout=60):
    """Runs curl; returns (status, headers dict with lower-case names, body text)."""
    with tempfile.NamedTemporaryFile() as head:
        args = ["curl", "-sS", "-N", "--max-time", str(timeout), "-D", head.name, "-o", "-", url]
        if method:
            args += ["-X", method]
        for h in headers:
            args += ["-H", h]
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        if data is not None:
            # No "Expect: 100-continue" for large bodies: the first status line read must be the answer's.
            args += ["-H", "Content-Type: application/json", "-H", "Expect:", "--data-binary", "@-"]
        out = subprocess.run(args, input=data.encode() if isinstance(data, str) else data,
                             capture_output=True, check=True)
        with open(head.name, encoding="latin-1") as f:
            lines = f.read().splitlines()
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, out.stdout.decode()


def sse_events(text):
    """The data lines of a server-sent-event stream, JSON-decoded (except [DONE])."""
    events = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def metric(text, name):
    """The value of the /metrics line that starts with `name` (labels included), as a float."""
    for line in text.split("\n"):
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no metric " + name + " in:\n" + text)


def raw_request(url, body, path="/v1/completions", headers=()):
    """A connected socket that has sent one POST of `body` (JSON) to the server at `url`."""
    host, port = url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    head = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        path, len(data))
    head += "".join(h + "\r\n" for h in headers)
    s = socket.create_connection((host, int(port)))
    s.sendall(head.encode() + b"\r\n" + data)
    return s


def read_one_answer(sock):
    """Reads one HTTP answer with a Content-Length from `sock` (and nothing after it); returns its bytes."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            re.search(rb"Content-Length: (\d+)", answer).group(1)):
        chunk = sock.recv(65536)
        assert chunk, "the connection ended before the answer did: %r" % answer
        answer += chunk
    return answer


def reset(sock):
    """Closes `sock` with an RST rather than a FIN (SO_LINGER 0), as a killed or timed-out client may."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Trickler:
    """Connections that send a request's first line, then one header byte every 0.3 s, never ending it."""

    def __init__(self, url, count):
        host, port = url.split("//")[1].split(":")
        self.socks = [socket.create_connection((host, int(port))) for _ in range(count)]
        for s in self.socks:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(0.3):
            for s in self.socks:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass

    def close(self):
        self.stopped.set()
        self.thread.join()
        for s in self.socks:
            s.close()


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = serve_util.Server("--served-model-name", "tiny", "--api-key", "sekret")
        cls.url = cls.server.url
        cls.auth = ["Authorization: Bearer sekret"]

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop(signal.SIGINT)
        assert code == 0, "".join(cls.server.log)

    def post(self, path, body=None, **kw):
        return curl(self.url + path, body, method="POST", headers=kw.pop("headers", self.auth), **kw)

    def get(self, path, **kw):
        return curl(self.url + path, headers=kw.pop("headers", self.auth), **kw)

    def assert_error(self, result, status, param=None, contains=None):
        code, _, body = result
        self.assertEqual(code, status, body)
        err = json.loads(body)["error"]
        self.assertTrue(err["message"])
        if param is not None:
            self.assertEqual(err["param"], param, err)
        if contains is not None:
            self.assertIn(contains, err["message"])
        return err

    # --- endpoints ---------------------------------------------------------------------------------------

    def test_health_version_models(self):
        self.assertEqual(self.get("/health")[0], 200)
        self.assertEqual(self.get("/version")[0], 200)
        code, _, body = self.get("/v1/models")
        self.assertEqual(code, 200)
        models = json.loads(body)
        self.assertEqual(models["object"], "list")
        self.assertEqual(models["data"][0]["id"], "tiny")
        self.assertEqual(models["data"][0]["max_model_len"], 512)

    def test_tokenize_and_detokenize(self):
        code, _, body = self.post("/tokenize", {"prompt": "Once upon a time"})
        self.assertEqual(code, 200, body)
        t = json.loads(body)
        self.assertEqual(t["count"], len(t["tokens"]))
        self.assertEqual(t["tokens"][0], 1)  # BOS, added by default
        self.assertEqual(t["max_model_len"], 512)
        no_bos = json.loads(self.post("/tokenize", {"prompt": "Once upon a time", "add_special_tokens": False})[2])
        self.assertEqual(no_bos["tokens"], t["tokens"][1:])
        code, _, body = self.post("/detokenize", {"tokens": no_bos["tokens"]})
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["prompt"], "Once upon a time")
        chat = json.loads(self.post("/tokenize", {"messages": [{"role": "user", "content": "Hi"}]})[2])
        self.assertGreater(chat["count"], 3)
        self.assert_error(self.post("/detokenize", {"tokens": [999999]}), 400, "tokens")
        self.assert_error(self.post("/tokenize", {"text": "x"}), 400, "prompt")

    def test_completion(self):
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
        code, _, text = self.post("/v1/completions", body)
        self.assertEqual(code, 200, text)
        r = json.loads(text)
        self.assertEqual(r["object"], "text_completion")
        self.assertTrue(r["id"].startswith("cmpl-"))
        self.assertEqual(r["model"], "tiny")
        choice = r["choices"][0]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertTrue(choice["text"])
        self.assertEqual(r["usage"]["completion_tokens"], 12)
        prompt_tokens = json.loads(self.post("/tokenize", {"prompt": "Once upon a time"})[2])["count"]
        self.assertEqual(r["usage"]["prompt_tokens"], prompt_tokens)
        self.assertEqual(r["usage"]["total_tokens"], prompt_tokens + 12)
        # The CLI gives the same greedy text for the same prompt.
        cli = subprocess.run([serve_util.kvshare_bin(), "generate", "--model", serve_util.MODEL, "--prompt",
                              "Once upon a time", "--max-tokens", "12", "--temperature", "0"],
                             capture_output=True, text=True, check=True)
        self.assertIn(choice["text"], cli.stdout)

    def test_completion_prompt_forms_n_echo_logprobs(self):
        ids = json.loads(self.post("/tokenize", {"prompt": "The dog"})[2])["tokens"]
        r = json.loads(self.post("/v1/completions", {"prompt": ["The cat", "The dog"], "max_tokens": 4,
                                                      "temperature": 0})[2])
        self.assertEqual([c["index"] for c in r["choices"]], [0, 1])
        by_ids = json.loads(self.post("/v1/completions", {"prompt": ids, "max_tokens": 4, "temperature": 0})[2])
        self.assertEqual(by_ids["choices"][0]["text"], r["choices"][1]["text"])
        nested = json.loads(self.post("/v1/completions", {"prompt": [ids, ids], "max_tokens": 4,
                                                           "temperature": 0})[2])
        self.assertEqual(len(nested["choices"]), 2)
        self.assertEqual(nested["usage"]["prompt_tokens"], 2 * len(ids))

        r = json.loads(self.post("/v1/completions", {"prompt": "The cat", "max_tokens": 6, "n": 3, "seed": 7,
                                                      "temperature": 1.0})[2])
        self.assertEqual(sorted(c["index"] for c in r["choices"]), [0, 1, 2])
        self.assertEqual(r["usage"]["completion_tokens"], sum(6 for _ in range(3)))

        r = json.loads(self.post("/v1/completions", {"prompt": "The cat", "max_tokens": 3, "temperature": 0,
                                                      "echo": True, "logprobs": 2})[2])
        c = r["choices"][0]
        self.assertTrue(c["text"].startswith("The cat"))
        lp = c["logprobs"]
        prompt_tokens = r["usage"]["prompt_tokens"]  # echo lists the prompt's tokens first
        self.assertEqual(len(lp["tokens"]), prompt_tokens + 3)
        self.assertEqual(len(lp["token_logprobs"]), prompt_tokens + 3)
        for alts, chosen in zip(lp["top_logprobs"][prompt_tokens:], lp["token_logprobs"][prompt_tokens:]):
            self.assertEqual(len(alts), 2)
            self.assertAlmostEqual(max(alts.values()), chosen, places=5)  # greedy picks the likeliest
            self.assertLessEqual(chosen, 0.0)

    def test_echo_logprobs_list_the_prompt_tokens(self):
        prompt = "Once upon a time there was a little cat"
        ids = json.loads(self.post("/tokenize", {"prompt": prompt})[2])["tokens"]
        body = {"prompt": prompt, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": 2}
        code, _, text = self.post("/v1/completions", body)
        self.assertEqual(code, 200, text)
        lp = json.loads(text)["choices"][0]["logprobs"]
        self.assertEqual(len(lp["tokens"]), len(ids) + 3)
        self.assertIsNone(lp["token_logprobs"][0])  # the first prompt token has no context
        self.assertIsNone(lp["top_logprobs"][0])
        for alts, chosen in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:]):
            self.assertEqual(len(alts), 2)
            self.assertLessEqual(chosen, 0.0)
            self.assertGreaterEqual(max(alts.values()), chosen)
        self.assertEqual(lp["text_offset"][0], 0)
        # Each prompt token's logprob is the raw logprob of that token generated after the tokens before it
        # (a +100 logit_bias makes it the choice; logprobs are taken before any bias), bit for bit.
        for p in range(1, len(ids)):
            r = json.loads(self.post("/v1/completions", {"prompt": ids[:p], "max_tokens": 1, "temperature": 0,
                                                          "logprobs": 0, "logit_bias": {str(ids[p]): 100}})[2])
            gen = r["choices"][0]["logprobs"]
            self.assertEqual(gen["tokens"][0], lp["tokens"][p])
            self.assertEqual(gen["token_logprobs"][0], lp["token_logprobs"][p], f"prompt token {p}")
        # Again, with the prompt now cached: the same bits (the positions are computed, not served from cache).
        again = json.loads(self.post("/v1/completions", body)[2])
        self.assertEqual(again["choices"][0]["logprobs"], lp)
        self.assertEqual(again["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        # n > 1: every choice lists the prompt's logprobs.
        r = json.loads(self.post("/v1/completions", dict(body, n=2, temperature=1.0, seed=3))[2])
        for c in r["choices"]:
            self.assertEqual(c["logprobs"]["token_logprobs"][:len(ids)], lp["token_logprobs"][:len(ids)])

    def test_prompt_logprobs_as_vllm_gives_them(self):
        prompt = "Once upon a time there was a little cat"
        ids = json.loads(self.post("/tokenize", {"prompt": prompt})[2])["tokens"]
        echo = json.loads(self.post("/v1/completions", {"prompt": prompt, "max_tokens": 1, "echo": True,
                                                         "logprobs": 3})[2])["choices"][0]["logprobs"]
        code, _, text = self.post("/v1/completions", {"prompt": prompt, "max_tokens": 2, "n": 2, "seed": 1,
                                                      "prompt_logprobs": 3})
        self.assertEqual(code, 200, text)
        choices = json.loads(text)["choices"]
        plp = choices[0]["prompt_logprobs"]
        self.assertEqual(choices[1]["prompt_logprobs"], plp)  # every choice of the prompt
        self.assertEqual(len(plp), len(ids))
        self.assertIsNone(plp[0])
        for p in range(1, len(ids)):
            at = plp[p]
            mine = at[str(ids[p])]
            # The same numbers echo gives, by token id, with ranks; the prompt's token is in it with its own rank.
            self.assertEqual(mine["logprob"], echo["token_logprobs"][p], p)
            self.assertEqual(mine["decoded_token"], echo["tokens"][p])
            top = sorted((v for v in at.values() if v["rank"] <= 3), key=lambda v: v["rank"])
            self.assertEqual([v["rank"] for v in top], [1, 2, 3])
            self.assertEqual({v["decoded_token"]: v["logprob"] for v in top}, echo["top_logprobs"][p])
            if mine["rank"] <= 3:  # among the likeliest: its place there
                self.assertEqual(top[mine["rank"] - 1]["decoded_token"], mine["decoded_token"])
            else:
                self.assertTrue(all(v["logprob"] >= mine["logprob"] for v in top))
            self.assertLessEqual(len(at), 4)
        # Chat: one list beside the choices, over the rendered prompt.
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "prompt_logprobs": 0}
        r = json.loads(self.post("/v1/chat/completions", chat)[2])
        rendered = json.loads(self.post("/tokenize", {"messages": chat["messages"]})[2])["tokens"]
        self.assertEqual(len(r["prompt_logprobs"]), len(rendered))
        self.assertEqual([list(d) for d in r["prompt_logprobs"][1:]], [[str(t)] for t in rendered[1:]])
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "prompt_logprobs": 1, "stream": True}), 400,
                          "prompt_logprobs", contains="not available when stream is true")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "prompt_logprobs": -1}), 400,
                          "prompt_logprobs", contains="not supported")

    def test_return_token_ids_as_vllm_gives_them(self):
        prompt = "Once upon a time"
        ids = json.loads(self.post("/tokenize", {"prompt": prompt})[2])["tokens"]
        body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "return_token_ids": True, "logprobs": 0,
                "return_tokens_as_token_ids": True}
        r = json.loads(self.post("/v1/completions", body)[2])
        c = r["choices"][0]
        self.assertEqual(c["prompt_token_ids"], ids)
        self.assertEqual(len(c["token_ids"]), r["usage"]["completion_tokens"])
        self.assertEqual(json.loads(self.post("/detokenize", {"tokens": c["token_ids"]})[2])["prompt"].strip(),
                         c["text"].strip())
        self.assertEqual(c["logprobs"]["tokens"], ["token_id:%d" % t for t in c["token_ids"]])
        # Streamed: the events' ids put together are the whole response's; the prompt's come once.
        events = sse_events(self.post("/v1/completions", dict(body, stream=True))[2])[:-1]
        self.assertEqual([t for e in events for t in e["choices"][0]["token_ids"]], c["token_ids"])
        self.assertEqual([e["choices"][0].get("prompt_token_ids") for e in events],
                         [ids] + [None] * (len(events) - 1))
        # Chat: the rendered prompt's ids beside the choices.
        msgs = [{"role": "user", "content": "Hi"}]
        chat = json.loads(self.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 4,
                                                             "return_token_ids": True})[2])
        self.assertEqual(chat["prompt_token_ids"], json.loads(self.post("/tokenize", {"messages": msgs})[2])["tokens"])
        self.assertEqual(len(chat["choices"][0]["token_ids"]), chat["usage"]["completion_tokens"])
        plain = json.loads(self.post("/v1/completions", {"prompt": prompt, "max_tokens": 2})[2])
        self.assertNotIn("token_ids", plain["choices"][0])

    def test_stop_token_ids(self):
        body = {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0, "ignore_eos": True,
                "return_token_ids": True}
        whole = json.loads(self.post("/v1/completions", body)[2])["choices"][0]
        ids = whole["token_ids"]
        stop = ids[3]
        first = ids.index(stop)  # the greedy run stops at the first time it draws the stop token
        r = json.loads(self.post("/v1/completions", dict(body, stop_token_ids=[stop]))[2])
        c = r["choices"][0]
        self.assertEqual(c["finish_reason"], "stop")
        self.assertEqual(c["stop_reason"], stop)
        self.assertEqual(c["token_ids"], ids[:first + 1])  # as vLLM: the stop token is generated ...
        self.assertEqual(r["usage"]["completion_tokens"], first + 1)
        # ... but not written
        self.assertEqual(c["text"], json.loads(self.post("/detokenize", {"tokens": ids[:first]})[2])["prompt"])

    def test_add_special_tokens_and_unsupported_vllm_fields(self):
        # vLLM's add_special_tokens: a completion's text gets the tokenizer's BOS unless false; a chat's rendered
        # prompt gets none (its template writes what it wants) unless true.
        prompt = "Once upon a time"
        with_bos = json.loads(self.post("/tokenize", {"prompt": prompt})[2])["tokens"]
        self.assertEqual(with_bos[0], 1)
        for add, want in [(None, with_bos), (True, with_bos), (False, with_bos[1:])]:
            body = {"prompt": prompt, "max_tokens": 1, "return_token_ids": True}
            if add is not None:
                body["add_special_tokens"] = add
            r = json.loads(self.post("/v1/completions", body)[2])
            self.assertEqual(r["choices"][0]["prompt_token_ids"], want, add)
        msgs = [{"role": "user", "content": "Hi"}]
        rendered = json.loads(self.post("/tokenize", {"messages": msgs})[2])["tokens"]
        self.assertEqual(rendered[0], 1)  # the test's template writes BOS; add_special_tokens adds a second, as vLLM
        for add, want in [(None, rendered), (True, [1] + rendered)]:
            body = {"messages": msgs, "max_tokens": 1, "return_token_ids": True}
            if add is not None:
                body["add_special_tokens"] = add
            r = json.loads(self.post("/v1/chat/completions", body)[2])
            self.assertEqual(r["prompt_token_ids"], want, add)
            tokenized = json.loads(self.post("/tokenize", {k: v for k, v in body.items() if k != "max_tokens"})[2])
            self.assertEqual(tokenized["tokens"], want, add)  # /tokenize encodes a chat as the endpoint does
        # An empty prompt is BOS alone either way; truncation keeps the BOS the tokenizer added, in a chat too.
        for add in (True, False):
            r = json.loads(self.post("/v1/completions", {"prompt": "", "max_tokens": 1, "return_token_ids": True,
                                                          "add_special_tokens": add})[2])
            self.assertEqual((r["choices"][0]["prompt_token_ids"], r["usage"]["prompt_tokens"]), ([1], 1), add)
        long_msgs = [{"role": "user", "content": "word " * 100}]
        full = json.loads(self.post("/tokenize", {"messages": long_msgs, "add_special_tokens": True})[2])["tokens"]
        r = json.loads(self.post("/v1/chat/completions", {"messages": long_msgs, "max_tokens": 1, "return_token_ids": True,
                                                          "add_special_tokens": True, "truncate_prompt_tokens": 20})[2])
        self.assertEqual(r["prompt_token_ids"], [1] + full[-19:])
        r = json.loads(self.post("/v1/completions", {"prompt": "word " * 100, "max_tokens": 1, "return_token_ids": True,
                                                     "add_special_tokens": False, "truncate_prompt_tokens": 20})[2])
        no_bos = json.loads(self.post("/tokenize", {"prompt": "word " * 100, "add_special_tokens": False})[2])["tokens"]
        self.assertEqual(r["choices"][0]["prompt_token_ids"], no_bos[-20:])
        # Constrained decoding other than a choice or JSON, and beam search, are refused, not ignored.
        for field, value in [("guided_grammar", "root ::= \"a\""), ("guided_regex", "a+"),
                             ("structured_outputs", {"regex": "a+"}), ("use_beam_search", True)]:
            self.assert_error(self.post("/v1/completions", {"prompt": "x", field: value}), 400, field,
                              contains="not supported")

    def test_streamed_logprobs_equal_the_whole_response(self):
        body = {"prompt": "The little dog ran", "max_tokens": 12, "temperature": 0, "logprobs": 2, "echo": True,
                "ignore_eos": True}
        whole = json.loads(self.post("/v1/completions", body)[2])["choices"][0]["logprobs"]
        events = sse_events(self.post("/v1/completions", dict(body, stream=True))[2])
        self.assertEqual(events[-1], "[DONE]")
        joined = {k: [] for k in whole}
        for e in events[:-1]:
            lp = e["choices"][0]["logprobs"]
            if lp is not None:
                for k in joined:
                    joined[k] += lp[k]
        self.assertEqual(joined, whole)
        # Chat: the same.
        msgs = [{"role": "user", "content": "A story"}]
        chat = {"messages": msgs, "max_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": 2,
                "ignore_eos": True}
        whole = json.loads(self.post("/v1/chat/completions", chat)[2])["choices"][0]["logprobs"]["content"]
        events = sse_events(self.post("/v1/chat/completions", dict(chat, stream=True))[2])
        joined = []
        for e in events[:-1]:
            lp = e["choices"][0].get("logprobs")
            if lp is not None:
                joined += lp["content"]
        self.assertEqual(joined, whole)

    def test_best_of(self):
        body = {"prompt": "The cat", "max_tokens": 8, "temperature": 1.0, "seed": 11, "ignore_eos": True}
        all4 = json.loads(self.post("/v1/completions", dict(body, n=4, logprobs=0))[2])["choices"]
        cumulative = sorted(((sum(c["logprobs"]["token_logprobs"]), c["index"], c["text"]) for c in all4),
                            key=lambda x: (-x[0], x[1]))
        code, _, text = self.post("/v1/completions", dict(body, n=2, best_of=4))
        self.assertEqual(code, 200, text)
        r = json.loads(text)
        self.assertEqual([c["index"] for c in r["choices"]], [0, 1])
        self.assertEqual([c["text"] for c in r["choices"]], [t for _, _, t in cumulative[:2]])
        self.assertIsNone(r["choices"][0]["logprobs"], "logprobs were not asked for")
        self.assertEqual(r["usage"]["completion_tokens"], 4 * 8, "every candidate's tokens count")
        with_lp = json.loads(self.post("/v1/completions", dict(body, n=1, best_of=4, logprobs=1))[2])["choices"]
        self.assertEqual(len(with_lp), 1)
        self.assertAlmostEqual(sum(with_lp[0]["logprobs"]["token_logprobs"]), cumulative[0][0], places=4)
        self.assert_error(self.post("/v1/completions", dict(body, n=3, best_of=2)), 400, "best_of", "at least n")
        self.assert_error(self.post("/v1/completions", dict(body, best_of=2, stream=True)), 400, "best_of")

    def test_stop_strings_and_seed(self):
        base = {"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0}
        full = json.loads(self.post("/v1/completions", base)[2])["choices"][0]["text"]
        word = full.split()[3]
        r = json.loads(self.post("/v1/completions", dict(base, stop=[word]))[2])["choices"][0]
        self.assertEqual(r["finish_reason"], "stop")
        self.assertEqual(r["text"], full[:full.index(word)])
        self.assertEqual(r["stop_reason"], word)
        seeded = dict(base, temperature=0.9, seed=1234)
        a = json.loads(self.post("/v1/completions", seeded)[2])["choices"][0]["text"]
        b = json.loads(self.post("/v1/completions", seeded)[2])["choices"][0]["text"]
        self.assertEqual(a, b)

    def test_allowed_token_ids_and_skip_special_tokens(self):
        # vLLM's allowed_token_ids: only the listed tokens are sampled, even at temperature 1.
        ids = json.loads(self.post("/tokenize", {"prompt": "cat dog", "add_special_tokens": False})[2])["tokens"]
        echo = json.loads(self.post("/v1/completions", {"prompt": ids, "max_tokens": 1, "echo": True,
                                                         "logprobs": 0})[2])
        words = echo["choices"][0]["logprobs"]["tokens"][:len(ids)]  # the pieces logprobs name these tokens by
        self.assertEqual(len(set(words)), len(ids), words)
        code, _, text = self.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 12, "seed": 3,
                                                      "temperature": 1.0, "allowed_token_ids": ids, "logprobs": 0})
        self.assertEqual(code, 200, text)
        tokens = json.loads(text)["choices"][0]["logprobs"]["tokens"]
        self.assertEqual(len(tokens), 12)
        self.assertTrue(set(tokens) <= set(words), (tokens, words))
        # Without the restriction the same seeded request says something else.
        free = json.loads(self.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 12, "seed": 3,
                                                        "temperature": 1.0, "logprobs": 0})[2])
        self.assertFalse(set(free["choices"][0]["logprobs"]["tokens"]) <= set(words))
        # skip_special_tokens: <|start_story|> (id 1, special) sampled three times is in the text only when false.
        only_bos = {"prompt": "Once upon a time", "max_tokens": 3, "allowed_token_ids": [1], "temperature": 0}
        r = json.loads(self.post("/v1/completions", only_bos)[2])["choices"][0]
        self.assertEqual((r["text"], r["finish_reason"]), ("", "length"))
        r = json.loads(self.post("/v1/completions", dict(only_bos, skip_special_tokens=False))[2])["choices"][0]
        self.assertEqual(r["text"], "<|start_story|>" * 3)
        chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "allowed_token_ids": [1],
                "skip_special_tokens": False}
        r = json.loads(self.post("/v1/chat/completions", chat)[2])["choices"][0]
        self.assertEqual(r["message"]["content"], "<|start_story|>" * 2)
        # Bad sets: empty, outside the vocabulary, not ids, or only the EOS while min_tokens forbids it.
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "allowed_token_ids": []}), 400,
                          "allowed_token_ids", contains="must not be empty")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "allowed_token_ids": ["a"]}), 400,
                          "allowed_token_ids")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "allowed_token_ids": [99999]}), 400,
                          "allowed_token_ids", contains="outside the vocabulary")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "allowed_token_ids": [2], "min_tokens": 1}),
                          400, "allowed_token_ids", contains="min_tokens")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "skip_special_tokens": "no"}), 400,
                          "skip_special_tokens")

    def test_bad_words(self):
        # vLLM's bad_words: a word the greedy reply holds is not said when banned, on both endpoints. A ban is on the
        # word's tokens, so the replies are compared by their tokens. stories260K's tokenizer is Llama 2's kind
        # ("▁word"); tinystories-656k's puts spaces at the ends of its tokens, where a word alone rarely matches.
        gguf = os.path.join(serve_util.SHARED, "models", "stories260K", "stories260K.gguf")
        with serve_util.Server(model=gguf) as s:
            def post(path, body):
                code, _, text = curl(s.url + path, body)
                self.assertEqual(code, 200, text)
                return json.loads(text)

            for path, body, tokens_of in [
                    ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0,
                                         "logprobs": 0},
                     lambda r: r["choices"][0]["logprobs"]["tokens"]),
                    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story"}],
                                              "max_tokens": 30, "temperature": 0, "logprobs": True},
                     lambda r: [t["token"] for t in r["choices"][0]["logprobs"]["content"]])]:
                free = tokens_of(post(path, body))
                word = next(w for w in "".join(free).split() if w.isalpha() and len(w) > 2 and " " + w in free)
                said = tokens_of(post(path, dict(body, bad_words=[word])))
                self.assertNotIn(" " + word, said, (word, free, said))
                at = free.index(" " + word)
                self.assertEqual(said[:at], free[:at])  # the same until the banned word
                self.assertNotEqual(said[at], free[at])
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "bad_words": "darn"}), 400, "bad_words",
                          contains="list of strings")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "bad_words": ["a", "\n"]}), 400, "bad_words",
                          contains="bad_words[1] is empty or only whitespace")

    def test_guided_choice(self):
        # The reply is one of the choices, on both endpoints, streamed or not, in both of vLLM's spellings; with n = 6
        # at a high temperature more than one choice comes back.
        choices = ["positive", "negative", "neutral", "mixed feelings"]
        for path, body, text_of in [
                ("/v1/completions", {"prompt": "The soup was cold. Sentiment:"}, lambda c: c["text"]),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "The soup was cold. Sentiment?"}]},
                 lambda c: c["message"]["content"])]:
            for constraint in [{"guided_choice": choices}, {"structured_outputs": {"choice": choices}}]:
                r = json.loads(self.post(path, dict(body, **constraint, n=6, temperature=1.8, seed=4,
                                                    max_tokens=20))[2])
                texts = [text_of(c) for c in r["choices"]]
                self.assertTrue(all(t in choices for t in texts), texts)
                self.assertEqual({c["finish_reason"] for c in r["choices"]}, {"stop"})
                self.assertGreater(len(set(texts)), 1, texts)
        code, _, text = self.post("/v1/completions", {"prompt": "Sentiment:", "guided_choice": choices, "stream": True,
                                                      "temperature": 0, "max_tokens": 20})
        self.assertEqual(code, 200, text)
        streamed = "".join(e["choices"][0]["text"] for e in sse_events(text)
                           if isinstance(e, dict) and e.get("choices"))
        self.assertIn(streamed, choices)
        whole = json.loads(self.post("/v1/completions", {"prompt": "Sentiment:", "guided_choice": choices,
                                                         "temperature": 0, "max_tokens": 20})[2])
        self.assertEqual(whole["choices"][0]["text"], streamed)
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "guided_choice": []}), 400, "guided_choice",
                          contains="guided_choice must hold at least one string")
        # A choice this model's tokens cannot spell ("{" is not in its vocabulary): the engine's refusal names the
        # field as it was given.
        for field, constraint in [("guided_choice", {"guided_choice": ["{x}"]}),
                                  ("structured_outputs.choice", {"structured_outputs": {"choice": ["{x}"]}})]:
            self.assert_error(self.post("/v1/completions", dict({"prompt": ["a", "b"]}, **constraint)), 400, field,
                              contains="cannot be spelled")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "guided_choice": ["a"], "min_tokens": 2}), 400,
                          "min_tokens", contains="min_tokens cannot be combined with choice")

    def test_json_mode(self):
        # This test model's vocabulary has no "{" token: refused, saying so and naming the field as it was given.
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "response_format": {"type": "json_object"}}),
                          400, "response_format", contains="has no token for: {")
        self.assert_error(self.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                             "structured_outputs": {"json_object": True}}),
                          400, "structured_outputs.json_object", contains="has no token for: {")
        # stories260K writes any byte. The reply is a JSON object, on both endpoints, in OpenAI's and vLLM's
        # spellings; streamed equals whole. A few tokens only ({ } " : 1), so that the tiny model closes its objects:
        # each that stops parses.
        with serve_util.Server(model=os.path.join(serve_util.SHARED, "models", "stories260K", "stories260K.gguf")) as s:
            def post(path, body):
                return curl(s.url + path, body)
            few = []
            for piece in ["{", "}", '"', ":", "1"]:
                # SentencePiece writes "▁" before the text: the piece is the last token.
                token = json.loads(post("/tokenize", {"prompt": piece, "add_special_tokens": False})[2])["tokens"][-1]
                self.assertEqual(json.loads(post("/detokenize", {"tokens": [token]})[2])["prompt"], piece)
                few.append(token)
            whole_objects = 0
            for path, body, text_of in [
                    ("/v1/completions", {"prompt": "As JSON:"}, lambda c: c["text"]),
                    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "As JSON?"}]},
                     lambda c: c["message"]["content"])]:
                for constraint in [{"response_format": {"type": "json_object"}},
                                   {"structured_outputs": {"json_object": True, "disable_any_whitespace": True}}]:
                    code, _, out = post(path, dict(body, **constraint, n=6, temperature=1.0, seed=4, max_tokens=40,
                                                   allowed_token_ids=few))
                    self.assertEqual(code, 200, out)
                    for c in json.loads(out)["choices"]:
                        text = text_of(c)
                        self.assertTrue(text.lstrip().startswith("{"), text)
                        if c["finish_reason"] == "stop":
                            self.assertIsInstance(json.loads(text), dict)
                            whole_objects += 1
                        else:
                            self.assertEqual(c["finish_reason"], "length")
            self.assertGreater(whole_objects, 4)
            body = {"prompt": "Give JSON:", "structured_outputs": {"json_object": True, "disable_any_whitespace": True},
                    "temperature": 0, "max_tokens": 24}
            code, _, text = post("/v1/completions", dict(body, stream=True))
            self.assertEqual(code, 200, text)
            streamed = "".join(e["choices"][0]["text"] for e in sse_events(text)
                               if isinstance(e, dict) and e.get("choices"))
            self.assertEqual(json.loads(post("/v1/completions", body)[2])["choices"][0]["text"], streamed)
            self.assertTrue(streamed.startswith("{"), streamed)
            self.check_json_schema(post)
            self.check_tool_choice(post)
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "response_format": {"type": "json_object"},
                                                        "guided_choice": ["a"]}), 400, "response_format",
                          contains="cannot both be given")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "response_format": {"type": "json_object"},
                                                        "min_tokens": 2}), 400,
                          "min_tokens", contains="min_tokens cannot be combined with json_object")

    def check_tool_choice(self, post):
        # tool_choice naming a function, or "required": the reply's tool_calls hold arguments the reference validator
        # takes under the function's parameters (a Pydantic-style $defs among them), content is null; streamed, the
        # name comes first and the argument pieces add up to the whole reply's. Refusals name tools or tool_choice.
        import jsonschema
        weather = {"type": "object", "properties": {"city": {"$ref": "#/$defs/City"},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                   "required": ["city", "days"], "$defs": {"City": {"type": "string", "maxLength": 8}}}
        zone = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}},
                 {"type": "function", "function": {"name": "get_time", "parameters": zone}}]
        body = {"messages": [{"role": "user", "content": "Weather?"}], "tools": tools, "max_tokens": 80,
                "temperature": 1.0, "seed": 3, "structured_outputs": {"disable_any_whitespace": True},
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
        code, _, out = post("/v1/chat/completions", dict(body, n=4))
        self.assertEqual(code, 200, out)
        for c in json.loads(out)["choices"]:
            self.assertEqual((c["finish_reason"], c["message"]["content"]), ("stop", None), c)
            [call] = c["message"]["tool_calls"]
            self.assertEqual((call["type"], call["function"]["name"]), ("function", "get_weather"))
            self.assertTrue(call["id"].startswith("call_"))
            jsonschema.validate(json.loads(call["function"]["arguments"]), weather)
        whole = json.loads(post("/v1/chat/completions", body)[2])["choices"][0]["message"]["tool_calls"][0]
        code, _, text = post("/v1/chat/completions", dict(body, stream=True))
        deltas = [e["choices"][0]["delta"] for e in sse_events(text) if isinstance(e, dict) and e.get("choices")]
        calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
        self.assertTrue(calls[0]["id"].startswith("call_"))  # (the first delta: id, type, name)
        self.assertEqual((calls[0]["type"], calls[0]["function"]["name"]), ("function", "get_weather"))
        self.assertTrue(all(list(c) == ["index", "function"] for c in calls[1:]), calls)
        self.assertEqual("".join(c["function"]["arguments"] for c in calls), whole["function"]["arguments"])
        # "required", with "]" made likely so that the tiny model closes its list of calls.
        close = json.loads(post("/tokenize", {"prompt": "]", "add_special_tokens": False})[2])["tokens"][-1]
        required = dict(body, tool_choice="required", logit_bias={str(close): 30}, n=4, seed=7)
        code, _, out = post("/v1/chat/completions", required)
        self.assertEqual(code, 200, out)
        made = 0
        for c in json.loads(out)["choices"]:
            self.assertEqual(c["finish_reason"], "tool_calls", c)
            for call in c["message"]["tool_calls"]:
                schema = weather if call["function"]["name"] == "get_weather" else zone
                jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
                made += 1
        self.assertGreaterEqual(made, 4)
        code, _, text = post("/v1/chat/completions", dict(required, n=1, stream=True))
        events = [e for e in sse_events(text) if isinstance(e, dict) and e.get("choices")]
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(events[-1]["choices"][0]["delta"]["tool_calls"][0]["index"], 0)
        for bad, param, words in [
                (dict(body, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice",
                 '"nope", which tools does not list'),
                (dict(body, tool_choice="required", tools=[]), "tool_choice", "needs tools"),
                (dict(body, tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
                    "type": "object", "properties": {"s": {"type": "string", "format": "uri"}}}}}]), "tools",
                 'the format "uri" is not supported'),
                (dict(body, response_format={"type": "json_object"}), "tool_choice", "cannot be combined")]:
            code, _, out = post("/v1/chat/completions", bad)
            self.assertEqual(code, 400, out)
            error = json.loads(out)["error"]
            self.assertEqual(error["param"], param, error)
            self.assertIn(words, error["message"])

    def check_json_schema(self, post):
        # A JSON schema, in OpenAI's response_format and vLLM's structured_outputs.json and guided_json (a schema or
        # its text): each reply that stops is JSON the reference validator (the jsonschema package) takes, with its
        # keys in the schema's order. Streamed equals whole.
        import jsonschema
        schema = {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "mood": {"enum": ["happy", "sad"]}, "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2}},
            "required": ["name", "mood"]}
        valid = 0
        for path, body, text_of in [
                ("/v1/completions", {"prompt": "As JSON:"}, lambda c: c["text"]),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "As JSON?"}]},
                 lambda c: c["message"]["content"])]:
            for constraint in [{"response_format": {"type": "json_schema",
                                                    "json_schema": {"name": "person", "schema": schema}}},
                               {"structured_outputs": {"json": schema, "disable_any_whitespace": True}},
                               {"guided_json": json.dumps(schema)}]:
                code, _, out = post(path, dict(body, **constraint, n=4, temperature=1.0, seed=5, max_tokens=80))
                self.assertEqual(code, 200, out)
                for c in json.loads(out)["choices"]:
                    if c["finish_reason"] != "stop":
                        self.assertEqual(c["finish_reason"], "length")
                        continue
                    value = json.loads(text_of(c))
                    jsonschema.validate(value, schema)
                    self.assertEqual(list(value), [k for k in schema["properties"] if k in value])
                    valid += 1
        self.assertGreater(valid, 12)
        body = {"prompt": "x", "structured_outputs": {"json": schema}, "temperature": 0, "max_tokens": 60}
        code, _, text = post("/v1/completions", dict(body, stream=True))
        self.assertEqual(code, 200, text)
        streamed = "".join(e["choices"][0]["text"] for e in sse_events(text)
                           if isinstance(e, dict) and e.get("choices"))
        self.assertEqual(json.loads(post("/v1/completions", body)[2])["choices"][0]["text"], streamed)
        # What a schema may not say: a 400 naming the field as given, the keyword and where it stands.
        code, _, out = post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}}}}})
        self.assertEqual(code, 400, out)
        error = json.loads(out)["error"]
        self.assertEqual(error["param"], "response_format")
        self.assertIn('the keyword "multipleOf" is not supported', error["message"])
        self.assertIn("(at /properties/n)", error["message"])
        code, _, out = post("/v1/completions", {"prompt": "x", "structured_outputs": {"json": "{"}})
        self.assertEqual((code, json.loads(out)["error"]["param"]), (400, "structured_outputs.json"), out)
        code, _, out = post("/v1/completions", {"prompt": "x", "guided_json": {"type": "string"},
                                                "response_format": {"type": "json_object"}})
        self.assertEqual(code, 400, out)
        self.assertIn("ask for JSON once", json.loads(out)["error"]["message"])

    def test_streaming_completion(self):
        body = {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0}
        whole = json.loads(self.post("/v1/completions", body)[2])["choices"][0]["text"]
        code, hdrs, text = self.post("/v1/completions", dict(body, stream=True,
                                                            stream_options={"include_usage": True}))
        self.assertEqual(code, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/event-stream"))
        events = sse_events(text)
        self.assertEqual(events[-1], "[DONE]")
        usage = events[-2]
        self.assertEqual(usage["choices"], [])
        self.assertEqual(usage["usage"]["completion_tokens"], 10)
        chunks = events[:-2]
        self.assertEqual("".join(e["choices"][0]["text"] for e in chunks), whole)
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        self.assertTrue(all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1]))
        self.assertTrue(all("usage" not in e for e in chunks))
        # vLLM's continuous_usage_stats: every chunk carries its choice's usage so far, on both endpoints.
        prompt_tokens = usage["usage"]["prompt_tokens"]
        for path, extra in [("/v1/completions", {}),
                            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})]:
            events = sse_events(self.post(path, dict(body, **extra, stream=True, n=2, seed=4, temperature=1.0,
                                                     stream_options={"include_usage": True,
                                                                     "continuous_usage_stats": True}))[2])
            chunks = events[:-2]
            self.assertEqual(events[-2]["usage"]["completion_tokens"], 20)
            for index in (0, 1):
                counts = [e["usage"]["completion_tokens"] for e in chunks if e["choices"][0]["index"] == index]
                self.assertEqual(counts, sorted(counts))
                self.assertEqual(counts[-1], 10)
            if not extra:
                self.assertTrue(all(e["usage"]["prompt_tokens"] == prompt_tokens for e in chunks))
            self.assertTrue(all(e["usage"]["total_tokens"] == e["usage"]["prompt_tokens"] +
                                e["usage"]["completion_tokens"] for e in chunks))
        # Each event's cached tokens are the prompt's, as the last usage counts them: completion 1 finds the blocks
        # completion 0 just computed, which are not served from the cache for the request.
        long = dict(body, prompt="The little dog ran to the park and played with a red ball all day long. " * 3,
                    stream=True, n=2, seed=4, temperature=1.0,
                    stream_options={"include_usage": True, "continuous_usage_stats": True})
        events = sse_events(self.post("/v1/completions", long)[2])
        cached = events[-2]["usage"]["prompt_tokens_details"]["cached_tokens"]
        self.assertGreater(events[-2]["usage"]["prompt_tokens"], 32)
        self.assertEqual({e["usage"]["prompt_tokens_details"]["cached_tokens"] for e in events[:-2]}, {cached})
        self.assert_error(self.post("/v1/completions", dict(body, stream=True, stream_options={
            "continuous_usage_stats": 1})), 400, "stream_options", contains="continuous_usage_stats must be true or false")

    def test_chat(self):
        msgs = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "A story"}]
        code, _, text = self.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 8, "temperature": 0,
                                                           "logprobs": True, "top_logprobs": 1})
        self.assertEqual(code, 200, text)
        r = json.loads(text)
        self.assertEqual(r["object"], "chat.completion")
        self.assertTrue(r["id"].startswith("chatcmpl-"))
        msg = r["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertEqual(len(r["choices"][0]["logprobs"]["content"]), 8)
        # The rendered prompt is what /tokenize reports for the same messages.
        count = json.loads(self.post("/tokenize", {"messages": msgs})[2])["count"]
        self.assertEqual(r["usage"]["prompt_tokens"], count)
        code, _, text = self.post("/v1/chat/completions", {"messages": msgs, "max_completion_tokens": 8,
                                                           "temperature": 0, "stream": True})
        events = sse_events(text)
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(events[0]["choices"][0]["delta"]["role"], "assistant")
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
        self.assertEqual(streamed, msg["content"])

    def test_prefix_cache_metrics_and_reset(self):
        shared = "Once upon a time there was a big red dog who liked to run in the park with his friends. " * 8
        shared_tokens = json.loads(self.post("/tokenize", {"prompt": shared})[2])["count"]
        self.assertGreaterEqual(shared_tokens, 64)
        for q in ["Where?", "Who?"]:
            r = json.loads(self.post("/v1/completions", {"prompt": shared + q, "max_tokens": 2})[2])
        self.assertGreaterEqual(r["usage"]["prompt_tokens_details"]["cached_tokens"], shared_tokens // 16 * 16 - 16)
        code, hdrs, text = self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain"))
        for name in ["kvshare_prefix_cache_queries_total", "kvshare_prefix_cache_hits_total",
                     "kvshare_kv_blocks{", "kvshare_num_requests_running", "kvshare_num_requests_waiting",
                     "kvshare_num_preemptions_total", "kvshare_prompt_tokens_total",
                     "kvshare_generation_tokens_total", "kvshare_time_to_first_token_seconds_bucket",
                     "kvshare_time_per_output_token_seconds_bucket", "kvshare_e2e_request_latency_seconds_count"]:
            self.assertIn(name, text)
        # curl -X POST with no body sends no Content-Length: an empty body (RFC 9112), answered at once; cpp-httplib
        # alone waited 5 s for the client to close, then answered 400.
        start = time.time()
        code, _, body = self.post("/reset_prefix_cache")
        self.assertEqual(code, 200, body)
        self.assertLess(time.time() - start, 4.0)  # it waited 5 s (a bound with room for TSan)
        code, _, body = self.post("/reset_prefix_cache", raw="")
        self.assertEqual(code, 200, body)
        r = json.loads(self.post("/v1/completions", {"prompt": shared + "Why?", "max_tokens": 2})[2])
        self.assertEqual(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0)

    def test_metrics_count_what_was_served(self):
        def idle_metrics():  # nothing left over from an earlier test still running
            deadline = time.time() + 30
            while True:
                text = self.get("/metrics")[2]
                model = '{model_name="tiny"}'
                if (metric(text, "kvshare_num_requests_running" + model) == 0
                        and metric(text, "kvshare_num_requests_waiting" + model) == 0) or time.time() > deadline:
                    return text
                time.sleep(0.1)

        def counts(text):
            m = '{model_name="tiny"}'
            names = ["kvshare_prompt_tokens_total" + m, "kvshare_generation_tokens_total" + m,
                     "kvshare_request_success_total{model_name=\"tiny\",finished_reason=\"length\"}",
                     "kvshare_time_to_first_token_seconds_count", "kvshare_time_per_output_token_seconds_count",
                     "kvshare_e2e_request_latency_seconds_count"]
            return [metric(text, n) for n in names]

        before = counts(idle_metrics())
        prompt = ("Once upon a time there was a girl who had a red ball. She liked to play with it in the park "
                  "every day with her friends, and the ball went high.")
        n_prompt = json.loads(self.post("/tokenize", {"prompt": prompt})[2])["count"]
        r = json.loads(self.post("/v1/completions", {"prompt": prompt, "max_tokens": 5, "ignore_eos": True,
                                                      "temperature": 0})[2])
        self.assertEqual(r["usage"]["completion_tokens"], 5)
        text = idle_metrics()
        after = counts(text)
        # One request of n_prompt tokens that generated 5: each counter moved by exactly that.
        self.assertEqual([a - b for a, b in zip(after, before)], [n_prompt, 5, 1, 1, 1, 1])
        self.assertGreater(metric(text, "kvshare_time_per_output_token_seconds_sum"), 0)
        # Every block is used, cached or free; with nothing running, none is used (the prompt's full blocks stay
        # cached).
        m = 'model_name="tiny"'
        used, cached, free = (metric(text, 'kvshare_kv_blocks{%s,state="%s"}' % (m, s))
                              for s in ["used", "cached", "free"])
        self.assertEqual(used, 0)
        self.assertGreater(cached, 0)
        self.assertEqual(used + cached + free, metric(text, "kvshare_kv_blocks_total{%s}" % m))

    def test_cache_salt_keeps_prefixes_apart(self):
        shared = "A little fox found a shiny key under the old oak tree near the river bank. " * 6

        def cached(salt, question):
            body = {"prompt": shared + question, "max_tokens": 1}
            if salt is not None:
                body["cache_salt"] = salt
            code, _, text = self.post("/v1/completions", body)
            self.assertEqual(code, 200, text)
            return json.loads(text)["usage"]["prompt_tokens_details"]["cached_tokens"]

        self.assertEqual(cached("a", " Then?"), 0)  # computed and cached under salt "a"
        self.assertGreaterEqual(cached("a", " Why?"), 64)  # the same salt finds it
        self.assertEqual(cached("b", " Who?"), 0)  # another salt does not
        self.assertEqual(cached(None, " How?"), 0)  # nor does no salt
        self.assertGreaterEqual(cached("b", " When?"), 64)

    def test_add_generation_prompt_reaches_the_template(self):
        msgs = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "A story"}]
        # What chatml.jinja renders for these messages; the generation prompt adds "<|assistant|>\n".
        rendered = "<|start_story|><|system|>\nYou tell stories.\n<|user|>\nA story\n"

        def tokens(body):
            code, _, text = self.post("/tokenize", body)
            self.assertEqual(code, 200, text)
            return json.loads(text)["tokens"]

        with_prompt = tokens({"messages": msgs})
        without = tokens({"messages": msgs, "add_generation_prompt": False})
        self.assertEqual(with_prompt, tokens({"prompt": rendered + "<|assistant|>\n", "add_special_tokens": False}))
        self.assertEqual(without, tokens({"prompt": rendered, "add_special_tokens": False}))
        self.assertLess(len(without), len(with_prompt))
        # The chat endpoint renders the same way: its prompt is those tokens, its greedy text their completion's.
        r = json.loads(self.post("/v1/chat/completions", {"messages": msgs, "add_generation_prompt": False,
                                                           "max_tokens": 6, "temperature": 0})[2])
        self.assertEqual(r["usage"]["prompt_tokens"], len(without))
        c = json.loads(self.post("/v1/completions", {"prompt": without, "max_tokens": 6, "temperature": 0})[2])
        self.assertEqual(r["choices"][0]["message"]["content"], c["choices"][0]["text"])

    # --- errors ------------------------------------------------------------------------------------------

    def test_errors(self):
        err = self.assert_error(self.post("/v1/completions", {"prompt": "x"}, headers=[]), 401)
        self.assertEqual(err["type"], "authentication_error")
        self.assert_error(self.post("/v1/completions", {"prompt": "x"}, headers=["Authorization: Bearer nope"]), 401)
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "model": "gpt-5"}), 404, "model")
        self.assert_error(self.get("/v1/nothing"), 404)
        self.assert_error(self.post("/v1/completions", raw="{not json"), 400, contains="not valid JSON at line 1, column 3: syntax error")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "temperature": -1}), 400, "temperature")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "max_tokens": "many"}), 400, "max_tokens")
        self.assert_error(self.post("/v1/completions", {"prompt": [1, 99999]}), 400, contains="vocabulary")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "logit_bias": {"99999": 1}}), 400,
                          contains="99999")
        err = self.assert_error(self.post("/v1/completions", {"prompt": "word " * 600}), 400, "prompt")
        self.assertEqual(err["code"], "context_length_exceeded")
        # vLLM's truncate_prompt_tokens: the same prompt cut to its last 20 tokens runs, on both endpoints, and a
        # cut longer than the context is refused.
        code, _, text = self.post("/v1/completions", {"prompt": "word " * 600, "max_tokens": 2,
                                                      "truncate_prompt_tokens": 20, "echo": True})
        self.assertEqual(code, 200, text)
        self.assertEqual(json.loads(text)["usage"]["prompt_tokens"], 20)
        # echo shows the 19 tokens that ran after the kept BOS, not the BOS's text (an uncut echo does not).
        echoed = json.loads(text)["choices"][0]["text"]
        self.assertTrue(echoed.startswith("d word word"), echoed)  # the cut falls inside a word here
        self.assertNotIn("<|start_story|>", echoed)
        code, _, text = self.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 600}],
                                                           "max_tokens": 2, "truncate_prompt_tokens": 20})
        self.assertEqual(code, 200, text)
        self.assertEqual(json.loads(text)["usage"]["prompt_tokens"], 20)
        err = self.assert_error(self.post("/v1/completions", {"prompt": "x", "truncate_prompt_tokens": 100000}), 400,
                                "truncate_prompt_tokens", contains="use at most")
        self.assert_error(self.post("/v1/chat/completions", {"messages": "hi"}), 400, "messages")
        # max_tokens past the context's end: 400, as OpenAI and vLLM answer it (it was cut silently).
        for path, body in [("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 100000}),
                           ("/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100000})]:
            err = self.assert_error(self.post(path, body), 400, "max_tokens", contains="lower max_tokens to")
            self.assertEqual(err["code"], "context_length_exceeded")
        # A Content-Length that is not a byte count: "abc" was read as 0 ("not valid JSON"), "-1" as 2^64 - 1
        # (5 s of waiting, then "larger than ... bytes").
        for bad in ["abc", "-1"]:
            start = time.time()
            self.assert_error(self.post("/v1/completions", raw='{"prompt": "x"}',
                                        headers=self.auth + ["Content-Length: " + bad]), 400,
                              contains="bad Content-Length")
            self.assertLess(time.time() - start, 4.0)  # "-1" waited 5 s before (a bound with room for TSan)
        # A header line too long to read: the error says what could not be read and the limit.
        self.assert_error(self.post("/v1/completions", {"prompt": "x"}, headers=self.auth + ["X-Long: " + "a" * 9000]),
                          400, contains="each header line at most 8192 bytes")
        # No body and no Content-Length: an empty body, refused at once for what it lacks (it waited 5 s before).
        start = time.time()
        self.assert_error(self.post("/v1/completions"), 400, contains="JSON")
        self.assertLess(time.time() - start, 4.0)  # it waited 5 s (a bound with room for TSan)
        # A body that stops (the client sends no more) before its Content-Length: after the 5 s read timeout, a 400
        # that says so.
        host, port = self.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: 100\r\n%s\r\n\r\n{\"prompt\"" % self.auth[0]).encode())
            answer = read_one_answer(sock)
        head, _, body = answer.decode().partition("\r\n\r\n")
        self.assertIn(" 400 ", head.split("\r\n")[0], answer)
        self.assertIn("ended before its Content-Length", json.loads(body)["error"]["message"])
        # A multipart body (curl -F): a 400 that says the body must be JSON; it was a 500 (bad_function_call).
        for path in ["/v1/completions", "/tokenize", "/no/such/path"]:
            out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", self.auth[0], "-F", "a=b",
                                  self.url + path], capture_output=True, text=True, check=True).stdout
            text, _, code = out.rpartition("\n")
            self.assertEqual(code, "400", out)
            self.assertIn("must be JSON", json.loads(text)["error"]["message"])
        # A multipart body is read to its end before the 400, so the connection's next request is the client's:
        # left unread, the part past the first 4 KiB (here a request of its own) was served as further requests.
        part = b"z" * 6000 + b"\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
        body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + part + b"\r\n--XX--\r\n"
        first = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
                 b"Content-Length: %d\r\n%s\r\n\r\n" % (len(body), self.auth[0].encode())) + body
        second = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(first)
            answer = read_one_answer(sock)
            time.sleep(0.3)  # (room for any answer to the body's bytes, before the next request goes)
            sock.sendall(second)  # (pipelined at once, cpp-httplib 0.11 would drop it with the first's read-ahead)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        statuses = re.findall(rb"HTTP/1\.1 (\d+)", answer)
        self.assertEqual(statuses, [b"400", b"200"], answer)
        # The server still answers after all that.
        self.assertEqual(self.post("/v1/completions", {"prompt": "x", "max_tokens": 1})[0], 200)

    def test_disconnect_mid_stream_frees_blocks(self):
        # 512 prompts of 480 tokens each in one streaming request: over ten seconds of work on this tiny model, in
        # waves of about 64 (what the 64 MiB cache holds), about 1.5 s each on Zen 5. A client starved of CPU beside
        # other tests for a few seconds before it disconnects still leaves most of them unfinished (with 64 prompts,
        # one CI run saw 53 finish first: 11 aborted).
        body = {"prompt": ["Once upon a time"] * 512, "max_tokens": 480, "ignore_eos": True, "stream": True}
        args = ["curl", "-sS", "-N", "-H", "Content-Type: application/json", "-H", self.auth[0],
                "--data-binary", json.dumps(body), self.url + "/v1/completions"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        first = proc.stdout.readline()  # the stream has started
        self.assertTrue(first.startswith(b"data: "))
        text = self.get("/metrics")[2]
        self.assertNotIn('state="used"} 0\n', text)  # the stream holds blocks
        proc.kill()
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline:
            text = self.get("/metrics")[2]
            if 'state="used"} 0\n' in text and "kvshare_num_requests_running{model_name=\"tiny\"} 0\n" in text:
                break
            time.sleep(0.1)
        self.assertIn('state="used"} 0\n', text)
        aborted = [l for l in text.split("\n") if 'finished_reason="abort"' in l][0]
        self.assertGreaterEqual(int(aborted.split()[-1]), 256, aborted)  # most of the 512 never finished


    def test_reset_connection_aborts_whole_response(self):
        # A client that goes away with an RST, not a FIN, while its whole (non-streamed) response is computed:
        # its request must not run on. Once the connection was reset, cpp-httplib had no peer address for it
        # (getpeername fails), so the handler never found its socket and the request ran to the end.
        body = {"prompt": "The cat " * 50, "max_tokens": 400, "ignore_eos": True, "temperature": 0, "n": 8}
        name = 'kvshare_request_success_total{model_name="tiny",finished_reason="%s"}'
        before = self.get("/metrics")[2]

        def settled():
            deadline = time.time() + 20
            while time.time() < deadline:
                text = self.get("/metrics")[2]
                if (metric(text, 'kvshare_num_requests_running{model_name="tiny"}') == 0 and
                        metric(text, 'kvshare_kv_blocks{model_name="tiny",state="used"}') == 0):
                    return text
                time.sleep(0.1)
            self.fail("the reset request still runs or holds blocks:\n" + text)

        # Reset at once (the request reaches the server with its connection already reset).
        reset(raw_request(self.url, body, headers=self.auth))
        time.sleep(1)
        text = settled()
        self.assertEqual(metric(text, name % "length"), metric(before, name % "length"), "it ran to the end")
        # (Refused unrun when cpp-httplib found the connection reset, else aborted once the handler sees it.)
        before = text
        # Reset while it runs: aborted, every completion, and its blocks freed.
        sock = raw_request(self.url, body, headers=self.auth)
        deadline = time.time() + 20
        while metric(self.get("/metrics")[2], 'kvshare_num_requests_running{model_name="tiny"}') == 0:
            self.assertLess(time.time(), deadline, "the request never started")
            time.sleep(0.02)
        reset(sock)
        text = settled()
        self.assertEqual(metric(text, name % "length"), metric(before, name % "length"), "it ran to the end")
        self.assertEqual(metric(text, name % "abort") - metric(before, name % "abort"), 8)

    def test_one_request_cannot_take_the_whole_queue(self):
        # 1000 prompts × n 128 = 128,000 sequences were admitted under --max-waiting-requests 1024, and every
        # other request got 503 until they were done: a request larger than the limit alone is refused, 400.
        err = self.assert_error(self.post("/v1/completions", {"prompt": [[1]] * 1000, "max_tokens": 1, "n": 128}),
                                400, "n")
        for part in ["128000 sequences", "1000 prompts", "n 128", "1024", "split"]:
            self.assertIn(part, err["message"])
        err = self.assert_error(self.post("/v1/completions", {"prompt": [[1]] * 512, "max_tokens": 1, "n": 2,
                                                              "best_of": 4}), 400, "best_of")
        self.assertIn("2048 sequences", err["message"])
        code, _, body = self.post("/v1/completions", {"prompt": [[1]] * 512, "max_tokens": 1, "n": 2})
        self.assertEqual(code, 200, body)  # 1024 sequences: exactly the limit
        self.assertEqual(len(json.loads(body)["choices"]), 1024)
        # A chat is one prompt: with n over the limit it was admitted whole (counted as no sequence).
        with serve_util.Server("--max-waiting-requests", "4") as s:
            code, _, body = curl(s.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                                  "n": 5, "max_tokens": 1})
            self.assertEqual(code, 400, body)
            self.assertIn("5 sequences (1 prompt × n 5)", json.loads(body)["error"]["message"])

    def test_tools_reach_the_chat_template(self):
        msgs = [{"role": "user", "content": "Hi"}]
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        self.assert_error(self.post("/v1/chat/completions", {"messages": msgs, "tools": 5}), 400, "tools")
        self.assert_error(self.post("/v1/chat/completions", {"messages": msgs, "tools": "xyz"}), 400, "tools")
        self.assert_error(self.post("/v1/chat/completions", {"messages": msgs, "tool_choice": "required"}), 400,
                          "tool_choice", "needs tools")
        self.assert_error(self.post("/v1/chat/completions", {"messages": msgs, "tool_choice": "always"}), 400,
                          "tool_choice", 'must be "none", "auto", "required" or')
        self.assert_error(self.post("/v1/chat/completions", {"messages": msgs, "response_format":
                                                             {"type": "json_schema", "json_schema": {}}}), 400,
                          "response_format", "needs \"json_schema\": {\"name\"")
        self.assert_error(self.post("/v1/completions", {"prompt": "x", "stop": ""}), 400, "stop")
        for top_p in [0, 2]:
            self.assert_error(self.post("/v1/completions", {"prompt": "x", "top_p": top_p}), 400, "top_p", "(0, 1]")
        # This server's template (chatml.jinja) ignores tools: the same prompt with or without them.
        plain = json.loads(self.post("/tokenize", {"messages": msgs})[2])["count"]
        self.assertEqual(json.loads(self.post("/tokenize", {"messages": msgs, "tools": tools})[2])["count"], plain)
        # One that lists them sees them, and the documents, as Hugging Face's apply_chat_template passes them.
        template = ("{{- bos_token -}}{%- for t in tools -%}{{- 'TOOL ' + t['function']['name'] + '\\n' -}}"
                    "{%- endfor -%}{%- for d in documents -%}{{- 'DOC ' + d['title'] + '\\n' -}}{%- endfor -%}"
                    "{%- for m in messages -%}{{- m['role'] + ': ' + m['content'] + '\\n' -}}{%- endfor -%}")
        with serve_util.server_with_template(template) as s:
            body = {"messages": msgs, "tools": tools, "documents": [{"title": "Notes", "text": "..."}]}
            tokens = json.loads(curl(s.url + "/tokenize", body)[2])["tokens"]
            text = json.loads(curl(s.url + "/detokenize", {"tokens": tokens})[2])["prompt"]
            self.assertIn("TOOL get_weather\nDOC Notes\nuser: Hi", text)
            code, _, out = curl(s.url + "/v1/chat/completions", dict(body, max_tokens=2, tool_choice="auto"))
            self.assertEqual(code, 200, out)
            self.assertEqual(json.loads(out)["usage"]["prompt_tokens"], len(tokens))

    def test_tools_pick_the_models_tool_use_template(self):
        # A model listing named templates: a request with tools gets its "tool_use" one, as vLLM and transformers
        # pick it (only "default" was read, which has no place for tools).
        with tempfile.TemporaryDirectory() as d:
            for name in os.listdir(serve_util.MODEL):
                if name != "tokenizer_config.json":
                    os.symlink(os.path.join(serve_util.MODEL, name), os.path.join(d, name))
            with open(os.path.join(serve_util.MODEL, "tokenizer_config.json")) as f:
                config = json.load(f)
            config["chat_template"] = [
                {"name": "default", "template": "D:{{ messages[0]['content'] }}"},
                {"name": "tool_use", "template": "T:{{ tools | length }}:{{ messages[0]['content'] }}"}]
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump(config, f)
            tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
            msgs = [{"role": "user", "content": "Hi"}]
            with serve_util.Server(model=d, chat_template=False) as s:
                for body, expected in [({"messages": msgs}, "D:Hi"), ({"messages": msgs, "tools": tools}, "T:1:Hi")]:
                    tokens = json.loads(curl(s.url + "/tokenize", body)[2])["tokens"]
                    text = json.loads(curl(s.url + "/detokenize", {"tokens": tokens})[2])["prompt"]
                    self.assertTrue(text.endswith(expected), (body, text))
                    code, _, out = curl(s.url + "/v1/chat/completions", dict(body, max_tokens=1))
                    self.assertEqual(code, 200, out)
                    self.assertEqual(json.loads(out)["usage"]["prompt_tokens"], len(tokens))

    def test_tool_call_parser_reads_the_models_own_calls(self):
        # tool_choice "auto" (the default with tools) on a server started with --tool-call-parser hermes: the calls
        # the model writes in <tool_call> blocks come back as tool_calls, the text before them as content, and
        # finish_reason "tool_calls"; a reply without calls stays text. stories260K cannot choose to call, so a choice
        # constraint writes what a model that chose would. Streamed, the deltas add up to the whole reply.
        call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}\n</tool_call>'
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        msgs = [{"role": "user", "content": "Weather in Oslo?"}]
        gguf = os.path.join(serve_util.SHARED, "models", "stories260K", "stories260K.gguf")
        # This class's server has no parser, and its template (chatml.jinja) writes <tool_call>: it says so at start.
        self.assertIn("start with --tool-call-parser hermes", "".join(self.server.log))
        for bad in [["--tool-call-parser", "nope"], ["--enable-auto-tool-choice"]]:
            proc = subprocess.run([serve_util.kvshare_bin(), "serve", "--model", gguf, "--port", "0"] + bad,
                                  capture_output=True, text=True, timeout=60)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("hermes, llama3_json", proc.stderr)
        # A template that writes calls as Hugging Face's do, arguments with tojson.
        template = ("{%- for m in messages -%}{{- m.role + ': ' -}}{%- for c in m.tool_calls or [] -%}"
                    "{{- c.function.name + c.function.arguments | tojson -}}{%- endfor -%}{{- m.content or '' -}}"
                    "{{- ' | ' -}}{%- endfor -%}assistant: ")
        with serve_util.server_with_template(template, "--tool-call-parser", "hermes", model=gguf) as s:
            def chat(reply, **extra):
                body = dict({"messages": msgs, "tools": tools, "max_tokens": 90,
                             "structured_outputs": {"choice": [reply]}}, **extra)
                code, _, out = curl(s.url + "/v1/chat/completions", body)
                self.assertEqual(code, 200, out)
                whole = json.loads(out)["choices"][0]
                code, _, text = curl(s.url + "/v1/chat/completions", dict(body, stream=True))
                self.assertEqual(code, 200, text)
                content, calls, finish = "", [], None
                for e in sse_events(text):
                    if isinstance(e, dict) and e.get("choices"):
                        delta = e["choices"][0]["delta"]
                        content += delta.get("content") or ""
                        calls += delta.get("tool_calls", [])
                        finish = e["choices"][0]["finish_reason"] or finish
                self.assertEqual(content, whole["message"]["content"] or "")
                made = whole["message"].get("tool_calls", [])  # (ids are each response's)
                self.assertEqual([(c["index"], c["type"], c["function"]) for c in calls],
                                 [(i, c["type"], c["function"]) for i, c in enumerate(made)])
                self.assertEqual(finish, whole["finish_reason"])
                return whole

            c = chat(call)
            self.assertEqual((c["finish_reason"], c["message"]["content"]), ("tool_calls", None), c)
            [made] = c["message"]["tool_calls"]
            self.assertEqual((made["type"], made["function"]["name"]), ("function", "get_weather"))
            self.assertTrue(made["id"].startswith("call_"))
            self.assertEqual(json.loads(made["function"]["arguments"]), {"city": "Oslo", "days": 2})
            c = chat("OK.\n" + call.replace(', "days": 2', ""))
            self.assertEqual(c["message"]["content"], "OK.")
            self.assertEqual(len(c["message"]["tool_calls"]), 1)
            for reply, extra in [("It is <b>sunny</b>.", {}), (call, {"tool_choice": "none"}),
                                 ("<tool_call>\n{\"name\": \"get_weather\", \"argu", {})]:
                c = chat(reply, **extra)
                self.assertEqual((c["finish_reason"], c["message"]["content"]), ("stop", reply), c)
                self.assertNotIn("tool_calls", c["message"])
            # The conversation goes on: the call sent back as the client got it (its arguments JSON text), and the
            # tool's answer. The template writes the arguments as the model did, not as a quoted string.
            follow = msgs + [{"role": "assistant", "content": None, "tool_calls": [made]},
                             {"role": "tool", "tool_call_id": made["id"], "content": "-3 C"}]
            code, _, out = curl(s.url + "/tokenize", {"messages": follow, "tools": tools})
            self.assertEqual(code, 200, out)
            prompt = json.loads(curl(s.url + "/detokenize", {"tokens": json.loads(out)["tokens"]})[2])["prompt"]
            self.assertIn('assistant: get_weather{"city": "Oslo", "days": 2} | tool: -3 C | assistant: ', prompt)

    def test_continue_final_message_cuts_as_hugging_face_does(self):
        # The server looked for the final message's text unstripped: a template that trims it (as Llama 3's does)
        # hid "Sure:\n", nothing was cut, and the model was given a closed turn to follow, without an error.
        template = "{%- for m in messages -%}{{- '<|' + m['role'] + '|>' + m['content'] | trim + '<|end|>' -}}{%- endfor -%}"
        msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure:\n"}]
        with serve_util.server_with_template(template) as s:
            code, _, out = curl(s.url + "/tokenize", {"messages": msgs, "continue_final_message": True,
                                                      "add_generation_prompt": False})
            self.assertEqual(code, 200, out)
            tokens = json.loads(out)["tokens"]
            text = json.loads(curl(s.url + "/detokenize", {"tokens": tokens})[2])["prompt"]
            self.assertTrue(text.endswith("<|assistant|>Sure:"), text)
            # A final message whose text the prompt does not show is an error, not a silent closed turn.
            code, _, out = curl(s.url + "/v1/chat/completions",
                                {"messages": msgs[:1] + [{"role": "assistant", "content": "  "}],
                                 "continue_final_message": True, "add_generation_prompt": False})
            self.assertEqual(code, 400, out)
            self.assertIn("continue_final_message", json.loads(out)["error"]["message"])


class LimitsTest(unittest.TestCase):
    def test_body_size_and_overload(self):
        with serve_util.Server("--max-body-bytes", "2048", "--max-waiting-requests", "0") as s:
            code, _, body = curl(s.url + "/v1/completions", {"prompt": "x" * 5000})
            self.assertEqual(code, 413, body)
            self.assertIn("--max-body-bytes", json.loads(body)["error"]["message"])
            code, hdrs, body = curl(s.url + "/v1/completions", {"prompt": "x"})
            self.assertEqual(code, 503, body)
            self.assertEqual(hdrs.get("retry-after"), "1")
            # A chat counted as no sequence and passed every queue limit.
            code, hdrs, body = curl(s.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
            self.assertEqual(code, 503, body)
            self.assertIn("this request adds 1", json.loads(body)["error"]["message"])

    def test_body_size_holds_for_chunked_and_compressed_bodies(self):
        # The limit was checked against Content-Length only: a chunked body was read whole whatever its size, and a
        # gzip body was inflated without bound (32 MiB of it inflate to 32 GiB).
        chunked = ["Transfer-Encoding: chunked"]
        gzipped = ["Content-Encoding: gzip"]
        big = json.dumps({"prompt": "x" * 20000}).encode()
        small = json.dumps({"prompt": "Once upon", "max_tokens": 2}).encode()
        with serve_util.Server("--max-body-bytes", "4096") as s:
            for path in ["/v1/completions", "/v1/chat/completions", "/tokenize", "/no-such-path"]:
                for headers, data in [(chunked, big), (gzipped, gzip.compress(big))]:
                    code, _, body = curl(s.url + path, raw=data, headers=headers)
                    self.assertEqual(code, 413, (path, headers, body))
                    self.assertIn("larger than 4096 bytes (--max-body-bytes)", json.loads(body)["error"]["message"])
            # Within the limit, both are read as any body is.
            for headers, data in [(chunked, small), (gzipped, gzip.compress(small))]:
                code, _, body = curl(s.url + "/v1/completions", raw=data, headers=headers)
                self.assertEqual(code, 200, (headers, body))
                self.assertEqual(json.loads(body)["usage"]["completion_tokens"], 2)
            code, _, body = curl(s.url + "/no-such-path", raw=small, headers=chunked)
            self.assertEqual(code, 404, body)

    def test_host_and_a_template_that_raises(self):
        with tempfile.TemporaryDirectory() as d:
            template = os.path.join(d, "user_first.jinja")
            with open(template, "w") as f:
                f.write("{%- if messages[0]['role'] != 'user' -%}"
                        "{{ raise_exception('Conversations must start with a user message') }}{%- endif -%}"
                        "{%- for m in messages -%}{{ m['role'] + ': ' + m['content'] + '\\n' }}{%- endfor -%}")
            # --host: it listens there and nowhere else (all of 127.0.0.0/8 is the loopback on Linux).
            with serve_util.Server("--host", "127.0.0.2", "--chat-template", template) as s:
                self.assertTrue(s.url.startswith("http://127.0.0.2:"), s.url)
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])), timeout=5).close()
                user_first = [{"role": "user", "content": "Hi"}]
                code, _, body = curl(s.url + "/v1/chat/completions", {"messages": user_first, "max_tokens": 2})
                self.assertEqual(code, 200, body)
                # The template's raise_exception is the client's error: 400 with its message, on each route
                # that renders, and the server goes on.
                system_first = [{"role": "system", "content": "Be brief."}] + user_first
                for path in ["/v1/chat/completions", "/tokenize"]:
                    code, _, body = curl(s.url + path, {"messages": system_first, "max_tokens": 2})
                    self.assertEqual(code, 400, body)
                    err = json.loads(body)["error"]
                    self.assertIn("Conversations must start with a user message", err["message"])
                    self.assertEqual(err["param"], "messages")
                    self.assertEqual(err["type"], "invalid_request_error")
                code, _, body = curl(s.url + "/v1/chat/completions", {"messages": user_first, "max_tokens": 2})
                self.assertEqual(code, 200, body)

    def test_text_far_over_the_context_is_refused_before_tokenizing(self):
        # 4 MB of text is refused from its length, before BPE (a 30 MB body held an HTTP thread for 30 s), by
        # /tokenize too, which needs no API key.
        # stories260K spells every byte, so its vocabulary bounds the tokens per byte (tinystories-656k does not).
        gguf = os.path.join(serve_util.SHARED, "models", "stories260K", "stories260K.gguf")
        with serve_util.Server(model=gguf) as s:
            chat = {"messages": [{"role": "user", "content": "hi " * 1400000}]}
            for path, body in [("/v1/completions", {"prompt": "hello world " * 350000}),
                               ("/v1/chat/completions", chat),
                               ("/tokenize", {"prompt": "hello world " * 350000}), ("/tokenize", chat)]:
                code, _, text = curl(s.url + path, body)
                self.assertEqual(code, 400, text[:300])
                err = json.loads(text)["error"]
                self.assertEqual(err["code"], "context_length_exceeded")
                self.assertIn("bytes, at least", err["message"])

    def test_a_model_without_a_usable_chat_template_is_reported_at_start(self):
        # A GGUF whose template did not parse started silently; chat requests then failed one by one.
        gguf = os.path.join(serve_util.SHARED, "models", "stories260K", "stories260K.gguf")
        with serve_util.Server(model=gguf, chat_template=False) as s:
            log = "".join(s.log)
            self.assertIn("warning: no chat template", log)
            code, _, text = curl(s.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(code, 400, text)
        with serve_util.Server() as s:  # with a template: no warning
            self.assertNotIn("warning", "".join(s.log))

    def test_request_larger_than_the_kv_cache_is_refused_for_good(self):
        # A request whose tokens can never fit the whole KV cache got 503 ("retry later") from the engine's
        # resource_exhausted: a retry can never succeed, so it is a 400 saying what to change.
        # 64 tokens of this model: four blocks of 16 KiB of K/V and their bookkeeping.
        with serve_util.Server("--kv-cache-memory", "65KiB") as s:
            code, hdrs, text = curl(s.url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 100})
            self.assertEqual(code, 400, text)
            self.assertNotIn("retry-after", hdrs)
            err = json.loads(text)["error"]
            self.assertIn("whole cache holds 64; lower max_tokens", err["message"])
            self.assertIn("--kv-cache-memory", err["message"])
            code, _, text = curl(s.url + "/v1/completions", {"prompt": "word " * 100, "max_tokens": 1})
            self.assertEqual(code, 400, text)
            self.assertIn("shorten the prompt", json.loads(text)["error"]["message"])
            # Streamed: refused before the stream starts.
            code, _, text = curl(s.url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 100,
                                                              "stream": True})
            self.assertEqual(code, 400, text)
            code, _, text = curl(s.url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 20})
            self.assertEqual(code, 200, text)
            # A chat without max_tokens may fill the context, or here the smaller KV cache: it runs to its end.
            code, _, text = curl(s.url + "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "hi"}], "ignore_eos": True})
            self.assertEqual(code, 200, text)
            answer = json.loads(text)
            self.assertEqual(answer["choices"][0]["finish_reason"], "length")
            self.assertEqual(answer["usage"]["total_tokens"], 64)

    def test_idle_and_slow_connections_do_not_starve_requests(self):
        # Each connection holds an HTTP thread until it closes: a fixed pool of 64 was taken by 64 idle
        # keep-alive connections (a request then waited for their 5 s timeout) or by 64 clients trickling
        # header bytes (a request then waited for ever).
        with serve_util.Server() as s:
            host, port = s.url.split("//")[1].split(":")
            idle = [socket.create_connection((host, int(port))) for _ in range(100)]
            slow = Trickler(s.url, 100)
            try:
                time.sleep(0.5)
                start = time.time()
                code, _, text = curl(s.url + "/v1/completions", {"prompt": "x", "max_tokens": 2}, timeout=20)
                self.assertEqual(code, 200, text)
                self.assertLess(time.time() - start, 10.0)  # before: 40 s and more
            finally:
                slow.close()
                for c in idle:
                    c.close()

    def test_sigint_does_not_wait_for_idle_or_slow_connections(self):
        # cpp-httplib notices a stop only between requests: an idle keep-alive connection held the process up
        # to 5 s after SIGINT, and one trickling header bytes held it for ever.
        s = serve_util.Server()
        host, port = s.url.split("//")[1].split(":")
        idle = socket.create_connection((host, int(port)))
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(idle.recv(4096).startswith(b"HTTP/1.1 200"))  # kept alive
        slow = Trickler(s.url, 4)
        try:
            time.sleep(0.5)
            start = time.time()
            self.assertEqual(s.stop(signal.SIGINT, timeout=15), 0, "".join(s.log))
            self.assertLess(time.time() - start, 4.5)  # the idle connection alone held it 5 s, the slow ones for ever
        finally:
            slow.close()
            idle.close()

    def test_sigterm_ends_streams_and_exits_cleanly(self):
        s = serve_util.Server()
        body = {"prompt": ["Once upon a time"] * 64, "max_tokens": 480, "ignore_eos": True, "stream": True}
        args = ["curl", "-sS", "-N", "-H", "Content-Type: application/json", "--data-binary", json.dumps(body),
                s.url + "/v1/completions"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        self.assertTrue(proc.stdout.readline().startswith(b"data: "))  # in flight
        self.assertEqual(s.stop(signal.SIGTERM), 0, "".join(s.log))
        text = proc.stdout.read().decode()
        proc.wait(30)
        events = sse_events(text)
        self.assertEqual(events[-1], "[DONE]")
        reasons = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"][0]["finish_reason"]]
        self.assertEqual(len(reasons), 64)
        self.assertIn("abort", reasons)


if __name__ == "__main__":
    unittest.main(verbosity=2)
