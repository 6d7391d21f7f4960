"""Places models onto runners across every worker node's devices.

A model (its weights and load-time options: the spec's `model_key`) is served by one or more
replicas: runners on different devices or nodes that answer alike. A request takes a slot on
the replica that shares the longest prompt prefix with it (its KV cache is warm), else on the
least-loaded one; when every slot is busy it waits, bounded by OLLAMA_MAX_QUEUE per model, and
another replica is started where there is room (HERD_MAX_REPLICAS). The first replica of a
model is placed by memory estimate (best-fit GPU, a layer split, a partial offload, the host),
evicting idle models in keep-alive LRU order; one that fits nowhere is a clear error.
Testable without a model: it talks only to the node and runner clients its factories make.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from herd.gateway.cluster.affinity import Signature
from herd.gateway.cluster.groups import ModelGroup, Replica
from herd.gateway.cluster.loader import Loader
from herd.gateway.cluster.spec import default_context_length, runner_spec
from herd.gateway.errors import RUNNER_STOPPED, HerdError, ServerBusy
from herd.gateway.store.models import ModelEntry
from herd.protocol.api import Options
from herd.protocol.config import Settings
from herd.protocol.durations import FOREVER_NS
from herd.protocol.wire import RunnerExited, RunnerSpec

log = logging.getLogger("herd.scheduler")

# (endpoint, on_runner_exit, on_restart, on_down) → a NodeClient;
# (endpoint, on_stall) → a RunnerClient
NodeFactory = Callable[..., Any]
RunnerFactory = Callable[[str, Callable[[Any], None]], Any]


class Scheduler:
    def __init__(self, settings: Settings, connect_node: NodeFactory,
                 connect_runner: RunnerFactory) -> None:
        self.settings = settings
        self.connect_node = connect_node
        self.nodes: list[Any] = []
        self.groups: dict[str, ModelGroup] = {}
        self.loader = Loader(self, connect_runner)
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        # (model, "success" | "failure") → loads; plain counts, read by the metrics collector.
        self.load_results: Counter[tuple[str, str]] = Counter()

    async def connect(self, endpoints: list[str]) -> None:
        for endpoint in endpoints:
            await self.add_node(endpoint)

    async def add_node(self, endpoint: str) -> Any:
        node = self.connect_node(endpoint, self._on_runner_exit, self._on_node_restart,
                                 self._on_node_down)
        node.on_drain = self._on_node_draining
        await node.start()
        self.nodes.append(node)
        return node

    async def remove_node(self, node: Any) -> None:
        """A node discovery no longer finds: its runners are gone for this gateway."""
        self.nodes.remove(node)
        self._on_node_restart(node)
        await node.close()

    async def close(self) -> None:
        for replica in self.loaded:
            await self.unload(replica)
        for node in self.nodes:
            await node.close()

    def spec_for(self, entry: ModelEntry, options: Options) -> RunnerSpec:
        """The runner spec a request selects; its default context depends on the nodes' GPUs."""
        default_ctx = default_context_length(self.settings, [n.info.devices for n in self.nodes])
        return runner_spec(entry, options, self.settings, default_ctx)

    @property
    def loaded(self) -> list[Replica]:
        return [r for g in self.groups.values() for r in g.replicas]

    @property
    def queued(self) -> int:
        """Requests waiting for a load or for a slot, over every model."""
        return sum(g.waiting for g in self.groups.values())

    @asynccontextmanager
    async def lease(self, entry: ModelEntry, spec: RunnerSpec, keep_alive_ns: int,
                    affinity: Signature = ()) -> AsyncIterator[Replica]:
        replica = await self.acquire(entry, spec, keep_alive_ns, affinity)
        try:
            yield replica
        finally:
            self.release(replica)

    async def acquire(self, entry: ModelEntry, spec: RunnerSpec, keep_alive_ns: int,
                      affinity: Signature = ()) -> Replica:
        model_key = spec.model_key or spec.key
        group = self.groups.get(model_key)
        if group is None:
            group = self.groups[model_key] = ModelGroup(model_key, entry, spec)
        replica = group.pick(affinity)
        if replica is None:
            replica = await self._wait_for_slot(group, affinity)
        replica.refs += 1
        replica.prefixes.remember(affinity)
        replica.keep_alive_ns = keep_alive_ns
        if replica.timer is not None:
            replica.timer.cancel()
            replica.timer = None
        return replica

    async def _wait_for_slot(self, group: ModelGroup, affinity: Signature) -> Replica:
        # The request that starts a model's first load is served, not queued (OLLAMA_MAX_QUEUE
        # 0 still lets an idle server load a model).
        if group.waiting >= self.settings.max_queue + (0 if group.replicas else 1):
            raise ServerBusy()
        group.waiting += 1
        try:
            while True:
                if not group.replicas and group.first_load is None:
                    group.first_load = self._spawn(self.loader.load(group, first=True))
                elif group.replicas and self.loader.may_add_replica(group):
                    task = self._spawn(self.loader.load(group, first=False))
                    group.extra_loads.add(task)
                    task.add_done_callback(group.extra_loads.discard)
                load = group.first_load
                changed = asyncio.ensure_future(group.changed.wait())
                waits = {changed} | ({load} if load is not None else set())
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                group.changed.clear()
                if load is not None and load.done():
                    if group.first_load is load:
                        group.first_load = None
                    error = load.exception() if not load.cancelled() else None
                    if error is not None and not group.replicas:
                        raise error
                replica = group.pick(affinity)
                if replica is not None:
                    return replica
        finally:
            group.waiting -= 1

    def release(self, replica: Replica) -> None:
        replica.refs -= 1
        replica.last_used = time.monotonic()
        replica.group.changed.set()
        if replica.refs == 0:
            self._released.set()
            if not replica.gone:
                self._arm_expiry(replica)

    async def unload_model(self, entry: ModelEntry) -> None:
        """keep_alive 0 with an empty prompt: unload now, or as soon as in-flight work ends."""
        for replica in self.loaded:
            if replica.entry.model_digest == entry.model_digest:
                replica.keep_alive_ns = 0
                if replica.refs == 0:
                    await self.unload(replica)

    async def wait_for_release(self) -> None:
        self._released.clear()
        await self._released.wait()

    def add(self, replica: Replica) -> None:
        replica.group.replicas.append(replica)
        replica.group.changed.set()
        self._arm_expiry(replica)

    # -- unloading -------------------------------------------------------------------------

    def _arm_expiry(self, replica: Replica) -> None:
        if replica.timer is not None:
            replica.timer.cancel()
            replica.timer = None
        ka = replica.keep_alive_ns
        if ka >= FOREVER_NS:
            replica.expires_at = time.time() + 100 * 365 * 86400
            return
        replica.expires_at = time.time() + ka / 1e9
        loop = asyncio.get_running_loop()
        replica.timer = loop.call_later(ka / 1e9, lambda: self._spawn(self._expire(replica)))

    def _spawn(self, coro) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Everyone waiting may have gone: a failure is theirs to see, not the log's.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _expire(self, replica: Replica) -> None:
        if replica.refs == 0 and not replica.gone:
            await self.unload(replica)

    def _forget(self, replica: Replica, message: str) -> None:
        group = replica.group
        if replica in group.replicas:
            group.replicas.remove(replica)
        if not group.replicas and group.waiting == 0 and group.first_load is None:
            self.groups.pop(group.model_key, None)
        replica.gone = True
        if replica.timer is not None:
            replica.timer.cancel()
        replica.client.fail_all(message)
        group.changed.set()

    async def unload(self, replica: Replica) -> None:
        self._forget(replica, "model was unloaded")
        await replica.client.close()
        try:
            await replica.node.unload(replica.key)
        except HerdError:
            pass
        log.info("unloaded %s from %s %s", replica.entry.name.display, replica.node.endpoint,
                 ",".join(replica.devices))

    def _drop(self, replica: Replica, message: str = RUNNER_STOPPED) -> None:
        self.loader.dead_endpoints[replica.client.endpoint] = time.monotonic()
        replica.node.loaded_keys.discard(replica.key)
        self._forget(replica, message)
        self._spawn(replica.client.close())

    def runner_stalled(self, client: Any) -> None:
        """A runner that stopped answering with requests in flight: its requests fail now, its
        node kills it, and the next request starts a fresh one."""
        for replica in [r for r in self.loaded if r.client is client]:
            self._drop(replica, "model runner stopped answering and was stopped")
            self._spawn(replica.node.unload(replica.key))

    def _on_runner_exit(self, exited: RunnerExited) -> None:
        for replica in self.loaded:
            if replica.key == exited.key and replica.client.endpoint == exited.endpoint:
                log.warning("runner for %s exited with status %d", replica.entry.name.display,
                            exited.returncode)
                self._drop(replica)

    def _on_node_restart(self, node: Any) -> None:
        """A restarted node's runners died with it, whether or not they said so."""
        for replica in [r for r in self.loaded if r.node is node]:
            self._drop(replica)

    def _on_node_draining(self, node: Any) -> None:
        """A node shutting down finishes what it has: new requests load elsewhere, streams in
        flight go on, and each runner's link closes once its last request is done."""
        for replica in [r for r in self.loaded if r.node is node]:
            group = replica.group
            if replica in group.replicas:
                group.replicas.remove(replica)
            replica.gone = True
            if replica.timer is not None:
                replica.timer.cancel()
            group.changed.set()
            self._spawn(self._close_when_idle(replica))

    async def _close_when_idle(self, replica: Replica) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_s + 5
        while replica.refs > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        replica.client.fail_all(RUNNER_STOPPED)
        await replica.client.close()

    def _on_node_down(self, node: Any) -> None:
        """A node that stopped answering fails its requests now; if it comes back, the runners
        this gateway held there are released (none leaked, none counted twice)."""
        for replica in [r for r in self.loaded if r.node is node]:
            node.orphans.add(replica.key)
            self._drop(replica, f"worker node {node.endpoint} stopped answering")
