"""POST /api/embed (batched, L2-normalised) and the legacy POST /api/embeddings."""

from __future__ import annotations

import time

import numpy as np
from aiohttp import web

from gateway.errors import BadRequest, HerdError
from gateway.http_io import decode_body, json_response
from gateway.inference import request_keep_alive, runner_spec
from gateway.state import STATE, GatewayState
from gateway.store import ModelEntry, model_name_or_400
from protocol.api import (EmbedRequest, EmbedResponse, LegacyEmbeddingsRequest,
                          LegacyEmbeddingsResponse, Options, merge_options)
from protocol.wire import Embed

routes = web.RouteTableDef()


async def embed_texts(state: GatewayState, entry: ModelEntry, options: Options, keep_alive: int,
                      texts: list[str], truncate: bool) -> tuple[np.ndarray, int, int]:
    """(vectors, prompt tokens, load ns) for texts, embedded in one runner call."""
    t0 = time.perf_counter_ns()
    spec = runner_spec(entry, options, state.settings)
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


def _inputs(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest("invalid input type")


@routes.post("/api/embed")
async def embed(request: web.Request) -> web.Response:
    t0 = time.perf_counter_ns()
    state = request.app[STATE]
    req = await decode_body(request, EmbedRequest)
    if not req.model:
        raise BadRequest("model is required")
    texts = _inputs(req.input)
    if req.dimensions < 0:
        raise BadRequest("dimensions must be a non-negative integer")
    entry = state.store.resolve(model_name_or_400(req.model), shown=req.model)
    keep_alive = request_keep_alive(req.keep_alive, state.settings)
    vectors, tokens, load_ns = await embed_texts(
        state, entry, merge_options(entry.params, req.options), keep_alive, texts, req.truncate)
    embeddings = normalise(vectors, req.dimensions).tolist() if texts else []
    return json_response(EmbedResponse(
        model=req.model, embeddings=embeddings, total_duration=time.perf_counter_ns() - t0,
        load_duration=load_ns, prompt_eval_count=tokens))


@routes.post("/api/embeddings")
async def legacy_embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, LegacyEmbeddingsRequest)
    if not req.model:
        raise BadRequest("model is required")
    entry = state.store.resolve(model_name_or_400(req.model), shown=req.model)
    keep_alive = request_keep_alive(req.keep_alive, state.settings)
    texts = [req.prompt] if req.prompt else []
    vectors, _, _ = await embed_texts(state, entry, merge_options(entry.params, req.options),
                                      keep_alive, texts, True)
    return json_response(LegacyEmbeddingsResponse(vectors[0].astype(float).tolist() if texts else []))
