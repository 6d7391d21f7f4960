#!/usr/bin/env bash
# On the GPU host, once every bundle has been received (receive.sh): checks and unpacks the
# prebuilt CUDA builds, installs the wheels, assembles gemma3 270M and runs bench/suite.py with
# every layer offloaded. The table and the JSON report land in $OUT (the device tool's folder).
#
# usage: bash bench/gpu/run_suite.sh [suite.py arguments]   (default --streams 1,8,32)
set -euo pipefail
cd "$(dirname "$0")/../.."
G=${HERD_GPU_DIR:-/tmp/herd-gpu}
OUT=${OUT:-$G/out}
mkdir -p "$OUT"
(cd "$G" && sha256sum -c --quiet SHA256SUMS)
if [[ ! -f $G/gemma-3-270m-q4_k_m.gguf ]]; then
  cat "$G"/gemma.gguf.part* > "$G/gemma-3-270m-q4_k_m.gguf"
fi
(cd "$G" && sha256sum -c --quiet gemma.sha256)
if [[ ! -f $G/site/.installed ]]; then
  rm -rf "$G/site" "$G/server" && mkdir -p "$G/site" "$G/server"
  cat "$G"/llcp-*.part* | tar xzf - -C "$G/site"
  cat "$G"/llama-server-bench-*.part* | tar xzf - -C "$G/server"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$G/site" "$G"/wheels/*.whl
  touch "$G/site/.installed"
fi
server=$(find "$G/server" -name llama-server -type f | head -1)
export PYTHONPATH=$G/site:$PWD PYTHONUNBUFFERED=1
export HERD_BENCH_LLAMA_SERVER=$server
export LD_LIBRARY_PATH=$(dirname "$server"):${LD_LIBRARY_PATH:-}
python3 -c 'import llama_cpp as L; assert L.llama_supports_gpu_offload(), "not a CUDA build"'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
args=("$@"); [[ ${#args[@]} -gt 0 ]] || args=(--streams 1,8,32)
python3 bench/suite.py --model-path "$G/gemma-3-270m-q4_k_m.gguf" --gpu-layers 999 --threads 8 \
  --quiet-wait 0 "${args[@]}" 2>&1 | tee "$OUT/suite.txt"
cp bench/out/suite-*.json "$OUT/" 2>/dev/null || true
