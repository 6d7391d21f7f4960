"""Estimate vs measured: reads bench/measure_memory.py's JSON lines and prints a table.

    python bench/measure_memory.py MODEL.gguf SPEC... > m.jsonl
    python bench/compare_estimate.py MODEL.gguf m.jsonl
"""

from __future__ import annotations

import json
import sys

from herd.gateway.placement.estimate import estimate
from herd.gateway.placement.gguf_layout import MiB, read_model


def rows(model_path: str, jsonl: str):
    info = read_model(model_path)
    for line in open(jsonl):
        r = json.loads(line)
        if not r["ok"]:
            continue
        est = estimate(info, n_ctx_per_seq=r["n_ctx_seq"], n_seq=r["n_seq"], n_batch=r["n_batch"],
                       cache_type=r["cache"], flash_attention=r["fa"] != "off",
                       swa_full=r.get("swa_full", True))
        mb = {k: v for _, k, v in r["model_buffers"]}
        kv = sum(v for _, k, v in r["ctx_buffers"] if k == "CPU KV")
        comp = sum(v for _, k, v in r["ctx_buffers"] if k == "CPU compute")
        out = sum(v for _, k, v in r["ctx_buffers"] if k == "CPU output")
        yield r, info, est, mb, kv, comp, out


def main() -> None:
    model_path, jsonl = sys.argv[1], sys.argv[2]
    print("| model | n_ctx×n_seq | n_batch | cache | FA | swa_full | weights est/meas (MiB) | repack est/meas | KV est/meas | compute est/meas | err compute |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r, info, est, mb, kv, comp, out in rows(model_path, jsonl):
        w = info.data_span / MiB
        err = (est.compute / MiB - comp) / comp * 100 if comp else 0.0
        print(f"| {r['model'][:22]} | {r['n_ctx_seq']}×{r['n_seq']} | {r['n_batch']} | {r['cache']} | "
              f"{r['fa']} | {int(r.get('swa_full', True))} | {w:.2f}/{mb.get('CPU_Mapped model', 0):.2f} | "
              f"{est.repack / MiB:.2f}/{mb.get('CPU_REPACK model', 0):.2f} | "
              f"{est.kv / MiB:.2f}/{kv:.2f} | {est.compute / MiB:.2f}/{comp:.2f} | {err:+.1f}% |")


if __name__ == "__main__":
    main()
