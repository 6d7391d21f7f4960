"""POST /api/tokenize and POST /api/detokenize: the runner holding the model answers with its
own vocabulary (llama.cpp's tokenizer, the same the model's prompts go through)."""

from __future__ import annotations

from aiohttp import web

from herd.gateway.errors import BadRequest, HerdError
from herd.gateway.http.io import decode_body, json_response
from herd.gateway.pipeline.validate import request_keep_alive, resolve_model
from herd.gateway.state import STATE, GatewayState
from herd.protocol.api import KeepAlive, Options, merge_options
from herd.protocol.tokens import (DetokenizeRequest, DetokenizeResponse, TokenizeRequest,
                                  TokenizeResponse)
from herd.protocol.wire import Tokenize, Tokens

routes = web.RouteTableDef()


async def _ask(state: GatewayState, model: str, options: Options | None,
               keep_alive: KeepAlive, message: Tokenize) -> Tokens:
    entry = resolve_model(state, model)
    options_ = merge_options(entry.params, options)
    spec = state.scheduler.spec_for(entry, options_)
    async with state.scheduler.lease(entry, spec,
                                     request_keep_alive(keep_alive, state.settings)) as runner:
        reply = await runner.client.tokenize(message)
    if reply.error:
        raise HerdError(reply.error, reply.error_status or 500)
    return reply


@routes.post("/api/tokenize")
async def tokenize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, TokenizeRequest)
    if req.content is None:
        raise BadRequest("content is required")
    reply = await _ask(state, req.model, req.options, req.keep_alive,
                       Tokenize(next(state.request_ids), content=req.content))
    return json_response(TokenizeResponse(req.model, reply.tokens))


@routes.post("/api/detokenize")
async def detokenize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, DetokenizeRequest)
    if req.tokens is None:
        raise BadRequest("tokens is required")
    reply = await _ask(state, req.model, req.options, req.keep_alive,
                       Tokenize(next(state.request_ids), tokens=req.tokens, detokenize=True))
    return json_response(DetokenizeResponse(req.model, reply.content))
