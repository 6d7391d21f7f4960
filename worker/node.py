"""The worker node: starts one runner process per loaded model and tells gateways about them.

Gateways send LoadModel / UnloadModel to the node's ROUTER socket. A runner is shared by every
gateway that asked for the same key (gateway replicas use one runner) and stops when the last
gateway releases it, or when the last holder's heartbeats stop for the lease timeout. Runner exits
are reported to every gateway at once. Over TCP with keys, the node and every runner it starts
accept only CURVE-authenticated gateways (protocol/curve.py); weights come only from the node's
own store, by digest (worker/policy.py). SIGTERM drains: no new runners, the runners finish
their sequences (bounded by HERD_DRAIN_TIMEOUT), the gateways are told.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field

import msgspec
import zmq
import zmq.asyncio

from herd.protocol.config import Settings
from herd.protocol.curve import ServerKeys, is_tcp
from herd.protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, NodeInfo, RunnerExited,
                                RunnerFailed, RunnerInfo, RunnerReady, RunnerSpec, UnloadModel,
                                WireCodec, WireMessage)
from herd.worker import policy
from herd.worker.cpu_share import CpuBoard
from herd.worker.devices import DeviceInventory, visible_devices

CONTROL_MAX_BYTES = 1024 * 1024  # LoadModel and friends are a few hundred bytes

log = logging.getLogger("herd.node")

KILL_AFTER_S = 10.0  # a runner released (nobody holds it) that has not exited by then is killed


def _runner_info(r: RunnerProcess) -> RunnerInfo:
    return RunnerInfo(r.key, r.spec.model_key or r.key, r.ready.endpoint if r.ready else "",
                      r.spec.devices, r.spec.device_memory)


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
    cpu_slot: int = -1  # its byte on the node's CPU board (cpu_share.py)


class WorkerNode:
    def __init__(self, bind: str, settings: Settings,
                 inventory: DeviceInventory | None = None) -> None:
        self.bind = bind
        self.settings = settings
        self.inventory = inventory or DeviceInventory()
        self.run_dir = settings.run_dir
        self.runner_host = settings.runner_host
        self.keys = ServerKeys.load(settings.curve_secret_key, settings.curve_authorized) \
            if is_tcp(bind) else None
        self.codec = WireCodec()
        self.zctx = zmq.asyncio.Context()
        self.sock = self.zctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, CONTROL_MAX_BYTES)
        self.events = self.zctx.socket(zmq.PULL)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events_endpoint = f"ipc://{self.run_dir}/node-events-{os.getpid()}.sock"
        self.runners: dict[str, RunnerProcess] = {}
        # Runners told to stop, finishing their sequences: out of `runners`, so a new load of
        # the same key starts a fresh runner instead of being offered one that is going away.
        self.stopping: set[RunnerProcess] = set()
        self.gateways: dict[bytes, float] = {}  # identity → when it was last heard from
        self.draining = False
        self._counter = 0
        self.node_id = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth: object | None = None
        self.cpu_board: CpuBoard | None = None  # made in serve(), in the run directory

    def _runner_bind(self) -> str:
        self._counter += 1
        if self.bind.startswith("ipc://"):
            return f"ipc://{self.run_dir}/runner-{os.getpid()}-{self._counter}.sock"
        return policy.runner_bind(self.bind)

    async def serve(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        self.cpu_board = CpuBoard(f"{self.run_dir}/cpu-board-{os.getpid()}")
        if self.keys is not None:
            self._auth = self.keys.start_authenticator(self.zctx, asyncio=True)
            self.keys.apply(self.sock)
        elif is_tcp(self.bind):
            policy.warn_if_open(self.bind)
        self.sock.bind(self.bind)
        self.events.bind(self.events_endpoint)
        log.info("worker node listening on %s%s", self.bind,
                 " (CURVE)" if self.keys is not None else "")
        try:
            await asyncio.gather(self._serve_gateways(), self._serve_runner_events(),
                                 self._expire_leases())
        finally:
            await self.close()

    async def drain(self) -> None:
        """SIGTERM: take no new runners, tell the gateways, let every runner finish its
        sequences (a runner exits on SIGTERM once idle), kill what is left at the bound."""
        self.draining = True
        log.info("draining: %d runner(s) finishing their sequences", len(self.runners))
        for gateway in list(self.gateways):
            await self._send(gateway, self.info())
        for runner in list(self.runners.values()):
            self._terminate(runner, kill_after=self.settings.drain_timeout_s + 1)
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while any(r.process is not None and r.process.returncode is None
                  for r in self.stopping) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for runner in list(self.runners.values()):
            self._terminate(runner)
        for runner in list(self.stopping):
            if runner.process is None:
                continue
            try:
                await asyncio.wait_for(runner.process.wait(), 5)
            except asyncio.TimeoutError:
                runner.process.kill()
        if self._auth is not None:
            self._auth.stop()  # type: ignore[attr-defined]
        self.sock.close()
        self.events.close()
        if self.cpu_board is not None:
            self.cpu_board.close()

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
            self.gateways[gateway] = time.monotonic()
            if isinstance(message, LoadModel):
                await self._load(gateway, message)
            elif isinstance(message, UnloadModel):
                self._release(gateway, message.key)
            elif isinstance(message, Hello):
                self._renew(gateway, message.keys)
                await self._send(gateway, self.info())

    def _renew(self, gateway: bytes, keys: list[str]) -> None:
        """A heartbeat names the runners its gateway still uses: after an outage long enough
        to lose the leases, the ones still running are held again."""
        for key in keys:
            runner = self.runners.get(key)
            if runner is not None and runner.ready is not None:
                runner.leases.add(gateway)

    def info(self) -> NodeInfo:
        # Runners still starting hold (or are about to hold) their memory too, and so do
        # runners finishing their sequences: counted in the devices, but no longer offered.
        runners = [_runner_info(r) for r in self.runners.values()]
        stopping = [_runner_info(r) for r in self.stopping if self.runners.get(r.key) is not r]
        return NodeInfo(self.node_id, self.inventory.snapshot(runners + stopping), runners,
                        self.draining)

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.lease_timeout_s / 4))
            cutoff = time.monotonic() - self.settings.lease_timeout_s
            for gateway in [g for g, seen in self.gateways.items() if seen < cutoff]:
                del self.gateways[gateway]
                held = [r.key for r in self.runners.values() if gateway in r.leases]
                if held:
                    log.warning("a gateway went silent: releasing its %d runner lease(s)", len(held))
                for key in held:
                    self._release(gateway, key)

    def _refusal(self, gateway: bytes, spec: RunnerSpec) -> str:
        if self.draining:
            return "worker node is shutting down"
        held = sum(1 for r in self.runners.values() if gateway in r.leases)
        if held >= self.settings.max_runners_per_peer:
            return (f"this gateway already holds {held} runners on this worker node "
                    f"(HERD_MAX_RUNNERS_PER_PEER={self.settings.max_runners_per_peer})")
        return ""

    async def _load(self, gateway: bytes, message: LoadModel) -> None:
        key = message.spec.key
        runner = self.runners.get(key)
        if runner is not None and runner.ready is not None and not self.draining:
            runner.leases.add(gateway)
            await self._send(gateway, self._loaded(message.request_id, runner.ready))
            return
        if runner is None:
            try:
                refusal = self._refusal(gateway, message.spec)
                if refusal:
                    raise policy.Refused(refusal)
                paths = [policy.blob_path(self.settings.models_dir, message.spec.model_digest),
                         *(policy.blob_path(self.settings.models_dir, d)
                           for d in message.spec.adapter_digests)]
                projector, draft = (
                    policy.blob_path(self.settings.models_dir, digest) if digest else ""
                    for digest in (message.spec.projector_digest, message.spec.draft_digest))
                policy.check_memory(message.spec, paths + [p for p in (projector, draft) if p],
                                    self.info().devices)
            except policy.Refused as e:
                log.warning("refused to load %s: %s", key, e)
                await self._send(gateway, LoadFailed(message.request_id, key, str(e)))
                return
            # Registered, with its first waiter, before the process exists: a fast runner's
            # RunnerReady can arrive before create_subprocess_exec returns.
            runner = self.runners[key] = RunnerProcess(key, message.spec)
            runner.leases.add(gateway)
            runner.waiting.append((gateway, message.request_id))
            try:
                await self._spawn(runner, message.spec, paths, projector, draft)
            except OSError as e:
                del self.runners[key]
                for waiter, request_id in runner.waiting:
                    await self._send(waiter, LoadFailed(request_id, key, f"cannot start a runner: {e}"))
            return
        if self.draining:
            await self._send(gateway, LoadFailed(message.request_id, key, "worker node is shutting down"))
            return
        runner.leases.add(gateway)
        runner.waiting.append((gateway, message.request_id))

    async def _spawn(self, runner: RunnerProcess, spec: RunnerSpec, paths: list[str],
                     projector: str = "", draft: str = "") -> None:
        cmd = [sys.executable, "-m", "herd.worker.runner", "--spec", msgspec.json.encode(spec).decode(),
               "--bind", self._runner_bind(), "--events", self.events_endpoint,
               "--model", paths[0], *(a for p in paths[1:] for a in ("--adapter", p)),
               "--max-message-bytes", str(self.settings.max_message_bytes)]
        if projector:
            cmd += ["--projector", projector]
        if draft:
            cmd += ["--draft", draft]
        if self.cpu_board is not None:
            runner.cpu_slot = self.cpu_board.take()
            cmd += ["--cpu-board", self.cpu_board.path, "--cpu-slot", str(runner.cpu_slot)]
        if self.keys is not None:
            cmd += ["--curve-secret-key", self.keys.secret_path,
                    "--curve-authorized", self.keys.authorized_dir]
        env = None
        visible = visible_devices(spec.devices)
        if visible is not None:  # pinned to its GPUs, or to none when placed on the host
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        try:
            runner.process = process = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, env=env)
        except BaseException:
            if self.cpu_board is not None:
                self.cpu_board.give_back(runner.cpu_slot)
            raise
        if runner.stop_requested:
            process.send_signal(signal.SIGTERM)
        log.info("started runner pid %d for %s", process.pid, spec.key)
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
            self._terminate(runner)

    def _terminate(self, runner: RunnerProcess, kill_after: float = KILL_AFTER_S) -> None:
        """SIGTERM: the runner refuses new work, finishes its sequences and exits. One hung in
        native code never handles it: SIGKILL after `kill_after` (the drain bound, draining)."""
        if self.runners.get(runner.key) is runner and runner.ready is not None:
            # A load of the same key from now on gets a fresh runner, not this one (which
            # would exit under the request). One not yet ready stays listed, or its
            # RunnerReady would be taken for its successor's.
            del self.runners[runner.key]
        self.stopping.add(runner)
        if runner.process is not None and runner.process.returncode is None \
                and not runner.stop_requested:
            runner.process.send_signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            loop.call_later(kill_after, self._kill_if_alive, runner.process)
        runner.stop_requested = True

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
                if self.bind.startswith("tcp://"):
                    message.endpoint = policy.advertised(message.endpoint, self.runner_host)
                runner.ready = message
                waiting, runner.waiting = runner.waiting, []
                for gateway, request_id in waiting:
                    await self._send(gateway, self._loaded(request_id, message))
            elif isinstance(message, RunnerFailed):
                runner.error = message.error

    async def _watch(self, runner: RunnerProcess) -> None:
        assert runner.process is not None
        returncode = await runner.process.wait()
        if self.cpu_board is not None:
            self.cpu_board.give_back(runner.cpu_slot)
        if self.runners.get(runner.key) is runner:
            del self.runners[runner.key]
        self.stopping.discard(runner)
        log.info("runner for %s exited with %d", runner.key, returncode)
        error = runner.error or f"model runner exited with status {returncode} while loading"
        for gateway, request_id in runner.waiting:
            await self._send(gateway, LoadFailed(request_id, runner.key, error))
        if runner.ready is not None:
            exited = RunnerExited(runner.key, runner.ready.endpoint, returncode)
            for gateway in list(self.gateways):
                await self._send(gateway, exited)


def run_node(bind: str, settings: Settings, exit_with_parent: bool = False,
             inventory: DeviceInventory | None = None) -> None:
    """Entry point of `herd worker`: serve until SIGTERM/SIGINT, drain, then stop every runner."""

    async def main() -> None:
        node = WorkerNode(bind, settings, inventory)
        task = asyncio.create_task(node.serve())
        loop = asyncio.get_running_loop()
        draining: list[asyncio.Task[None]] = []

        def drain_then_stop() -> None:
            if draining:
                task.cancel()  # a second signal: stop now
                return

            async def go() -> None:
                await node.drain()
                task.cancel()

            draining.append(asyncio.create_task(go()))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, drain_then_stop)
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
