"""POST /api/show, POST /api/copy and DELETE /api/delete."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BadRequest
from gateway.http_io import decode_body
from gateway.names import InvalidName, parse_name
from gateway.state import STATE
from gateway.store import run_blocking
from protocol.api import CopyRequest, DeleteRequest

routes = web.RouteTableDef()


@routes.post("/api/copy")
async def copy(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    req = await decode_body(request, CopyRequest)
    try:
        source = parse_name(req.source)
    except InvalidName:
        raise BadRequest(f'source "{req.source}" is invalid') from None
    try:
        destination = parse_name(req.destination)
    except InvalidName:
        raise BadRequest(f'destination "{req.destination}" is invalid') from None
    await run_blocking(store.copy, source, destination)
    return web.Response(status=200)


@routes.delete("/api/delete")
async def delete(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    req = await decode_body(request, DeleteRequest)
    text = req.model or req.name
    if not text:
        raise BadRequest("model is required")
    try:
        name = parse_name(text)
    except InvalidName:
        raise BadRequest(f'name "{text}" is invalid') from None
    await run_blocking(store.delete, name, text)
    return web.Response(status=200)
