"""POST /api/rerank and POST /v1/rerank: a rank-pooling model (a reranker GGUF) scores every
document against the query in one runner call; the answer is sorted, best first."""

from __future__ import annotations

import numpy as np
from aiohttp import web

from herd.gateway.errors import BadRequest, HerdError
from herd.gateway.http.io import decode_body, json_response
from herd.gateway.pipeline.validate import request_keep_alive, resolve_model
from herd.gateway.state import STATE
from herd.protocol.api import merge_options
from herd.protocol.rerank import (RerankDocument, RerankRequest, RerankResponse, RerankResult,
                                  RerankUsage)
from herd.protocol.wire import Rerank

routes = web.RouteTableDef()


def _documents(value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(d, str) for d in value):
        raise BadRequest("documents must be a non-empty list of strings")
    return value


@routes.post("/api/rerank")
@routes.post("/v1/rerank")
async def rerank(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, RerankRequest)
    entry = resolve_model(state, req.model)
    if req.query is None:
        raise BadRequest("query is required")
    documents = _documents(req.documents)
    if "embedding" not in entry.capabilities:
        # A generative model has no pooling at all: refuse before loading it. (A pooling model
        # that does not rank is refused by its runner, which reads the pooling type.)
        raise BadRequest("this model does not support reranking (it is not a rank-pooling model)")
    options = merge_options(entry.params, req.options)
    spec = state.scheduler.spec_for(entry, options)
    keep_alive = request_keep_alive(req.keep_alive, state.settings)
    async with state.scheduler.lease(entry, spec, keep_alive) as runner:
        reply = await runner.client.rerank(Rerank(next(state.request_ids), req.query, documents,
                                                  req.truncate is not False))
    if reply.error:
        raise HerdError(reply.error, reply.error_status or 500)
    scores = np.frombuffer(reply.vectors, dtype=np.float32).reshape(len(documents), reply.dim)[:, 0]
    if not np.isfinite(scores).all():
        raise HerdError("the reranker produced NaN or Inf scores", 500)
    # Stable: equal scores keep the request's order.
    order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
    if req.top_n is not None and req.top_n > 0:
        order = order[:req.top_n]
    results = [RerankResult(i, float(scores[i]),
                            RerankDocument(documents[i]) if req.return_documents else None)
               for i in order]
    return json_response(RerankResponse(req.model, results,
                                        RerankUsage(reply.prompt_tokens, reply.prompt_tokens)))
