"""Health, version, tags, ps, blobs and create."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.errors import BadRequest, NotFound
from gateway.http_io import decode_body, json_response, ndjson_line, start_ndjson
from gateway.state import STATE
from gateway.store import format_time, model_name_or_400, parse_digest, run_blocking
from protocol.api import (CreateRequest, PsResponse, RunningModel, StatusChunk, TagsResponse,
                          VersionResponse)

VERSION = "0.13.0"

routes = web.RouteTableDef()


@routes.get("/")
async def root(_: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


@routes.get("/api/version")
async def version(_: web.Request) -> web.Response:
    return json_response(VersionResponse(VERSION))


@routes.get("/api/tags")
async def tags(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return json_response(TagsResponse(await run_blocking(store.list_models)))


@routes.get("/api/ps")
async def ps(request: web.Request) -> web.Response:
    runners = sorted(request.app[STATE].scheduler.loaded, key=lambda r: r.expires_at, reverse=True)
    return json_response(PsResponse([
        RunningModel(name=r.entry.name.display, model=r.entry.name.display, size=r.size,
                     digest=r.entry.manifest_digest, details=r.entry.details,
                     expires_at=format_time(min(r.expires_at, 253402300799.0)),
                     size_vram=r.size_vram, context_length=r.context_length)
        for r in runners]))


@routes.head("/api/blobs/{digest}")
async def head_blob(request: web.Request) -> web.Response:
    digest = request.match_info["digest"]
    if not request.app[STATE].store.has_blob(digest):
        raise NotFound(f'blob "{digest}" not found')
    return web.Response(status=200)


@routes.post("/api/blobs/{digest}")
async def post_blob(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    digest = request.match_info["digest"]
    if store.has_blob(digest):
        return web.Response(status=200)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(1 << 20):
            yield chunk

    await store.write_blob(digest, body())
    return web.Response(status=201)


@routes.post("/api/create")
async def create(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, CreateRequest)
    name = model_name_or_400(req.model or req.name)
    if not req.files:
        raise BadRequest("neither 'from' or 'files' was specified")
    ggufs: list[str] = []
    for filename, digest in req.files.items():
        if os.path.isabs(filename) or ".." in filename.split("/"):
            raise BadRequest("file path must be relative")
        parse_digest(digest)
        if not state.store.has_blob(digest):
            raise BadRequest(f'blob "{digest}" not found')
        ggufs.append(digest)
    if len(ggufs) != 1:
        raise BadRequest("exactly one GGUF file is supported")

    statuses: list[str] = []
    entry_digest = ggufs[0]
    if not req.stream:
        await run_blocking(state.store.create_from_gguf, name, entry_digest, statuses.append)
        return json_response(StatusChunk("success"))
    # Progress is produced in a worker thread; collect then stream (creation from a GGUF blob
    # only writes a small config and a manifest, so it is quick).
    response = await start_ndjson(request)
    try:
        await run_blocking(state.store.create_from_gguf, name, entry_digest, statuses.append)
    except BadRequest as e:
        for status in statuses:
            await response.write(ndjson_line(StatusChunk(status)))
        await response.write(ndjson_line({"error": str(e)}))
        await response.write_eof()
        return response
    for status in statuses + ["success"]:
        await response.write(ndjson_line(StatusChunk(status)))
    await response.write_eof()
    return response

