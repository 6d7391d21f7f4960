"""The gateway's control connection to one worker node: load, unload, hear about exits.

A dead process cannot say it died, so the gateway sends the node a Hello every second and the
node answers with its id, its devices and the runners it holds: no answer for a while means
unreachable (its requests are failed, its runners dropped); a new id means the node was
restarted and every runner it had is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import logging
import time
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio

from herd.gateway.errors import RunnerError
from herd.protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, NodeInfo, RunnerExited,
                           RunnerSpec, UnloadModel, WireCodec)

log = logging.getLogger("herd.gateway")

HEARTBEAT_S = 1.0
UNREACHABLE_AFTER_S = 5.0


class NodeClient:
    def __init__(self, zctx: zmq.asyncio.Context, endpoint: str,
                 on_runner_exit: Callable[[RunnerExited], None],
                 on_restart: Callable[[NodeClient], None] = lambda node: None,
                 on_down: Callable[[NodeClient], None] = lambda node: None) -> None:
        self.endpoint = endpoint
        self.codec = WireCodec()
        self.sock = zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self._on_runner_exit = on_runner_exit
        self._on_restart = on_restart
        self._on_down = on_down
        self.info = NodeInfo("")  # the latest answer: devices and runners
        self._fresh: list[asyncio.Future[NodeInfo]] = []
        self._was_alive = True
        # Runners this gateway held when the node stopped answering: released if it returns.
        self.orphans: set[str] = set()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ModelLoaded]] = {}
        self.loaded_keys: set[str] = set()
        self.node_id = ""
        # Optimistic at first: a node that is still starting gets the grace period.
        self._last_seen = time.monotonic()
        self._reader = asyncio.create_task(self._read())
        self._reader.add_done_callback(_log_if_failed)
        self._heartbeat = asyncio.create_task(self._beat())

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._last_seen < UNREACHABLE_AFTER_S

    @property
    def answered(self) -> bool:
        """Alive and heard from at least once (`alive` alone is optimistic at start)."""
        return self.alive and bool(self.node_id)

    async def start(self) -> None:
        await self.sock.send_multipart(self.codec.encode(Hello()))

    async def refresh(self, timeout: float = 2.0) -> NodeInfo:
        """A NodeInfo answered after this call: what the node holds now, not a second ago
        (placement must see what other gateways just loaded). The last one if it is slow."""
        future: asyncio.Future[NodeInfo] = asyncio.get_running_loop().create_future()
        self._fresh.append(future)
        await self.sock.send_multipart(self.codec.encode(Hello()))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return self.info
        finally:
            if future in self._fresh:
                self._fresh.remove(future)

    async def request_load(self, spec: RunnerSpec, timeout: float) -> Awaitable[ModelLoaded]:
        """Sends the load and returns what to await for the runner. Once this returns, the
        node counts the runner's memory: later placements see it while it starts."""
        request_id = next(self._ids)
        future: asyncio.Future[ModelLoaded] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.sock.send_multipart(self.codec.encode(LoadModel(request_id, spec)))
        except BaseException:
            self._pending.pop(request_id, None)
            raise

        async def ready() -> ModelLoaded:
            try:
                loaded = await asyncio.wait_for(future, None if math.isinf(timeout) else timeout)
            finally:
                self._pending.pop(request_id, None)
            self.loaded_keys.add(spec.key)
            return loaded

        return ready()

    async def load(self, spec: RunnerSpec, timeout: float) -> ModelLoaded:
        return await (await self.request_load(spec, timeout))

    async def unload(self, key: str) -> None:
        self.loaded_keys.discard(key)
        await self.sock.send_multipart(self.codec.encode(UnloadModel(key)))

    async def close(self) -> None:
        for task in (self._heartbeat, self._reader):
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.sock.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self.sock.send_multipart(self.codec.encode(Hello()))
            alive = self.alive
            if self._was_alive and not alive:
                log.warning("worker node %s stopped answering", self.endpoint)
                self.loaded_keys.clear()
                self._on_down(self)
            self._was_alive = alive

    def _seen(self, info: NodeInfo) -> None:
        self._last_seen = time.monotonic()
        self.info = info
        fresh, self._fresh = self._fresh, []
        for future in fresh:
            if not future.done():
                future.set_result(info)
        if info.node_id == self.node_id:
            if self.orphans:
                orphans, self.orphans = self.orphans, set()
                log.warning("worker node %s answers again: releasing %d runner(s) held before",
                            self.endpoint, len(orphans))
                for key in orphans:
                    self.sock.send_multipart(self.codec.encode(UnloadModel(key)))
            return
        self.orphans.clear()
        restarted = bool(self.node_id)
        self.node_id = info.node_id
        if restarted:
            log.warning("worker node %s restarted: its runners are gone", self.endpoint)
            self.loaded_keys.clear()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RunnerError(f"worker node {self.endpoint} restarted"))
            self._on_restart(self)

    async def _read(self) -> None:
        while True:
            kind, payload = await self.sock.recv_multipart()
            try:
                message = self.codec.decode(kind, payload)
            except Exception:
                log.warning("undecodable message from node %s", self.endpoint)
                continue
            self._last_seen = time.monotonic()
            if isinstance(message, NodeInfo):
                self._seen(message)
            elif isinstance(message, ModelLoaded):
                future = self._pending.get(message.request_id)
                if future is not None and not future.done():
                    future.set_result(message)
            elif isinstance(message, LoadFailed):
                future = self._pending.get(message.request_id)
                if future is not None and not future.done():
                    future.set_exception(RunnerError(message.error))
            elif isinstance(message, RunnerExited):
                self.loaded_keys.discard(message.key)
                self._on_runner_exit(message)


def _log_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("socket reader stopped", exc_info=task.exception())
