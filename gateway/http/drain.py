"""Draining a gateway on SIGTERM: from that moment /readyz answers 503 and new requests get 503
(so a load balancer moves on), while requests already in flight, streams included, run to their
end; gateway/server.py waits for them, bounded by HERD_DRAIN_TIMEOUT, then exits 0."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from herd.gateway.errors import ServerDraining

# Probes and scrapes are answered while draining: they are how the outside sees it.
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """True when every in-flight request finished within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            self._idle.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def _done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()


DRAIN: web.AppKey[Drain] = web.AppKey("herd_drain", Drain)


@web.middleware
async def drain_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.path in EXEMPT:
        return await handler(request)
    drain = request.app[DRAIN]
    if drain.draining:
        raise ServerDraining()
    drain.in_flight += 1
    try:
        return await handler(request)
    finally:
        drain._done()
