"""Runs the C++ example examples/shared_prefix.cc (build/examples/shared_prefix MODEL) on a tiny real model and
checks that it does what it says: three answers over one shared instruction, the instruction's blocks computed once
and served from the cache to the other two questions, and a summary that adds up.

Run by CTest (example_shared_prefix_test) with the example's path; needs ../shared/models/tinystories-656k (skips
without it).
"""
import os
import re
import subprocess
import sys

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("KVSHARE_SHARED_DIR", os.path.join(SOURCE, "..", "shared"))
MODEL = os.path.join(SHARED, "models", "tinystories-656k")

if not os.path.isdir(MODEL):
    print("[  SKIPPED ] needs ../shared/models/tinystories-656k (the shared data folder is absent)")
    sys.exit(0)

run = subprocess.run([sys.argv[1], MODEL], capture_output=True, text=True, timeout=120)
assert run.returncode == 0, run.stderr
answers = re.findall(r"^\[(\d+) of (\d+) prompt tokens from the cache\]", run.stdout, re.M)
assert len(answers) == 3, run.stdout
cached = [int(c) for c, _ in answers]
prompt = [int(p) for _, p in answers]
# One question computes the instruction; the other two are served its full blocks.
assert sorted(cached)[0] == 0 and sorted(cached)[1] > 0 and sorted(cached)[1] == sorted(cached)[2], run.stdout
summary = re.search(r"^prefix cache: (\d+) of (\d+) prompt tokens hit$", run.stdout, re.M)
assert summary, run.stdout
assert int(summary.group(1)) == sum(cached) and int(summary.group(2)) == sum(prompt), run.stdout
# (run without a model it is a usage error)
usage = subprocess.run([sys.argv[1]], capture_output=True, text=True, timeout=60)
assert usage.returncode == 2 and "usage:" in usage.stderr, usage.stderr
print("shared_prefix: 3 answers, %d of %d prompt tokens from the cache" % (sum(cached), sum(prompt)))
