"""The gateway's control connection to one worker node: load, unload, hear about exits.

A dead process cannot say it died, so the gateway sends the node a Hello every second and the
node answers with its id, its devices and the runners it holds: no answer for a while means
unreachable (its requests are failed, its runners dropped); a new id means the node was
restarted and every runner it had is gone. Over TCP the link is CURVE-authenticated when the
gateway has keys; a socket monitor turns a refused handshake into the reason /readyz gives. A
node that says it is draining (SIGTERM) takes no new runners; `on_drain` is told once.
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
from zmq.utils.monitor import parse_monitor_message

from herd.gateway.errors import RunnerError
from herd.protocol.curve import ClientKeys, is_tcp
from herd.protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, NodeInfo, RunnerExited,
                           RunnerSpec, UnloadModel, WireCodec)

log = logging.getLogger("herd.gateway")

HEARTBEAT_S = 1.0
UNREACHABLE_AFTER_S = 5.0
_MONITORS = itertools.count(1)


class NodeClient:
    def __init__(self, zctx: zmq.asyncio.Context, endpoint: str,
                 on_runner_exit: Callable[[RunnerExited], None],
                 on_restart: Callable[[NodeClient], None] = lambda node: None,
                 on_down: Callable[[NodeClient], None] = lambda node: None,
                 keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.codec = WireCodec()
        self.sock = zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.secured = keys is not None and is_tcp(endpoint)
        if self.secured:
            keys.apply(self.sock)  # type: ignore[union-attr]
        # Named per client: pyzmq's default name is per file descriptor, which a closed and
        # re-created client (discovery) may get again before the old monitor is gone.
        self._monitor = self.sock.get_monitor_socket(addr=f"inproc://herd-node-{next(_MONITORS)}")
        self.sock.connect(endpoint)
        self.on_drain: Callable[[NodeClient], None] = lambda node: None  # set by the scheduler
        self.draining = False
        self._endpoints: dict[str, str] = {}  # key → runner endpoint, for reconciliation
        self.link_error = ""  # why the last handshake failed, for /readyz
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
        self._watcher = asyncio.create_task(self._watch_link())

    @property
    def reachable(self) -> bool:
        # A refused handshake ends the start-up grace: that node will not answer this gateway.
        if self.link_error and not self.node_id:
            return False
        return time.monotonic() - self._last_seen < UNREACHABLE_AFTER_S

    @property
    def alive(self) -> bool:
        """Up and taking new runners (a draining node is finishing, not taking)."""
        return self.reachable and not self.draining

    def problem(self) -> str:
        """Why this node cannot take work now, or "" (what /readyz reports)."""
        if self.draining:
            return f"worker node {self.endpoint} is shutting down"
        if self.reachable and self.node_id:
            return ""
        if self.link_error:
            return f"worker node {self.endpoint}: {self.link_error}"
        if self.reachable:
            return f"worker node {self.endpoint}: connecting"
        return f"worker node {self.endpoint} does not answer"

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
            # A DEALER with no completed connection blocks on send: bound that too.
            await asyncio.wait_for(self.sock.send_multipart(
                self.codec.encode(LoadModel(request_id, spec))), UNREACHABLE_AFTER_S)
        except BaseException:
            self._pending.pop(request_id, None)
            raise

        async def ready() -> ModelLoaded:
            try:
                loaded = await asyncio.wait_for(future, None if math.isinf(timeout) else timeout)
            finally:
                self._pending.pop(request_id, None)
            self.loaded_keys.add(spec.key)
            self._endpoints[spec.key] = loaded.endpoint
            return loaded

        return ready()

    async def load(self, spec: RunnerSpec, timeout: float) -> ModelLoaded:
        return await (await self.request_load(spec, timeout))

    async def unload(self, key: str) -> None:
        self.loaded_keys.discard(key)
        self._endpoints.pop(key, None)
        try:
            await asyncio.wait_for(self.sock.send_multipart(self.codec.encode(UnloadModel(key))),
                                   UNREACHABLE_AFTER_S)
        except asyncio.TimeoutError:
            pass  # an unreachable node expires this gateway's lease by itself

    async def close(self) -> None:
        for task in (self._heartbeat, self._reader, self._watcher):
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.sock.disable_monitor()
        self._monitor.close()
        self.sock.close()

    async def _watch_link(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.link_error = ""
            elif kind in _HANDSHAKE_FAILED:
                reason = _handshake_reason(kind, value, self.secured)
                if reason != self.link_error:
                    log.error("worker node %s: %s", self.endpoint, reason)
                self.link_error = reason

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                # A DEALER whose connection is being re-established blocks on send (a cut
                # link, a handshake torn down): the check below must still run.
                hello = Hello(keys=sorted(self.loaded_keys))  # renews this gateway's leases
                await asyncio.wait_for(self.sock.send_multipart(self.codec.encode(hello)),
                                       HEARTBEAT_S)
            except asyncio.TimeoutError:
                pass
            alive = self.reachable  # a draining node still answers: it is not down
            if self._was_alive and not alive:
                log.warning("worker node %s stopped answering", self.endpoint)
                self.loaded_keys.clear()
                self._on_down(self)
            self._was_alive = alive

    def _seen(self, info: NodeInfo) -> None:
        self._last_seen = time.monotonic()
        self.info = info
        if info.draining and not self.draining and info.node_id == self.node_id:
            log.warning("worker node %s is shutting down: no new runners there", self.endpoint)
            self.draining = True
            self.on_drain(self)
        fresh, self._fresh = self._fresh, []
        for future in fresh:
            if not future.done():
                future.set_result(info)
        if info.node_id == self.node_id:
            self._reconcile(info)
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
        self.draining = info.draining
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

    def _reconcile(self, info: NodeInfo) -> None:
        """Runners this gateway holds that the node no longer has (their exit notice was lost
        while the link was down, or the lease expired): gone, as if the node had said so."""
        have = {r.key for r in info.runners}
        for key in [k for k in self.loaded_keys if k not in have and k in self._endpoints]:
            log.warning("worker node %s no longer has runner %s", self.endpoint, key)
            self.loaded_keys.discard(key)
            self._on_runner_exit(RunnerExited(key, self._endpoints.pop(key), -1))


_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                     zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def _handshake_reason(kind: int, value: int, secured: bool) -> str:
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return ("the worker refused this gateway's CURVE key (status %d): add its .pub to the "
                "worker's HERD_CURVE_AUTHORIZED folder" % value)
    if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL or value < 0x10000000:
        # An errno, not a ZMTP protocol error: the connection broke during the handshake,
        # which a wrong server key also looks like (the worker cannot decrypt and hangs up).
        what = "" if not secured else ", or HERD_CURVE_SERVER_KEY is not the worker's public key"
        return f"handshake failed (errno {value}): the connection was cut{what}"
    if not secured:
        return ("handshake failed (protocol error 0x%x): the worker requires CURVE keys; set "
                "HERD_CURVE_SECRET_KEY and HERD_CURVE_SERVER_KEY" % value)
    return ("CURVE handshake failed (protocol error 0x%x): is HERD_CURVE_SERVER_KEY the "
            "worker's public key, and does the worker use CURVE?" % value)


def _log_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("socket reader stopped", exc_info=task.exception())
