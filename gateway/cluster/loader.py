"""Starting a model's replicas: estimate its memory, place it on a node's devices (evicting
idle models for a model's first replica, never for an extra one), start the runner, or adopt
one another gateway already started there."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from herd.gateway.cluster.groups import ModelGroup, Replica
from herd.gateway.errors import ModelTooLarge, RunnerError
from herd.gateway.placement.estimate import MemoryEstimate, estimate, rough_estimate
from herd.gateway.placement.fit import DoesNotFit, NodeView, Placement, place
from herd.gateway.store.models import ModelEntry, run_blocking
from herd.protocol.wire import ModelLoaded, RunnerInfo, RunnerSpec

if TYPE_CHECKING:
    from herd.gateway.cluster.scheduler import Scheduler

log = logging.getLogger("herd.scheduler")

NO_ROOM_RETRY_S = 2.0  # an extra replica found no room: look again after this
GONE_TIMEOUT_S = 10.0  # how long an evicted runner may take to leave its node's report
DEAD_ENDPOINT_S = 60.0  # long past the node's reaping of a dead runner


class Loader:
    def __init__(self, scheduler: Scheduler, connect_runner: Any) -> None:
        self.scheduler = scheduler
        self.connect_runner = connect_runner
        # Endpoint → when its runner was seen to die; pruned, since a port is reused later
        # by a live runner.
        self.dead_endpoints: dict[str, float] = {}
        self._lock = asyncio.Lock()  # one load at a time: each sees the last one's memory
        self._estimates: dict[str, MemoryEstimate] = {}
        self._starting: set[str] = set()  # runner keys this gateway is starting now

    def may_add_replica(self, group: ModelGroup) -> bool:
        """Another replica while more requests wait than the replicas already starting will
        take, room permitting (HERD_MAX_REPLICAS caps them)."""
        settings = self.scheduler.settings
        starting = len(group.extra_loads)
        if time.monotonic() < group.no_room_until:
            return False
        if group.waiting <= starting * group.spec.num_parallel:
            return False
        total = len(group.replicas) + starting
        return not settings.max_replicas or total < settings.max_replicas

    async def load(self, group: ModelGroup, first: bool) -> Replica | None:
        sched = self.scheduler
        name = group.entry.name.display
        try:
            # Placement one at a time, so each sees the memory of the last; runners then
            # start side by side.
            async with self._lock:
                if first and group.replicas:
                    return group.replicas[0]
                started = await self._start(group, first)
            if started is None:
                group.no_room_until = time.monotonic() + NO_ROOM_RETRY_S
                return None
            replica = await started
        except Exception:
            sched.load_results[name, "failure"] += 1
            raise
        sched.load_results[name, "success"] += 1
        sched.add(replica)
        log.info("loaded %s on %s %s (replica %d)", name, replica.node.endpoint,
                 ",".join(replica.devices), len(group.replicas))
        return replica

    async def _start(self, group: ModelGroup, first: bool) -> Awaitable[Replica] | None:
        est = await self._estimate(group)
        nodes = await self._reachable_nodes()
        adopted = await self._adoptable(group, nodes)
        if adopted is not None:
            node, info = adopted
            spec = msgspec.structs.replace(group.spec, key=info.key, devices=info.devices,
                                           device_memory=info.device_memory)
            vram = sum(m for d, m in zip(info.devices, info.device_memory) if d != "cpu")
            size = sum(info.device_memory) or est.total_cpu
        else:
            found = await self._place(group, est, first)
            if found is None:
                return None
            node, placement = found
            spec = placed_spec(group.spec, group.model_key, placement)
            vram, size = placement.size_vram, placement.size
        ready = await self._request_load(node, spec)
        self._starting.add(spec.key)

        async def replica() -> Replica:
            try:
                loaded = await ready()
            finally:
                self._starting.discard(spec.key)
            return Replica(key=spec.key, group=group, node=node,
                           client=self.connect_runner(loaded.endpoint,
                                                      self.scheduler.runner_stalled),
                           num_parallel=spec.num_parallel, size=size, size_vram=vram,
                           context_length=loaded.context_length,
                           keep_alive_ns=self.scheduler.settings.keep_alive_ns,
                           devices=list(spec.devices), device_memory=list(spec.device_memory),
                           last_used=time.monotonic())

        return replica()

    async def _estimate(self, group: ModelGroup) -> MemoryEstimate:
        cached = self._estimates.get(group.model_key)
        if cached is None:
            cached = await run_blocking(_estimate_for, group.spec, group.entry)
            self._estimates[group.model_key] = cached
        return cached

    async def _adoptable(self, group: ModelGroup, nodes: list[Any]
                         ) -> tuple[Any, RunnerInfo] | None:
        """A runner of this model another gateway started, that this one does not use yet."""
        held = {r.key for r in group.replicas} | self._starting
        for node in nodes:
            info = await node.refresh()
            for runner in info.runners:
                if runner.model_key == group.model_key and runner.key not in held:
                    return node, runner
        return None

    async def _place(self, group: ModelGroup, est: MemoryEstimate,
                     first: bool) -> tuple[Any, Placement] | None:
        sched = self.scheduler
        while True:
            if first:
                await self._unload_stale(group)
                await self._within_max_loaded(group)
            nodes = await self._reachable_nodes()
            views = {node.endpoint: (node, await self._view(node, group)) for node in nodes}
            spec = group.spec
            try:
                placement = place(est, [v for _, v in views.values()],
                                  num_gpu=spec.num_gpu_layers,
                                  main_gpu=spec.main_gpu if spec.main_gpu >= 0 else None,
                                  spread=sched.settings.sched_spread)
            except DoesNotFit as e:
                if not first:
                    return None
                victim = self._idle_victim(group)
                if victim is not None:
                    await self._evict(victim)
                    continue
                if any(r.refs > 0 for r in sched.loaded if r.group is not group):
                    await sched.wait_for_release()  # busy models may free their memory
                    continue
                raise ModelTooLarge(e.need, e.free) from None
            return views[placement.node][0], placement

    async def _view(self, node: Any, group: ModelGroup) -> NodeView:
        info = await node.refresh()
        avoid = {d for r in group.replicas if r.node is node for d in r.devices}
        if any(d != "cpu" for r in group.replicas for d in r.devices):
            avoid.add("cpu")  # a model on GPUs gets no replica that computes on the host
        return NodeView(node.endpoint, list(info.devices), len(info.runners), avoid)

    def _idle_victim(self, group: ModelGroup) -> Replica | None:
        idle = [r for r in self.scheduler.loaded if r.refs == 0 and r.group is not group]
        return min(idle, key=lambda r: (r.keep_alive_ns, r.last_used), default=None)

    async def _evict(self, victim: Replica) -> None:
        await self.scheduler.unload(victim)
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            info = await victim.node.refresh()
            if all(r.key != victim.key for r in info.runners):
                return
            await asyncio.sleep(0.05)

    async def _unload_stale(self, group: ModelGroup) -> None:
        """The same weights loaded with other load-time options are replaced (a reload)."""
        digest = group.entry.model_digest
        for replica in self.scheduler.loaded:
            if replica.group is not group and replica.entry.model_digest == digest \
                    and replica.refs == 0:
                await self._evict(replica)

    async def _within_max_loaded(self, group: ModelGroup) -> None:
        settings = self.scheduler.settings
        while True:
            limit = settings.max_loaded_models
            if settings.max_loaded_per_gpu:
                gpus = sum(1 for n in self.scheduler.nodes for d in n.info.devices if d.is_gpu)
                limit *= max(gpus, 1)
            if len(self.scheduler.loaded) < limit:
                return
            victim = self._idle_victim(group)
            if victim is not None:
                await self._evict(victim)
            else:
                await self.scheduler.wait_for_release()

    async def _request_load(self, node: Any, spec: RunnerSpec
                            ) -> Callable[[], Awaitable[ModelLoaded]]:
        timeout = self.scheduler.settings.load_timeout_s
        pending = await node.request_load(spec, timeout)
        cutoff = time.monotonic() - DEAD_ENDPOINT_S
        for endpoint in [e for e, t in self.dead_endpoints.items() if t < cutoff]:
            del self.dead_endpoints[endpoint]

        async def ready() -> ModelLoaded:
            waiting = pending
            for _ in range(50):
                try:
                    loaded = await waiting
                except asyncio.TimeoutError:
                    await node.unload(spec.key)
                    raise RunnerError("timed out waiting for the model runner to start") from None
                # A node that has not yet reaped a runner we saw die may offer it again: wait
                # until it knows, then it starts a fresh one.
                if loaded.endpoint not in self.dead_endpoints:
                    return loaded
                await asyncio.sleep(0.1)
                waiting = await node.request_load(spec, timeout)
            raise RunnerError("the worker node keeps offering a runner that has stopped")

        return ready

    async def _reachable_nodes(self, patience_s: float = 10.0) -> list[Any]:
        """Nodes that are up; a node being restarted gets a few seconds to come back."""
        deadline = time.monotonic() + patience_s
        while True:
            nodes = [n for n in self.scheduler.nodes if n.alive]
            if nodes:
                return nodes
            if time.monotonic() >= deadline:
                problems = "; ".join(p for n in self.scheduler.nodes
                                     if (p := getattr(n, "problem", lambda: "")()))
                raise RunnerError("no worker node is reachable"
                                  + (f" ({problems})" if problems else ""))
            await asyncio.sleep(0.1)


def placed_spec(spec: RunnerSpec, model_key: str, placement: Placement) -> RunnerSpec:
    where = f"{placement.node}/{','.join(placement.devices)}"
    return msgspec.structs.replace(
        spec, key=f"{model_key}@{where}", model_key=model_key, devices=placement.devices,
        device_memory=placement.device_memory, tensor_split=placement.tensor_split,
        num_gpu_layers=placement.num_gpu_layers, main_gpu=placement.main_gpu)


def _estimate_for(spec: RunnerSpec, entry: ModelEntry) -> MemoryEstimate:
    """Estimated from the gateway's own copy of the store (the spec names blobs by digest)."""
    est = _estimate_file(spec, entry.model_path)
    # LoRA adapters and a vision projector sit beside the weights on the same device, and a
    # draft model with a context as long as the model's (its weights, cache and graph).
    extra = sum(os.path.getsize(a) for a in (*entry.adapters, entry.projector)
                if a and os.path.exists(a))
    if entry.draft:
        extra += _estimate_file(spec, entry.draft).total
    return msgspec.structs.replace(est, other=est.other + extra) if extra else est


def _estimate_file(spec: RunnerSpec, path: str) -> MemoryEstimate:
    try:
        return estimate(path, n_ctx_per_seq=spec.num_ctx, n_seq=spec.num_parallel,
                        n_batch=spec.num_batch, cache_type=spec.kv_cache_type,
                        flash_attention=spec.flash_attention != "off")
    except Exception as e:  # a header the reader does not model: size it roughly
        log.warning("no memory estimate for %s (%s): using its file size", path, e)
        return rough_estimate(path, os.path.getsize(path), n_seq=spec.num_parallel)


