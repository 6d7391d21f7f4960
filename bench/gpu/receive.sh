#!/usr/bin/env bash
# On the GPU host: moves the bundles carried with this call out of the working tree into
# /tmp/herd-gpu, which outlives the call while the machine stays warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${HERD_GPU_DIR:-/tmp/herd-gpu}
mkdir -p "$DEST/wheels"
for b in gpu-local/b*; do
  [[ -d $b ]] || continue
  [[ -d $b/wheels ]] && mv "$b"/wheels/* "$DEST/wheels/" 2>/dev/null || true
  find "$b" -maxdepth 1 -type f -exec mv {} "$DEST/" \;
  echo "received $b"
done
echo "files in $DEST: $(ls "$DEST" | wc -l)"
