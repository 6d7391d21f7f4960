"""What a runner is started with: the model's weights and the load-time options. Requests
whose specs are equal share a runner (the key)."""

from __future__ import annotations

import os

from herd.gateway.store.models import ModelEntry
from herd.protocol.api import Options
from herd.protocol.config import Settings
from herd.protocol.wire import DeviceInfo, RunnerSpec

GIB = 2**30
# Ollama's default contexts by VRAM, and its thresholds (47 / 23 GiB rather than 48 / 24: a
# card's reported size is a little under its nominal one).
VRAM_TIERS = ((47 * GIB, 262144), (23 * GIB, 32768))
SMALL_VRAM_CONTEXT = 4096


def default_context_length(settings: Settings, nodes: list[list[DeviceInfo]]) -> int:
    """num_ctx when neither the request nor the model sets one: OLLAMA_CONTEXT_LENGTH, else
    Ollama's tier for the VRAM of its GPUs less OLLAMA_GPU_OVERHEAD — here the largest node's,
    as a runner lives on one node. CPU-only clusters get 4096, as Ollama does without a GPU.

    Ollama sizes the tier for its default of one request at a time; Herd's runners keep
    OLLAMA_NUM_PARALLEL slots (4), so the tier is the runner's whole budget, shared by its
    slots (never below 4096 each): the KV cache then takes what Ollama's would, and a model
    that fits Ollama's GPUs whole is not pushed into partial offload by four times the cache."""
    if settings.context_length > 0:
        return settings.context_length
    vram = max((sum(d.total - d.reserved for d in devices if d.is_gpu) for devices in nodes),
               default=0)
    tier = next((ctx for least, ctx in VRAM_TIERS if vram >= least), SMALL_VRAM_CONTEXT)
    return max(tier // max(settings.num_parallel, 1), SMALL_VRAM_CONTEXT)


def runner_spec(entry: ModelEntry, options: Options, settings: Settings,
                default_ctx: int) -> RunnerSpec:
    num_ctx = int(options.num_ctx) if options.num_ctx else default_ctx
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
