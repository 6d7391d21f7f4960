"""Measures what llama.cpp allocates on the CPU for a model at given context settings, from its
own log lines, and prints it next to herd.gateway.placement's estimate (one JSON line per setting).

    python bench/measure_memory.py MODEL.gguf n_ctx_seq:n_seq:n_batch:cache[:fa] ...
"""

from __future__ import annotations

import ctypes
import json
import re
import sys

import llama_cpp as L

_LINES: list[str] = []


@L.llama_log_callback
def _capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    _LINES.append(text.decode("utf-8", "replace"))


L.llama_log_set(_capture, ctypes.c_void_p(0))

_TYPES = {"f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0, "q4_0": L.GGML_TYPE_Q4_0}
_FA = {"auto": -1, "off": 0, "on": 1}


def buffers(text: str) -> list[tuple[str, str, float]]:
    out = []
    for line in text.splitlines():
        m = re.search(r"(\S+)\s+(model|KV|compute|output|REPACK model|RS)\s*buffer size\s*=\s*([0-9.]+) MiB", line)
        if m:
            out.append((line.split(":")[0].strip(), m.group(1) + " " + m.group(2), float(m.group(3))))
    return out


def main() -> None:
    path = sys.argv[1]
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.n_gpu_layers = 0
    _LINES.clear()
    model = L.llama_model_load_from_file(path.encode(), mp)
    load_log = "".join(_LINES)
    model_bufs = buffers(load_log)
    for spec in sys.argv[2:]:
        parts = spec.split(":")
        n_ctx_seq, n_seq, n_batch = (int(p) for p in parts[:3])
        cache = parts[3]
        fa = parts[4] if len(parts) > 4 else "auto"
        swa_full = parts[5] != "0" if len(parts) > 5 else True
        cp = L.llama_context_default_params()
        cp.flash_attn_type = _FA[fa]
        cp.type_k = cp.type_v = _TYPES[cache]
        cp.n_ctx = n_ctx_seq * n_seq
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq
        cp.kv_unified = False
        cp.swa_full = swa_full
        cp.n_threads = cp.n_threads_batch = 2
        _LINES.clear()
        ctx = L.llama_init_from_model(model, cp)
        log = "".join(_LINES)
        row = {"model": path.rsplit("/", 1)[-1], "n_ctx_seq": n_ctx_seq, "n_seq": n_seq,
               "n_batch": n_batch, "cache": cache, "fa": fa, "swa_full": swa_full, "ok": bool(ctx),
               "model_buffers": model_bufs, "ctx_buffers": buffers(log),
               "log": [l for l in log.splitlines()
                       if re.search(r"cells|n_ctx|flash|swa|graph:", l, re.I)
                       and "input tensor" not in l and "reserving" not in l]}
        print(json.dumps(row))
        if ctx:
            L.llama_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
