"""POST /api/embed (batched, L2-normalised) and the legacy POST /api/embeddings."""

from __future__ import annotations

import time

from aiohttp import web

from herd.gateway.errors import BadRequest
from herd.gateway.http.io import decode_body, json_response
from herd.gateway.pipeline.embed import embed_texts, normalise
from herd.gateway.pipeline.validate import request_keep_alive
from herd.gateway.state import STATE
from herd.gateway.store.models import model_name_or_400
from herd.protocol.api import (EmbedRequest, EmbedResponse, LegacyEmbeddingsRequest,
                               LegacyEmbeddingsResponse, merge_options)

routes = web.RouteTableDef()


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
