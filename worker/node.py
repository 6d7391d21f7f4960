"""The worker node: starts one runner process per loaded model and tells gateways about them.

Gateways send LoadModel / UnloadModel to the node's ROUTER socket. A runner is shared by every
gateway that asked for the same key (gateway replicas use one runner) and stops when the last
gateway releases it. Runner exits are reported to every gateway at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field

import msgspec
import zmq
import zmq.asyncio

from herd.protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, NodeInfo, RunnerExited,
                                RunnerFailed, RunnerInfo, RunnerReady, RunnerSpec, UnloadModel,
                                WireCodec, WireMessage)
from herd.worker.devices import DeviceInventory, visible_devices

log = logging.getLogger("herd.node")

KILL_AFTER_S = 10.0


@dataclass(eq=False)
class RunnerProcess:
    key: str
    spec: RunnerSpec
    process: asyncio.subprocess.Process | None = None  # None while it is being started
    stop_requested: bool = False
    leases: set[bytes] = field(default_factory=set)
    waiting: list[tuple[bytes, int]] = field(default_factory=list)  # (gateway, request_id)
    ready: RunnerReady | None = None
    error: str = ""


class WorkerNode:
    def __init__(self, bind: str, run_dir: str, runner_host: str = "127.0.0.1",
                 inventory: DeviceInventory | None = None) -> None:
        self.bind = bind
        self.inventory = inventory or DeviceInventory()
        self.run_dir = run_dir
        self.runner_host = runner_host
        self.codec = WireCodec()
        self.zctx = zmq.asyncio.Context()
        self.sock = self.zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.events = self.zctx.socket(zmq.PULL)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events_endpoint = f"ipc://{run_dir}/node-events-{os.getpid()}.sock"
        self.runners: dict[str, RunnerProcess] = {}
        self.gateways: set[bytes] = set()
        self._counter = 0
        self.node_id = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()

    def _runner_bind(self) -> str:
        self._counter += 1
        if self.bind.startswith("ipc://"):
            return f"ipc://{self.run_dir}/runner-{os.getpid()}-{self._counter}.sock"
        # Runners bind an ephemeral port; a host name (compose service) is advertised, not bound.
        try:
            ipaddress.ip_address(self.runner_host)
            bind_host = self.runner_host
        except ValueError:
            bind_host = "0.0.0.0"
        return f"tcp://{bind_host}:*"

    async def serve(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        self.sock.bind(self.bind)
        self.events.bind(self.events_endpoint)
        log.info("worker node listening on %s", self.bind)
        try:
            await asyncio.gather(self._serve_gateways(), self._serve_runner_events())
        finally:
            await self.close()

    async def close(self) -> None:
        for runner in list(self.runners.values()):
            self._terminate(runner)
        for runner in list(self.runners.values()):
            if runner.process is None:
                continue
            try:
                await asyncio.wait_for(runner.process.wait(), 5)
            except asyncio.TimeoutError:
                runner.process.kill()
        self.sock.close()
        self.events.close()

    async def _send(self, gateway: bytes, message: WireMessage) -> None:
        await self.sock.send_multipart([gateway, *self.codec.encode(message)])

    async def _serve_gateways(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            if len(frames) != 3:
                continue
            gateway, kind, payload = frames
            try:
                message = self.codec.decode(kind, payload)
            except (ValueError, msgspec.DecodeError):
                log.warning("undecodable message from a gateway")
                continue
            self.gateways.add(gateway)
            if isinstance(message, LoadModel):
                await self._load(gateway, message)
            elif isinstance(message, UnloadModel):
                self._release(gateway, message.key)
            elif isinstance(message, Hello):
                await self._send(gateway, self.info())

    def info(self) -> NodeInfo:
        # Runners still starting hold (or are about to hold) their memory too.
        runners = [RunnerInfo(r.key, r.spec.model_key or r.key,
                              r.ready.endpoint if r.ready else "", r.spec.devices,
                              r.spec.device_memory)
                   for r in self.runners.values()]
        return NodeInfo(self.node_id, self.inventory.snapshot(runners), runners)

    async def _load(self, gateway: bytes, message: LoadModel) -> None:
        key = message.spec.key
        runner = self.runners.get(key)
        if runner is not None and runner.ready is not None:
            runner.leases.add(gateway)
            await self._send(gateway, self._loaded(message.request_id, runner.ready))
            return
        if runner is None:
            # Registered, with its first waiter, before the process exists: a fast runner's
            # RunnerReady can arrive before create_subprocess_exec returns.
            runner = self.runners[key] = RunnerProcess(key, message.spec)
            runner.leases.add(gateway)
            runner.waiting.append((gateway, message.request_id))
            try:
                await self._spawn(runner, message.spec)
            except OSError as e:
                del self.runners[key]
                for waiter, request_id in runner.waiting:
                    await self._send(waiter, LoadFailed(request_id, key, f"cannot start a runner: {e}"))
            return
        runner.leases.add(gateway)
        runner.waiting.append((gateway, message.request_id))

    async def _spawn(self, runner: RunnerProcess, spec: RunnerSpec) -> None:
        cmd = [sys.executable, "-m", "herd.worker.runner", "--spec", msgspec.json.encode(spec).decode(),
               "--bind", self._runner_bind(), "--events", self.events_endpoint]
        env = None
        visible = visible_devices(spec.devices)
        if visible is not None:  # pinned to its GPUs, or to none when placed on the host
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        runner.process = process = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, env=env)
        if runner.stop_requested:
            self._terminate(runner)
        log.info("started runner pid %d for %s", process.pid, spec.model_path)
        task = asyncio.create_task(self._watch(runner))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _loaded(request_id: int, ready: RunnerReady) -> ModelLoaded:
        return ModelLoaded(request_id, ready.key, ready.endpoint, ready.size, ready.size_vram,
                           ready.context_length)

    def _release(self, gateway: bytes, key: str) -> None:
        runner = self.runners.get(key)
        if runner is None:
            return
        runner.leases.discard(gateway)
        if not runner.leases:
            if runner.ready is not None:
                # Stopping: a load of the same key from now on gets a fresh runner, not this
                # one (which would exit under the request). One not yet ready stays listed, or
                # its RunnerReady would be taken for its successor's.
                del self.runners[key]
            self._terminate(runner)

    def _terminate(self, runner: RunnerProcess) -> None:
        if runner.process is None:
            runner.stop_requested = True
        elif runner.process.returncode is None:
            runner.process.send_signal(signal.SIGTERM)
            # A runner hung in native code never handles SIGTERM: it gets SIGKILL after a while.
            loop = asyncio.get_running_loop()
            loop.call_later(KILL_AFTER_S, self._kill_if_alive, runner.process)

    @staticmethod
    def _kill_if_alive(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            log.warning("runner pid %d ignored SIGTERM: killing it", process.pid)
            process.kill()

    async def _serve_runner_events(self) -> None:
        while True:
            kind, payload = await self.events.recv_multipart()
            try:
                message = self.codec.decode(kind, payload)
            except (ValueError, msgspec.DecodeError):
                continue
            runner = self.runners.get(getattr(message, "key", ""))
            if runner is None:
                continue
            if isinstance(message, RunnerReady):
                if self.bind.startswith("tcp://") and "0.0.0.0" in message.endpoint:
                    message.endpoint = message.endpoint.replace("0.0.0.0", self.runner_host)
                runner.ready = message
                waiting, runner.waiting = runner.waiting, []
                for gateway, request_id in waiting:
                    await self._send(gateway, self._loaded(request_id, message))
            elif isinstance(message, RunnerFailed):
                runner.error = message.error

    async def _watch(self, runner: RunnerProcess) -> None:
        assert runner.process is not None
        returncode = await runner.process.wait()
        if self.runners.get(runner.key) is runner:
            del self.runners[runner.key]
        log.info("runner for %s exited with %d", runner.key, returncode)
        error = runner.error or f"model runner exited with status {returncode} while loading"
        for gateway, request_id in runner.waiting:
            await self._send(gateway, LoadFailed(request_id, runner.key, error))
        if runner.ready is not None:
            exited = RunnerExited(runner.key, runner.ready.endpoint, returncode)
            for gateway in self.gateways:
                await self._send(gateway, exited)


def run_node(bind: str, run_dir: str, runner_host: str = "127.0.0.1",
             exit_with_parent: bool = False, inventory: DeviceInventory | None = None) -> None:
    """Entry point of `herd worker`: serve until SIGTERM/SIGINT, then stop every runner."""

    async def main() -> None:
        node = WorkerNode(bind, run_dir, runner_host, inventory)
        task = asyncio.create_task(node.serve())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        if exit_with_parent:
            # Started by `herd serve`: a gateway killed with SIGKILL must not leave runners behind.
            parent = os.getppid()

            async def watch_parent() -> None:
                while os.getppid() == parent:
                    await asyncio.sleep(1)
                task.cancel()

            watcher = asyncio.create_task(watch_parent())
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            if exit_with_parent:
                watcher.cancel()

    asyncio.run(main())
