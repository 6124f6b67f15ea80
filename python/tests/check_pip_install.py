"""The README's install, tested: a venv made with `python3 -m venv --system-site-packages` in a temporary folder,
`pip install --no-build-isolation --no-index .` of the source tree (offline), then `import kvshare` from outside
the source tree and a greedy generation from ../shared's stories260K, checked against its golden tokens.

    python3 python/tests/check_pip_install.py [--build-dir BUILD]

--build-dir hands pip an already-built CMake tree (KVSHARE_CMAKE_BUILD_DIR, see setup.py) so nothing is compiled
twice; without it pip builds the module in build-python/ (minutes, less with ccache). CTest runs this as
python_pip_install with --build-dir. Exits 77 (skipped) without ../shared's model; fails, saying what to install,
when the venv or pip cannot work."""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

SOURCE_DIR = pathlib.Path(__file__).resolve().parents[2]
MODEL = "models/stories260K/stories260K.gguf"
GOLDEN = "models/stories260K/golden/once_upon_a_time.json"

# Run by the venv's python from a folder outside the source tree: where kvshare comes from, and 60 greedy tokens.
CHECK = """
import json, sys
import kvshare
from kvshare import LLM, SamplingParams
golden = json.load(open(sys.argv[2]))
llm = LLM(sys.argv[1], kv_cache_memory="16MiB")
[out] = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=len(golden["completion_token_ids"])),
                     use_tqdm=False)
print(json.dumps({"file": kvshare.__file__, "prompt_ids": out.prompt_token_ids, "ids": out.outputs[0].token_ids,
                  "text": out.outputs[0].text}))
"""


def shared_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KVSHARE_SHARED_DIR") or SOURCE_DIR.parent / "shared")


def run(step: str, args, **kwargs) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    print(f"check_pip_install: {step} took {time.monotonic() - t0:.1f} s", flush=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-6000:] + done.stderr[-6000:])
    return done


def fail(message: str) -> int:
    print(f"check_pip_install: FAILED: {message}", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", help="an already-built CMake build folder of this source tree to reuse")
    args = parser.parse_args()
    model, golden_path = shared_dir() / MODEL, shared_dir() / GOLDEN
    if not model.exists() or not golden_path.exists():
        print(f"skipped: needs ../shared/{MODEL} and its golden (the shared data folder is absent)")
        return 77
    golden = json.loads(golden_path.read_text())

    # Outside the source tree and without the variables that would import kvshare from somewhere else.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if args.build_dir:
        env["KVSHARE_CMAKE_BUILD_DIR"] = str(pathlib.Path(args.build_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="kvshare-pip-") as tmp:
        venv = pathlib.Path(tmp) / "venv"
        if run("python3 -m venv", [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
               env=env).returncode != 0:
            return fail("python3 -m venv failed: install python3-venv (scripts/install.sh does)")
        python = venv / "bin" / "python"
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        install = run("pip install", [str(python), "-m", "pip", "install", "--no-build-isolation", "--no-index", "."],
                      cwd=SOURCE_DIR, env=env)
        if install.returncode != 0:
            return fail("pip install --no-build-isolation --no-index . failed (above); scripts/install.sh installs "
                        "what it needs: python3-pip python3-setuptools python3-wheel pybind11-dev python3-dev")
        check = run("import and generate", [str(python), "-c", CHECK, str(model), str(golden_path)], cwd=tmp, env=env)
        if check.returncode != 0:
            return fail("import kvshare from the venv failed (above)")
        got = json.loads(check.stdout.strip().splitlines()[-1])
        site = pathlib.Path(got["file"]).resolve()
        if not site.is_relative_to(venv.resolve()):
            return fail(f"kvshare was imported from {site}, not from the venv {venv}")
        if got["prompt_ids"] != golden["prompt_token_ids"] or got["ids"] != golden["completion_token_ids"]:
            return fail(f"the venv's kvshare generated {got['ids']} from {got['prompt_ids']}; the golden is "
                        f"{golden['completion_token_ids']} from {golden['prompt_token_ids']}")
        print(f"check_pip_install: kvshare installed in a venv ({site.parent}) generated the golden "
              f"{len(got['ids'])} tokens: {got['text'][:60]!r}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
