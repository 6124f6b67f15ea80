"""Ctrl-C during a long LLM.generate: a real SIGINT to a Python process inside generate raises
KeyboardInterrupt within about a step, and the same LLM then generates exactly what it did before. Also the
progress bar that generate shows by default: tqdm's when tqdm is importable, nothing (and no error) without it."""
import os
import signal
import subprocess
import sys
import time
import types

from kvshare import SamplingParams

CHILD = r"""
import sys, time
from kvshare import LLM, SamplingParams
llm = LLM(sys.argv[1], kv_cache_memory="256MiB", max_num_seqs=16)
probe = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
before = llm.generate(["Once upon a time", "The little dog"], probe, use_tqdm=False)
# Far more work than the test waits for: 4000 requests of 300 tokens, 16 at a time.
long_params = SamplingParams(temperature=0, max_tokens=300, ignore_eos=True)
print("generating", flush=True)
t0 = time.monotonic()
try:
    llm.generate(["Tom had a toy %d" % i for i in range(4000)], long_params, use_tqdm=False)
    print("finished without interruption", flush=True)
    sys.exit(3)
except KeyboardInterrupt:
    print("interrupted after %.3f s" % (time.monotonic() - t0), flush=True)
m = llm.metrics()
print("queued after interrupt: %d running, %d waiting, %d blocks used" % (m["num_running"], m["num_waiting"],
                                                                          m["blocks_used"]), flush=True)
after = llm.generate(["Once upon a time", "The little dog"], probe, use_tqdm=False)
same = [a.outputs[0].token_ids for a in after] == [b.outputs[0].token_ids for b in before]
print("same tokens after interrupt: %s" % same, flush=True)
"""


def test_ctrl_c_interrupts_a_long_generate(stories_path):
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, stories_path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "generating"
        time.sleep(1.0)  # well inside generate (the whole batch takes minutes)
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        latency = time.monotonic() - sent
        assert line.startswith("interrupted after"), line + proc.stderr.read()
        assert latency < 1.5, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, rest + proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "queued after interrupt: 0 running, 0 waiting, 0 blocks used" in rest
    assert "same tokens after interrupt: True" in rest


def test_progress_bar_by_default_when_tqdm_is_importable(stories, monkeypatch):
    bars = []

    class FakeTqdm:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.kwargs, self.closed = total, 0, kwargs, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm
    package = types.ModuleType("tqdm")
    package.auto = auto
    monkeypatch.setitem(sys.modules, "tqdm", package)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    params = SamplingParams(temperature=0, max_tokens=4)
    stories.generate(["a", "b", "c", "d"], params)
    assert len(bars) == 1 and bars[0].total == 4 and bars[0].n == 4 and bars[0].closed
    stories.generate(["a", "b"], params, use_tqdm=False)
    assert len(bars) == 1


def test_no_tqdm_no_bar_and_no_error(stories, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    outs = stories.generate(["a", "b"], SamplingParams(temperature=0, max_tokens=4))
    assert [len(o.outputs[0].token_ids) for o in outs] == [4, 4]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
