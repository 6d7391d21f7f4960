"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import zmq.asyncio
from aiohttp import web

from herd.gateway.api import (anthropic, embed, health, manage, models, native, openai,
                              registry, rerank, responses, tokens)
from herd.gateway.http import metrics
from herd.gateway.http.auth import auth_middleware
from herd.gateway.http.cors import add_cors_headers, cors_middleware
from herd.gateway.http.drain import DRAIN, Drain, drain_middleware
from herd.gateway.http.errors import error_middleware
from herd.gateway.cluster.discovery import DISCOVERY, Discovery
from herd.gateway.cluster.node_client import NodeClient
from herd.gateway.cluster.runner_client import RunnerClient
from herd.gateway.cluster.scheduler import NodeFactory, RunnerFactory, Scheduler
from herd.gateway.state import STATE, GatewayState
from herd.gateway.store.models import ModelStore
from herd.protocol.config import Settings
from herd.protocol.curve import ClientKeys

MAX_BODY = 256 * 1024 * 1024  # chat histories with images can be large; blobs are streamed


def create_app(settings: Settings, node_endpoints: Sequence[str], *,
               connect_node: NodeFactory | None = None,
               connect_runner: RunnerFactory | None = None) -> web.Application:
    """The gateway. `connect_node` / `connect_runner` make the clients the scheduler talks to
    (ZeroMQ ones by default); tests pass in-process fakes to drive routes and placement
    without a model or a process."""
    # Metrics outermost: it records the status the client gets, from every other middleware.
    # Keys are checked inside the error middleware (a 401 gets its dialect's envelope) and
    # after CORS (browsers send preflights without credentials). Draining innermost: a request
    # refused while draining was never started.
    middlewares = [metrics.metrics_middleware, cors_middleware(settings), error_middleware]
    if settings.api_keys:
        middlewares.append(auth_middleware(settings))
    middlewares.append(drain_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[DRAIN] = Drain()
    app.on_response_prepare.append(add_cors_headers(settings))
    for api in (models, native, embed, manage, openai, anthropic, responses, registry, metrics,
                health, tokens, rerank):
        app.add_routes(api.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        zctx = zmq.asyncio.Context()
        store = ModelStore(settings.models_dir)
        store.remove_partial_files()
        # CURVE on every TCP link to the workers (node and runner sockets) when keys are set.
        keys = ClientKeys.load(settings.curve_secret_key, settings.curve_server_key)
        scheduler = Scheduler(
            settings,
            connect_node or (lambda endpoint, *callbacks: NodeClient(zctx, endpoint, *callbacks,
                                                                     keys=keys)),
            connect_runner or (lambda endpoint, on_stall: RunnerClient(
                zctx, endpoint, settings.runner_stall_s, on_stall, keys=keys)))
        discovery = app[DISCOVERY] = Discovery(scheduler, list(node_endpoints),
                                               settings.discovery_interval_s)
        await discovery.start()
        app[STATE] = GatewayState(settings=settings, store=store, scheduler=scheduler,
                                  metrics=metrics.GatewayMetrics(scheduler))
        try:
            yield
        finally:
            await discovery.close()
            await scheduler.close()
            app[STATE].create_pool.shutdown(wait=False, cancel_futures=True)
            zctx.term()

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(registry.transfers_context)
    return app
