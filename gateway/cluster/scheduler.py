"""Places models onto runners: reuse a loaded one, load one where there is room (one load at a
time, evicting idle models), bound the queue (503), and unload idle runners when keep-alive ends.
Testable without a model: it only talks to NodeClients and RunnerClients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import zmq.asyncio

from herd.gateway.errors import RUNNER_STOPPED, HerdError, RunnerError, ServerBusy
from herd.gateway.cluster.node_client import NodeClient
from herd.gateway.cluster.runner_client import RunnerClient
from herd.gateway.store.models import ModelEntry
from herd.protocol.config import Settings
from herd.protocol.durations import FOREVER_NS
from herd.protocol.wire import ModelLoaded, RunnerExited, RunnerSpec

log = logging.getLogger("herd.scheduler")


@dataclass(eq=False)
class LoadedRunner:
    key: str
    entry: ModelEntry
    node: NodeClient
    client: RunnerClient
    num_parallel: int
    size: int
    size_vram: int
    context_length: int
    keep_alive_ns: int
    refs: int = 0
    expires_at: float = 0.0
    last_used: float = 0.0
    timer: asyncio.TimerHandle | None = None
    gone: bool = False


class Scheduler:
    def __init__(self, settings: Settings, zctx: zmq.asyncio.Context) -> None:
        self.settings = settings
        self.zctx = zctx
        self.nodes: list[NodeClient] = []
        self._runners: dict[str, LoadedRunner] = {}
        self._loading: dict[str, asyncio.Task[LoadedRunner]] = {}
        self._waiting_loads = 0
        self._load_lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dead_endpoints: set[str] = set()
        # (model, "success" | "failure") → loads; plain counts, read by the metrics collector.
        self.load_results: Counter[tuple[str, str]] = Counter()

    async def connect(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            node = NodeClient(self.zctx, endpoint, self._on_runner_exit, self._on_node_restart)
            await node.start()
            self.nodes.append(node)

    async def close(self) -> None:
        for runner in list(self._runners.values()):
            await self._unload(runner)
        for node in self.nodes:
            await node.close()

    @property
    def loaded(self) -> list[LoadedRunner]:
        return list(self._runners.values())

    @property
    def queued(self) -> int:
        """Requests waiting for a load or for a slot: what OLLAMA_MAX_QUEUE bounds."""
        return self._waiting_loads + sum(max(r.refs - r.num_parallel, 0)
                                         for r in self._runners.values())

    @asynccontextmanager
    async def lease(self, entry: ModelEntry, spec: RunnerSpec,
                    keep_alive_ns: int) -> AsyncIterator[LoadedRunner]:
        runner = await self.acquire(entry, spec, keep_alive_ns)
        try:
            yield runner
        finally:
            self.release(runner)

    async def acquire(self, entry: ModelEntry, spec: RunnerSpec, keep_alive_ns: int) -> LoadedRunner:
        runner = self._runners.get(spec.key)
        if runner is None:
            # The request that starts a load is being served, not queued (OLLAMA_MAX_QUEUE=0
            # still lets an idle server load a model).
            if self.queued > self.settings.max_queue:
                raise ServerBusy()
            self._waiting_loads += 1
            try:
                runner = await self._get_or_load(entry, spec)
            finally:
                self._waiting_loads -= 1
        elif runner.refs >= runner.num_parallel and self.queued >= self.settings.max_queue:
            raise ServerBusy()
        runner.refs += 1
        runner.keep_alive_ns = keep_alive_ns
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        return runner

    def release(self, runner: LoadedRunner) -> None:
        runner.refs -= 1
        runner.last_used = time.monotonic()
        if runner.refs == 0:
            self._released.set()
            if not runner.gone:
                self._arm_expiry(runner)

    async def unload_model(self, entry: ModelEntry) -> None:
        """keep_alive 0 with an empty prompt: unload now, or as soon as in-flight work ends."""
        for runner in list(self._runners.values()):
            if runner.entry.model_digest == entry.model_digest:
                runner.keep_alive_ns = 0
                if runner.refs == 0:
                    await self._unload(runner)

    # -- loading ---------------------------------------------------------------------------

    async def _get_or_load(self, entry: ModelEntry, spec: RunnerSpec) -> LoadedRunner:
        task = self._loading.get(spec.key)
        if task is None:
            task = asyncio.create_task(self._load(entry, spec))
            self._loading[spec.key] = task
            task.add_done_callback(lambda _: self._loading.pop(spec.key, None))
            # Everyone waiting may have gone: the failure is theirs to see, not the log's.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        # A client that gives up while waiting must not cancel a load others may share.
        return await asyncio.shield(task)

    async def _load(self, entry: ModelEntry, spec: RunnerSpec) -> LoadedRunner:
        async with self._load_lock:
            existing = self._runners.get(spec.key)
            if existing is not None:
                return existing
            try:
                await self._make_room(entry)
                node = min(await self._reachable_nodes(), key=lambda n: len(n.loaded_keys))
                loaded = await self._load_on(node, spec)
            except Exception:
                self.load_results[entry.name.display, "failure"] += 1
                raise
            self.load_results[entry.name.display, "success"] += 1
            runner = LoadedRunner(
                key=spec.key, entry=entry, node=node,
                client=RunnerClient(self.zctx, loaded.endpoint),
                num_parallel=spec.num_parallel,
                size=loaded.size, size_vram=loaded.size_vram,
                context_length=loaded.context_length, keep_alive_ns=self.settings.keep_alive_ns,
                last_used=time.monotonic())
            self._runners[spec.key] = runner
            self._arm_expiry(runner)
            return runner

    async def _load_on(self, node: NodeClient, spec: RunnerSpec) -> ModelLoaded:
        for _ in range(50):
            try:
                loaded = await node.load(spec, self.settings.load_timeout_s)
            except asyncio.TimeoutError:
                await node.unload(spec.key)
                raise RunnerError("timed out waiting for the model runner to start") from None
            # A node that has not yet reaped a runner we saw die may offer it again: wait
            # until it knows, then it starts a fresh one.
            if loaded.endpoint not in self._dead_endpoints:
                return loaded
            await asyncio.sleep(0.1)
        raise RunnerError("the worker node keeps offering a runner that has stopped")

    async def _reachable_nodes(self, patience_s: float = 10.0) -> list[NodeClient]:
        """Nodes that are up; a node being restarted gets a few seconds to come back."""
        deadline = time.monotonic() + patience_s
        while True:
            nodes = [n for n in self.nodes if n.alive]
            if nodes:
                return nodes
            if time.monotonic() >= deadline:
                raise RunnerError("no worker node is reachable")
            await asyncio.sleep(0.1)

    async def _make_room(self, entry: ModelEntry) -> None:
        while True:
            # The same weights loaded with other load-time options are replaced (a reload).
            stale = [r for r in self._runners.values()
                     if r.entry.model_digest == entry.model_digest and r.refs == 0]
            for runner in stale:
                await self._unload(runner)
            if len(self._runners) < self.settings.max_loaded_models:
                return
            idle = [r for r in self._runners.values() if r.refs == 0]
            if idle:
                victim = min(idle, key=lambda r: (r.keep_alive_ns, r.last_used))
                await self._unload(victim)
                continue
            self._released.clear()
            await self._released.wait()

    # -- unloading -------------------------------------------------------------------------

    def _arm_expiry(self, runner: LoadedRunner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        ka = runner.keep_alive_ns
        if ka >= FOREVER_NS:
            runner.expires_at = time.time() + 100 * 365 * 86400
            return
        runner.expires_at = time.time() + ka / 1e9
        loop = asyncio.get_running_loop()
        runner.timer = loop.call_later(ka / 1e9, lambda: self._spawn(self._expire(runner)))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, runner: LoadedRunner) -> None:
        if runner.refs == 0 and self._runners.get(runner.key) is runner:
            await self._unload(runner)

    async def _unload(self, runner: LoadedRunner) -> None:
        if self._runners.get(runner.key) is runner:
            del self._runners[runner.key]
        if runner.timer is not None:
            runner.timer.cancel()
        runner.gone = True
        runner.client.fail_all("model was unloaded")
        await runner.client.close()
        try:
            await runner.node.unload(runner.key)
        except HerdError:
            pass
        log.info("unloaded %s", runner.entry.name.display)

    def _on_runner_exit(self, exited: RunnerExited) -> None:
        runner = self._runners.get(exited.key)
        if runner is None or runner.client.endpoint != exited.endpoint:
            return
        log.warning("runner for %s exited with status %d", runner.entry.name.display,
                    exited.returncode)
        self._drop(runner)

    def _on_node_restart(self, node: NodeClient) -> None:
        """A restarted node's runners died with it, whether or not they said so."""
        for runner in [r for r in self._runners.values() if r.node is node]:
            self._drop(runner)

    def _drop(self, runner: LoadedRunner) -> None:
        del self._runners[runner.key]
        self._dead_endpoints.add(runner.client.endpoint)
        runner.node.loaded_keys.discard(runner.key)
        runner.gone = True
        if runner.timer is not None:
            runner.timer.cancel()
        runner.client.fail_all(RUNNER_STOPPED)
        self._spawn(runner.client.close())
