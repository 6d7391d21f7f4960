"""A model's replicas as the scheduler holds them: each runner with its slots in use, its
devices and the prompt prefixes it served lately."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from herd.gateway.cluster.affinity import PrefixMemory, Signature
from herd.gateway.store.models import ModelEntry
from herd.protocol.wire import RunnerSpec


@dataclass(eq=False)
class Replica:
    key: str
    group: ModelGroup
    node: Any  # NodeClient
    client: Any  # RunnerClient
    num_parallel: int
    size: int
    size_vram: int
    context_length: int
    keep_alive_ns: int
    devices: list[str] = field(default_factory=list)
    device_memory: list[int] = field(default_factory=list)
    prefixes: PrefixMemory = field(default_factory=lambda: PrefixMemory(16))
    refs: int = 0
    expires_at: float = 0.0
    last_used: float = 0.0
    timer: asyncio.TimerHandle | None = None
    gone: bool = False

    @property
    def entry(self) -> ModelEntry:
        return self.group.entry

    @property
    def busy(self) -> int:
        return min(self.refs, self.num_parallel)


@dataclass(eq=False)
class ModelGroup:
    model_key: str
    entry: ModelEntry
    spec: RunnerSpec  # the model's spec before placement (no devices)
    replicas: list[Replica] = field(default_factory=list)
    waiting: int = 0  # requests waiting for a load or a slot
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    first_load: asyncio.Task[Any] | None = None
    extra_loads: set[asyncio.Task[Any]] = field(default_factory=set)  # replicas starting
    no_room_until: float = 0.0  # a replica found no room: do not look again before this

    def pick(self, affinity: Signature) -> Replica | None:
        """The replica with a free slot that shares the longest prefix with the prompt, else
        the least loaded one with a free slot."""
        free = [r for r in self.replicas if r.refs < r.num_parallel and not r.gone]
        if not free:
            return None
        return max(free, key=lambda r: (r.prefixes.match(affinity), -r.refs / r.num_parallel,
                                        -r.refs))
