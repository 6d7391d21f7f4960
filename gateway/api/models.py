"""Health, version, tags, ps, blobs and create."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from herd.gateway.store.create import CreateJob
from herd.gateway.errors import HerdError, NotFound
from herd.gateway.http.io import decode_body, json_response, ndjson_line, start_ndjson
from herd.gateway.registry.pull import pull_base_model
from herd.gateway.state import STATE
from herd.gateway.store.models import format_time, run_blocking
from herd.gateway.registry.transfers import TRANSFERS
from herd.protocol.api import (API_VERSION, CreateRequest, ErrorBody, PsResponse, RunnerStatus,
                               RunningModel, StatusChunk, TagsResponse, VersionResponse)

routes = web.RouteTableDef()


@routes.get("/")
async def root(_: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


@routes.get("/api/version")
async def version(_: web.Request) -> web.Response:
    return json_response(VersionResponse(API_VERSION))


@routes.get("/api/tags")
async def tags(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return json_response(TagsResponse(await run_blocking(store.list_models)))


@routes.get("/api/ps")
async def ps(request: web.Request) -> web.Response:
    """Ollama's fields per model (sizes summed over its replicas), and each replica."""
    models = []
    for group in request.app[STATE].scheduler.groups.values():
        replicas = group.replicas
        if not replicas:
            continue
        entry = group.entry
        expires = max(r.expires_at for r in replicas)
        models.append(RunningModel(
            name=entry.name.display, model=entry.name.display,
            size=sum(r.size for r in replicas), digest=entry.manifest_digest,
            details=entry.details, expires_at=format_time(min(expires, 253402300799.0)),
            size_vram=sum(r.size_vram for r in replicas),
            context_length=replicas[0].context_length, queued=group.waiting,
            runners=[RunnerStatus(r.node.endpoint, r.devices, r.size_vram, r.num_parallel,
                                  r.busy, max(r.refs - r.num_parallel, 0)) for r in replicas]))
    models.sort(key=lambda m: m.expires_at, reverse=True)
    return json_response(PsResponse(models))


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
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[StatusChunk | None] = asyncio.Queue()
    transfers = request.app[TRANSFERS]

    job = CreateJob(state.store, lambda s: loop.call_soon_threadsafe(updates.put_nowait, s))

    async def work() -> None:
        base = await run_blocking(job.base_to_pull, req)
        if base is not None:  # pulled here, on the loop: no job thread waits for it
            await pull_base_model(transfers, base, updates.put_nowait)
        await loop.run_in_executor(request.app[STATE].create_pool, job.run, req)

    task = asyncio.ensure_future(work())
    task.add_done_callback(lambda _: updates.put_nowait(None))
    if not req.stream:
        await task  # errors surface with their own status through the middleware
        return json_response(StatusChunk("success"))
    response: web.StreamResponse | None = None
    while (update := await updates.get()) is not None:
        if response is None:
            response = await start_ndjson(request)
        await response.write(ndjson_line(update))
    try:
        await task
    except HerdError as e:
        if response is None:  # nothing streamed yet: a plain error with its status
            raise
        await response.write(ndjson_line(ErrorBody(str(e))))
        await response.write_eof()
        return response
    if response is None:
        response = await start_ndjson(request)
    await response.write(ndjson_line(StatusChunk("success")))
    await response.write_eof()
    return response
