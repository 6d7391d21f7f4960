"""In-process stand-ins for a worker node and its runners, made by the factories create_app
and Scheduler take: routes, envelopes, queue bounds and placement run in milliseconds against
them, with no model and no process. A fake runner answers each request with a scripted text,
one piece per engine step, `slots` sequences at a time like the batching engine."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from herd.gateway.cluster.request_stream import RequestStream
from herd.protocol.wire import (DeviceInfo, Embed, Embeddings, FinishReason, ModelLoaded,
                                NodeInfo, RequestOutput, RunnerExited, RunnerInfo, RunnerSpec,
                                Submit)

GiB = 2**30

# The answer a runner gives a request: the text pieces it streams, one per step.
Script = Callable[[Submit], list[str]]


def echo_script(submit: Submit) -> list[str]:
    """Repeats the last message (or the raw prompt) word by word."""
    text = submit.raw_prompt if submit.raw_prompt is not None else (
        submit.messages[-1].content if submit.messages else "")
    words = text.split() or ["ok"]
    n = submit.sampling.num_predict if submit.sampling.num_predict > 0 else len(words)
    return [w + " " for w in (words * (n // len(words) + 1))[:n]]


@dataclass
class FakeCluster:
    """Nodes by endpoint with their devices; every runner any of them started."""

    devices: dict[str, list[DeviceInfo]]
    script: Script = echo_script
    step_s: float = 0.0  # time per engine step (0: as fast as the event loop runs)
    load_bytes_per_s: float = 0.0  # a load reads the weights at this rate (0: instant)
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    runners: dict[str, FakeRunner] = field(default_factory=dict)
    loads: list[RunnerSpec] = field(default_factory=list)

    def connect_node(self, endpoint: str, on_runner_exit: Callable[[RunnerExited], None],
                     on_restart: Callable, on_down: Callable) -> FakeNode:
        node = FakeNode(self, endpoint, self.devices[endpoint], on_runner_exit)
        self.nodes[endpoint] = node
        return node

    def connect_runner(self, endpoint: str, on_stall: Callable = lambda client: None
                       ) -> FakeRunner:
        return self.runners[endpoint]


def devices(**sizes: int) -> list[DeviceInfo]:
    """devices(cuda_0=6 * GiB, cpu=64 * GiB): simulated devices, all free."""
    return [DeviceInfo(name.replace("_", ":"), size, size, simulated=True)
            for name, size in sizes.items()]


class FakeNode:
    def __init__(self, cluster: FakeCluster, endpoint: str, devs: list[DeviceInfo],
                 on_runner_exit: Callable[[RunnerExited], None]) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.devices = devs
        self.alive = True
        self.answered = True
        self.loaded_keys: set[str] = set()
        self.orphans: set[str] = set()
        self.held: dict[str, RunnerInfo] = {}
        self.on_runner_exit = on_runner_exit

    @property
    def info(self) -> NodeInfo:
        used: dict[str, int] = {}
        for runner in self.held.values():
            for device, size in zip(runner.devices, runner.device_memory):
                used[device] = used.get(device, 0) + size
        return NodeInfo(self.endpoint, [DeviceInfo(d.id, d.total, d.total - used.get(d.id, 0),
                                                   simulated=True) for d in self.devices],
                        list(self.held.values()))

    async def start(self) -> None:
        pass

    async def refresh(self, timeout: float = 2.0) -> NodeInfo:
        return self.info

    async def request_load(self, spec: RunnerSpec, timeout: float):
        endpoint = f"fake://{self.endpoint}/{spec.key}"
        delay = 0.0
        if spec.key not in self.held:
            if self.cluster.load_bytes_per_s:
                delay = sum(spec.device_memory) / self.cluster.load_bytes_per_s
            self.cluster.loads.append(spec)
            self.held[spec.key] = RunnerInfo(spec.key, spec.model_key, endpoint, spec.devices,
                                             spec.device_memory)
            self.cluster.runners[endpoint] = FakeRunner(self.cluster, endpoint, spec.num_parallel)

        async def ready() -> ModelLoaded:
            await asyncio.sleep(delay)
            self.loaded_keys.add(spec.key)
            return ModelLoaded(0, spec.key, endpoint, sum(spec.device_memory), 0, spec.num_ctx)

        return ready()

    async def load(self, spec: RunnerSpec, timeout: float) -> ModelLoaded:
        return await (await self.request_load(spec, timeout))

    async def unload(self, key: str) -> None:
        self.loaded_keys.discard(key)
        self.held.pop(key, None)

    async def close(self) -> None:
        pass


class FakeRunner:
    """Streams each request's scripted pieces; at most `slots` at once, the rest wait, as the
    engine admits queued sequences."""

    def __init__(self, cluster: FakeCluster, endpoint: str, slots: int) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self.slots = asyncio.Semaphore(slots)
        self.streams: dict[int, RequestStream] = {}
        self.served: list[Submit] = []
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._ids = itertools.count()

    async def submit(self, submit: Submit) -> RequestStream:
        stream = RequestStream(submit.req_id)
        self.streams[submit.req_id] = stream
        self.served.append(submit)
        self._tasks[submit.req_id] = asyncio.create_task(self._play(submit, stream))
        return stream

    async def _play(self, submit: Submit, stream: RequestStream) -> None:
        async with self.slots:
            pieces = self.cluster.script(submit)
            for piece in pieces:
                await asyncio.sleep(self.cluster.step_s)
                stream.feed(RequestOutput(submit.req_id, piece))
            await asyncio.sleep(self.cluster.step_s)
            stream.feed(RequestOutput(submit.req_id, finish=FinishReason.STOP,
                                      prompt_tokens=len(submit.messages) + 1,
                                      prompt_ns=1000, eval_tokens=len(pieces), eval_ns=1000))
        self.streams.pop(submit.req_id, None)

    async def embed(self, request: Embed) -> Embeddings:
        import numpy as np

        vectors = np.ones((len(request.inputs), 4), dtype=np.float32)
        return Embeddings(request.req_id, 4, vectors.tobytes(), len(request.inputs))

    async def abort(self, req_id: int) -> None:
        task = self._tasks.pop(req_id, None)
        if task is not None:
            task.cancel()
        self.streams.pop(req_id, None)

    def fail_all(self, message: str) -> None:
        for stream in self.streams.values():
            stream.fail(message)
        self.streams.clear()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
