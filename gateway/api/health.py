"""GET /healthz (this process answers) and GET /readyz (it can serve: not draining, a worker
node answers its heartbeat and the model store is readable), for load balancers and
orchestrators (ollama#1378). Not-ready is 503 with the reason, in Ollama's error body: a
gateway draining on SIGTERM, a worker that refused this gateway's CURVE key, a worker name that
does not resolve, so an operator (or `kubectl describe`) sees why without reading logs."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from herd.gateway.cluster.discovery import DISCOVERY
from herd.gateway.errors import NotReady
from herd.gateway.http.drain import DRAIN
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


def _ready(node: Any) -> bool:
    return node.answered and not getattr(node, "draining", False)


def _why_not(node: Any) -> str:
    """The node's endpoint, and what is wrong when the link knows (a refused key, draining)."""
    if getattr(node, "draining", False):
        return f"{node.endpoint} is shutting down"
    error = getattr(node, "link_error", "")
    return f"{node.endpoint}: {error}" if error else node.endpoint


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAIN].draining:
        raise NotReady("gateway is shutting down")
    state = request.app[STATE]
    nodes = state.scheduler.nodes
    ready = [n for n in nodes if _ready(n)]
    if not ready:
        problems = [*request.app[DISCOVERY].errors.values(), *(_why_not(n) for n in nodes)]
        raise NotReady("no worker node reachable" + (
            f" ({'; '.join(problems)})" if problems else ""))
    problem = await run_blocking(_store_problem, state)
    if problem:
        raise NotReady(problem)
    workers = [{"endpoint": n.endpoint, "ready": _ready(n),
                **({} if _ready(n) else {"error": _why_not(n)})} for n in nodes]
    return json_response({"status": "ready", "nodes": len(ready), "workers": workers})
