#!/usr/bin/env bash
# Builds llama.cpp (CPU only, Release, native CPU) outside the project, in a cache folder, and prints the
# folder holding its binaries. llama.cpp's source comes from the npm package node-llama-cpp, which ships it as
# a git bundle; nothing of llama.cpp ever goes into this repository.
#
#   bash bench/llamacpp_build.sh            # builds once into ${KVSHARE_LLAMACPP_DIR:-~/.cache/kvshare-llamacpp}
#   KVSHARE_LLAMACPP_DIR=/some/dir bash bench/llamacpp_build.sh
#
# Reuses a finished build (the stamp file build/kvshare-build.stamp records the package version, the source
# commit and the flags). Takes 10-20 minutes on 2 cores. Network: only the npm registry (npm pack).
set -euo pipefail

NODE_LLAMA_CPP_VERSION="${NODE_LLAMA_CPP_VERSION:-3.21.1}"
DIR="${KVSHARE_LLAMACPP_DIR:-$HOME/.cache/kvshare-llamacpp}"
JOBS="${LLAMACPP_BUILD_JOBS:-2}"
WANTED_TARGETS=(llama-bench llama-server llama-tokenize llama-batched-bench)

# CPU only: every GPU/accelerator backend off (nvcc exists on these machines, but there is no GPU), no
# networking code (curl/openssl), no web UI (its prebuilt assets would be downloaded), no KleidiAI (fetched),
# no BLAS (ggml's own CPU kernels, as a default build uses). GGML_NATIVE stays at its default (ON): the build
# is tuned for this CPU, which is what a user building llama.cpp here gets.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DGGML_CUDA=OFF -DGGML_HIP=OFF -DGGML_MUSA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_SYCL=OFF
  -DGGML_OPENCL=OFF -DGGML_RPC=OFF -DGGML_BLAS=OFF -DGGML_CPU_KLEIDIAI=OFF -DGGML_WEBGPU=OFF
  -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON
)

log() { echo "llamacpp_build: $*" >&2; }

src="$DIR/src"
build="$DIR/build"
stamp="$build/kvshare-build.stamp"

# 1. Source: npm pack node-llama-cpp, clone its git bundle.
if [ ! -d "$src/.git" ]; then
  command -v npm >/dev/null || { log "npm is needed (apt-get install npm)"; exit 1; }
  mkdir -p "$DIR"
  tmp="$(mktemp -d "$DIR/npm.XXXXXX")"
  log "fetching node-llama-cpp@$NODE_LLAMA_CPP_VERSION from the npm registry"
  (cd "$tmp" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >/dev/null &&
    tar -xzf "node-llama-cpp-$NODE_LLAMA_CPP_VERSION.tgz" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json)
  git clone -q "$tmp/package/llama/gitRelease.bundle" "$src.tmp"
  cp "$tmp/package/llama/llama.cpp.info.json" "$src.tmp/.node-llama-cpp-info.json"
  echo "$NODE_LLAMA_CPP_VERSION" >"$src.tmp/.node-llama-cpp-version"
  rm -rf "$tmp"
  mv "$src.tmp" "$src"
fi
commit="$(git -C "$src" rev-parse HEAD)"

want_stamp="node-llama-cpp=$(cat "$src/.node-llama-cpp-version" 2>/dev/null || echo '?') commit=$commit flags=${CMAKE_FLAGS[*]} targets=${WANTED_TARGETS[*]}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$build/bin/llama-server" ] &&
  [ -x "$build/bin/llama-bench" ]; then
  log "reusing $build/bin (llama.cpp $commit)"
  echo "$build/bin"
  exit 0
fi

# 2. Configure and build. CUDACXX is cleared so that nothing probes nvcc.
log "configuring llama.cpp $commit in $build"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
rm -f "$stamp"
env -u CUDACXX -u CUDA_PATH cmake -S "$src" -B "$build" "${generator[@]}" "${CMAKE_FLAGS[@]}" >"$DIR/configure.log" 2>&1 ||
  { tail -30 "$DIR/configure.log" >&2; log "configure failed (log: $DIR/configure.log)"; exit 1; }
if grep -qi "cuda" "$build/CMakeCache.txt" && grep -q "^GGML_CUDA:BOOL=ON" "$build/CMakeCache.txt"; then
  log "CUDA got enabled; refusing"; exit 1
fi

targets=()
help="$(cmake --build "$build" --target help 2>/dev/null || true)"
for t in "${WANTED_TARGETS[@]}"; do
  if grep -qE "(^|[ :.])$t(:| |$)" <<<"$help"; then targets+=("$t"); else log "target $t does not exist in this version; skipped"; fi
done
log "building ${targets[*]} with -j$JOBS (10-20 minutes on 2 cores; log: $DIR/build.log)"
cmake --build "$build" -j"$JOBS" --target "${targets[@]}" >"$DIR/build.log" 2>&1 ||
  { tail -30 "$DIR/build.log" >&2; log "build failed (log: $DIR/build.log)"; exit 1; }
echo "$want_stamp" >"$stamp"
log "built: $(cd "$build/bin" && ls | tr '\n' ' ')"
echo "$build/bin"
