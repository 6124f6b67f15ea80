"""Fixtures for the kvshare Python tests: where ../shared and the CLI are, and engines over the tiny real
models. Tests that need ../shared skip with a message when it is absent (a fresh clone has none)."""
import os
import pathlib

import pytest

SOURCE_DIR = pathlib.Path(__file__).resolve().parents[2]

MODELS = {
    "stories260K": "models/stories260K/stories260K.gguf",           # GGUF, SentencePiece vocab
    "tinystories-656k": "models/tinystories-656k",                   # Hugging Face folder, BPE tokenizer.json
}


def shared_path(relative: str) -> pathlib.Path:
    """A path under ../shared ($KVSHARE_SHARED_DIR, else the folder beside the source tree); skips the test
    when it is absent."""
    shared = pathlib.Path(os.environ.get("KVSHARE_SHARED_DIR") or SOURCE_DIR.parent / "shared")
    path = shared / relative
    if not path.exists():
        pytest.skip(f"skipped: needs ../shared/{relative} (the shared data folder is absent)")
    return path


@pytest.fixture(scope="session")
def cli() -> str:
    """The kvshare CLI built beside the module ($KVSHARE_CLI, set by CTest; else build/kvshare)."""
    path = os.environ.get("KVSHARE_CLI") or str(SOURCE_DIR / "build" / "kvshare")
    if not os.access(path, os.X_OK):
        pytest.skip(f"skipped: needs the kvshare CLI at {path} (build it, or set KVSHARE_CLI)")
    return path


@pytest.fixture(params=sorted(MODELS))
def model_path(request) -> str:
    return str(shared_path(MODELS[request.param]))


@pytest.fixture(scope="session")
def stories_path() -> str:
    return str(shared_path(MODELS["stories260K"]))


@pytest.fixture(scope="session")
def stories(stories_path):
    """One engine over stories260K shared by the tests that do not depend on a fresh cache."""
    import kvshare
    return kvshare.LLM(stories_path, kv_cache_memory="64MiB")
