"""What a runner is started with: the model's weights and the load-time options. Requests
whose specs are equal share a runner (the key)."""

from __future__ import annotations

import os

from herd.gateway.store.models import ModelEntry
from herd.protocol.api import Options
from herd.protocol.config import Settings
from herd.protocol.wire import RunnerSpec


def runner_spec(entry: ModelEntry, options: Options, settings: Settings) -> RunnerSpec:
    num_ctx = int(options.num_ctx) if options.num_ctx else settings.context_length
    if entry.context_length:
        num_ctx = min(num_ctx, entry.context_length)  # so equal effective contexts share a runner
    num_ctx = max(num_ctx, 4)
    num_batch = int(options.num_batch) if options.num_batch else settings.num_batch
    threads = int(options.num_thread) if options.num_thread else settings.num_threads
    gpu = int(options.num_gpu) if options.num_gpu is not None else -1
    parallel = settings.num_parallel
    key = (f"{entry.model_digest}|ctx={num_ctx}|par={parallel}|batch={num_batch}|gpu={gpu}"
           f"|thr={threads}|kv={settings.kv_cache_type}|fa={settings.flash_attention}")
    if entry.adapters:
        key += "|lora=" + ",".join(os.path.basename(a) for a in entry.adapters)
    if entry.projector:
        key += "|proj=" + os.path.basename(entry.projector)
    if entry.draft:
        key += "|draft=" + os.path.basename(entry.draft)
    main_gpu = int(options.main_gpu) if options.main_gpu is not None else -1
    if main_gpu >= 0:
        key += f"|main={main_gpu}"
    # Digests, never paths: the node resolves them in its own store (worker/policy.py).
    adapters = [_digest(a) for a in entry.adapters]
    return RunnerSpec(key=key, model_key=key, main_gpu=main_gpu,
                      model_digest=entry.model_digest, num_ctx=num_ctx,
                      num_parallel=parallel, num_batch=num_batch, num_threads=threads,
                      num_gpu_layers=gpu, family=entry.config.model_family,
                      adapter_digests=adapters, kv_cache_type=settings.kv_cache_type,
                      flash_attention=settings.flash_attention,
                      projector_digest=_digest(entry.projector) if entry.projector else "",
                      draft_digest=_digest(entry.draft) if entry.draft else "")


def _digest(blob_path: str) -> str:
    return "sha256:" + os.path.basename(blob_path).removeprefix("sha256-")
