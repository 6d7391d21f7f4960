"""The gateway's control connection to one worker node: load, unload, hear about exits."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from gateway.errors import RunnerError
from gateway.peer_watch import watch_peer
from protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, RunnerExited, RunnerSpec,
                           UnloadModel, WireCodec)

log = logging.getLogger("herd.gateway")


class NodeClient:
    def __init__(self, zctx: zmq.asyncio.Context, endpoint: str,
                 on_runner_exit: Callable[[RunnerExited], None]) -> None:
        self.endpoint = endpoint
        self.codec = WireCodec()
        self.sock = zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self._on_runner_exit = on_runner_exit
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ModelLoaded]] = {}
        self.loaded_keys: set[str] = set()
        # Optimistic until the socket says otherwise: a TCP node may still be starting.
        self.alive = True
        self._watch = watch_peer(self.sock, self._lost, self._connected)
        self.sock.connect(endpoint)
        self._reader = asyncio.create_task(self._read())

    async def start(self) -> None:
        await self.sock.send_multipart(self.codec.encode(Hello()))

    async def load(self, spec: RunnerSpec, timeout: float) -> ModelLoaded:
        request_id = next(self._ids)
        future: asyncio.Future[ModelLoaded] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.sock.send_multipart(self.codec.encode(LoadModel(request_id, spec)))
            loaded = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)
        self.loaded_keys.add(spec.key)
        return loaded

    async def unload(self, key: str) -> None:
        self.loaded_keys.discard(key)
        await self.sock.send_multipart(self.codec.encode(UnloadModel(key)))

    def _lost(self) -> None:
        log.warning("lost the connection to worker node %s", self.endpoint)
        self.alive = False
        self.loaded_keys.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RunnerError(f"worker node {self.endpoint} went away"))

    def _connected(self) -> None:
        self.alive = True
        # A restarted node knows no gateways: introduce ourselves again.
        self.sock.send_multipart(self.codec.encode(Hello()))

    async def close(self) -> None:
        for task in (self._watch, self._reader):
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.sock.close()

    async def _read(self) -> None:
        while True:
            kind, payload = await self.sock.recv_multipart()
            try:
                message = self.codec.decode(kind, payload)
            except Exception:
                log.warning("undecodable message from node %s", self.endpoint)
                continue
            if isinstance(message, ModelLoaded):
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
