"""GET /healthz (this process answers) and GET /readyz (it can serve: a worker node answers
its heartbeat and the model store is readable), for load balancers and orchestrators
(ollama#1378). Not-ready is 503 with the reason, in Ollama's error body."""

from __future__ import annotations

import os

from aiohttp import web

from herd.gateway.errors import NotReady
from herd.gateway.http.io import json_response
from herd.gateway.state import STATE, GatewayState
from herd.gateway.store.models import run_blocking

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _store_problem(state: GatewayState) -> str:
    """Empty when the store's manifests can be listed; else why not."""
    path = state.store.manifests_dir
    try:
        os.listdir(path)
    except OSError as e:
        return f"model store not readable: {path}: {e.strerror or e}"
    return ""


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    nodes = state.scheduler.nodes
    alive = [n for n in nodes if n.answered]
    if not alive:
        raise NotReady("no worker node reachable" + (
            f" ({', '.join(n.endpoint for n in nodes)})" if nodes else ""))
    problem = await run_blocking(_store_problem, state)
    if problem:
        raise NotReady(problem)
    return json_response({"status": "ready", "nodes": len(alive)})
