"""Embeddings for /api/embed, /api/embeddings and /v1/embeddings: every text in one runner
call (batched decodes there), L2-normalised here."""

from __future__ import annotations

import time

import numpy as np

from herd.gateway.errors import BadRequest, HerdError
from herd.gateway.state import GatewayState
from herd.gateway.store.models import ModelEntry
from herd.protocol.api import Options
from herd.protocol.wire import Embed


async def embed_texts(state: GatewayState, entry: ModelEntry, options: Options, keep_alive: int,
                      texts: list[str], truncate: bool) -> tuple[np.ndarray, int, int]:
    """(vectors, prompt tokens, load ns) for texts, embedded in one runner call."""
    t0 = time.perf_counter_ns()
    spec = state.scheduler.spec_for(entry, options)
    async with state.scheduler.lease(entry, spec, keep_alive) as runner:
        load_ns = time.perf_counter_ns() - t0
        if not texts:
            return np.empty((0, 0), dtype=np.float32), 0, load_ns
        reply = await runner.client.embed(Embed(next(state.request_ids), texts, truncate))
    if reply.error:
        raise HerdError(reply.error, reply.error_status or 500)
    vectors = np.frombuffer(reply.vectors, dtype=np.float32).reshape(len(texts), reply.dim)
    if not np.isfinite(vectors).all():
        raise BadRequest("embedding contains NaN or Inf values")
    return vectors, reply.prompt_tokens, load_ns


def normalise(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    if 0 < dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
