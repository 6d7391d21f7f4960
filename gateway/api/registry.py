"""POST /api/pull and POST /api/push: NDJSON progress, or only the last status with
`stream: false`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from herd.gateway.errors import BadRequest, HerdError
from herd.gateway.http.io import decode_body, json_response, ndjson_line, start_ndjson
from herd.gateway.registry.pull import pull_model
from herd.gateway.registry.push import push_model
from herd.gateway.state import STATE
from herd.gateway.registry.transfers import TRANSFERS, Transfers
from herd.protocol.api import API_VERSION, ErrorBody, StatusChunk, TransferRequest

log = logging.getLogger("herd.gateway")
routes = web.RouteTableDef()


async def transfers_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: after the app's own context, whose store it uses."""
    transfers = Transfers.open(app[STATE].store, API_VERSION)
    app[TRANSFERS] = transfers
    try:
        yield
    finally:
        await transfers.close()


async def _model_of(request: web.Request) -> TransferRequest:
    req = await decode_body(request, TransferRequest)
    if not (req.model or req.name):
        raise BadRequest("model is required")
    return req


async def respond(request: web.Request, chunks: AsyncIterator[StatusChunk],
                  stream: bool) -> web.StreamResponse:
    """Errors before the first line keep their status; later ones end the stream as an error
    line, as Ollama's clients expect."""
    if not stream:
        last = StatusChunk("success")
        async for last in chunks:
            pass
        return json_response(last)
    response: web.StreamResponse | None = None
    try:
        async for chunk in chunks:
            if response is None:
                response = await start_ndjson(request)
            await response.write(ndjson_line(chunk))
    except Exception as e:
        if response is None:
            raise  # the error middleware answers with the error's status
        if not isinstance(e, HerdError):
            log.exception("%s failed", request.path)
        await response.write(ndjson_line(ErrorBody(str(e))))
    if response is None:  # nothing to report is still a stream
        response = await start_ndjson(request)
    await response.write_eof()
    return response


@routes.post("/api/pull")
async def pull(request: web.Request) -> web.StreamResponse:
    req = await _model_of(request)
    chunks = pull_model(request.app[TRANSFERS], req.model or req.name, req.insecure)
    return await respond(request, chunks, req.stream)


@routes.post("/api/push")
async def push(request: web.Request) -> web.StreamResponse:
    req = await _model_of(request)
    chunks = push_model(request.app[TRANSFERS], req.model or req.name, req.insecure)
    return await respond(request, chunks, req.stream)
