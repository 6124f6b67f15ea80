"""examples/python/ run on a tiny real model and say what they should: the same outputs with reuse on and off,
cached prompt tokens with reuse on (the whole instruction's full blocks after the first prompt) and none
with it off, and a time for each."""
import ast
import re
import subprocess
import sys

from conftest import MODELS, SOURCE_DIR, shared_path

EXAMPLES = SOURCE_DIR / "examples" / "python"


def run_example(name, *args):
    # The module the tests import ($PYTHONPATH from CTest) is the one the example imports.
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def cached_list(out, title):
    """The list printed after `title ...: cached prompt tokens` (or `from the cache:`)."""
    m = re.search(re.escape(title) + r"[^\n]*?(?:cached prompt tokens|from the cache:) (\[[0-9, ]*\])", out)
    assert m, f"no line for {title!r} in:\n{out}"
    return ast.literal_eval(m.group(1))


def test_fixed_instruction_example():
    model = str(shared_path(MODELS["tinystories-656k"]))
    out = run_example("fixed_instruction.py", model, "--max-tokens", "8")
    assert "outputs identical with reuse on and off: yes" in out
    assert re.search(r"reuse on: [0-9.]+ s, reuse off: [0-9.]+ s", out)
    explicit = cached_list(out, "explicit prefix (cache_prefix)")
    automatic = cached_list(out, "automatic reuse")
    off = cached_list(out, "reuse off")
    assert len(explicit) == len(automatic) == len(off) == 4
    assert off == [0, 0, 0, 0]
    # Pinned beforehand, the instruction's full blocks serve every prompt; found automatically, every prompt
    # but the one that computes them first.
    assert min(explicit) >= 16
    assert sorted(automatic)[0] == 0 and sorted(automatic)[1] >= 16


def test_translate_batch_example():
    model = str(shared_path(MODELS["stories260K"]))
    out = run_example("translate_batch.py", model, "--block-size", "4", "--max-tokens", "8")
    assert "outputs identical with reuse on and off: yes" in out
    m = re.search(r"up to (\d+) per prompt", out)
    assert m and int(m.group(1)) >= 4
    on = cached_list(out, "reuse on:")
    # One prompt computes the shared blocks (the batch runs in prefix order), the two others reuse them.
    assert sorted(on) == [0, int(m.group(1)), int(m.group(1))]
    assert cached_list(out, "reuse off:") == [0, 0, 0]
    assert out.count("Translate to French:") == 3


def test_extract_records_example():
    # Every answer that stops is a record the reference validator (jsonschema) takes under the example's schema.
    import importlib.util
    import json

    import jsonschema
    spec = importlib.util.spec_from_file_location("extract_records", EXAMPLES / "extract_records.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = str(shared_path(MODELS["stories260K"]))
    out = run_example("extract_records.py", model, "--block-size", "4")
    assert "outputs identical with reuse on and off: yes" in out
    on = cached_list(out, "reuse on")
    assert sorted(on)[0] == 0 and sorted(on)[1] >= 16 and len(set(sorted(on)[1:])) == 1
    assert cached_list(out, "reuse off") == [0, 0, 0, 0]
    records = [json.loads(line[len("record: "):]) for line in out.splitlines() if line.startswith("record: ")]
    assert len(records) >= 2, out
    for record in records:
        jsonschema.validate(record, example.SCHEMA)
        assert list(record) == [k for k in example.SCHEMA["properties"] if k in record]
