"""The server roles the `herd` command starts: `serve` (a gateway and a local worker node),
`gateway` (HTTP only, connecting to HERD_WORKERS) and `worker` (a node only). The CLI imports
this module only for those commands, so client commands never load the server stack."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys

from herd.protocol.config import Settings

log = logging.getLogger("herd")


class LocalNode:
    """The worker node `herd serve` runs beside the gateway, restarted if it ever dies."""

    def __init__(self, settings: Settings) -> None:
        os.makedirs(settings.run_dir, exist_ok=True)
        self.endpoint = settings.node_bind or f"ipc://{settings.run_dir}/node.sock"
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "herd.cli", "worker", "--bind", self.endpoint,
               "--exit-with-parent"]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.process.poll() is not None:
                log.warning("worker node exited with status %d; starting a new one",
                            self.process.returncode)
                self.process = self._spawn()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HERD_TLS_CERT and HERD_TLS_KEY (PEM) serve HTTPS; one without the other is a mistake
    worth refusing to start over, not a reason to fall back to plain HTTP."""
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise SystemExit("HERD_TLS_CERT and HERD_TLS_KEY must be set together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def _serve_http(settings: Settings, node_endpoints: list[str],
                      local_node: LocalNode | None = None) -> None:
    # Imported here: the client commands (herd list, ...) should not pay for the server's imports.
    from aiohttp import web

    from herd.gateway.app import create_app
    from herd.gateway.http.drain import DRAIN

    app = create_app(settings, node_endpoints)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the
    # sequence in the runner at once instead of at the next write.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=_tls_context(settings))
    await site.start()
    log.info("Listening on %s:%d (version herd%s)", settings.host, settings.port,
             ", HTTPS" if settings.tls_cert else "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = asyncio.create_task(local_node.supervise()) if local_node else None
    try:
        await stop.wait()
        # Draining: /readyz is 503 from now on and new requests are refused, while streams in
        # flight run to their end (bounded), so a rolling restart cuts no answer short.
        app[DRAIN].begin()
        log.info("draining: waiting for %d request(s) in flight", app[DRAIN].in_flight)
        if not await app[DRAIN].wait_idle(settings.drain_timeout_s):
            log.warning("drain timeout (%gs): %d request(s) cut", settings.drain_timeout_s,
                        app[DRAIN].in_flight)
    finally:
        if supervisor is not None:
            supervisor.cancel()
        await runner.cleanup()


def _import_default_model(settings: Settings) -> None:
    from herd.gateway.store.default_model import ensure_default_model
    from herd.gateway.store.models import ModelStore

    ensure_default_model(ModelStore(settings.models_dir), settings.default_model,
                         settings.default_model_file)


def serve(settings: Settings) -> int:
    _import_default_model(settings)
    node = None if settings.workers else LocalNode(settings)
    endpoints = list(settings.workers) or [node.endpoint]  # type: ignore[union-attr]
    try:
        asyncio.run(_serve_http(settings, endpoints, node))
    finally:
        if node is not None:
            node.stop()
    return 0


def gateway(settings: Settings) -> int:
    if not settings.workers:
        log.error("herd gateway needs HERD_WORKERS (comma-separated worker node endpoints)")
        return 2
    _import_default_model(settings)
    asyncio.run(_serve_http(settings, list(settings.workers)))
    return 0


def worker(settings: Settings, bind: str, exit_with_parent: bool) -> int:
    from herd.worker.devices import DeviceInventory, DeviceSpecError, parse_devices
    from herd.worker.node import run_node

    try:
        inventory = DeviceInventory(parse_devices(settings.devices), settings.gpu_overhead)
    except DeviceSpecError as e:
        log.error("%s", e)
        return 2
    run_node(bind or settings.node_bind or "tcp://0.0.0.0:11435", settings,
             exit_with_parent=exit_with_parent, inventory=inventory)
    return 0
