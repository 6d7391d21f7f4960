"""Worker discovery: a HERD_WORKERS entry may name a host that resolves to several addresses (a
Kubernetes headless Service, a compose service with replicas); every address is a node. Names
are re-resolved every HERD_DISCOVERY_INTERVAL, so scaling workers needs no gateway restart:
new addresses join, vanished ones leave (their runners are gone for this gateway).

ZeroMQ would resolve a name once, at connect, to one address: hence resolving here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from aiohttp import web

from herd.gateway.cluster.node_client import NodeClient
from herd.gateway.cluster.scheduler import Scheduler

log = logging.getLogger("herd.gateway")


def split_tcp(endpoint: str) -> tuple[str, str] | None:
    """(host, port) of a tcp:// endpoint whose host is a name; None for literals and ipc://."""
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        return (host, port) if host and host != "*" else None


async def resolve(endpoint: str) -> list[str]:
    """The node endpoints one HERD_WORKERS entry stands for. IPv4 addresses are preferred: a
    name with an A and an AAAA record for one host must not count as two nodes."""
    parts = split_tcp(endpoint)
    if parts is None:
        return [endpoint]
    host, port = parts
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = sorted({i[4][0] for i in infos if i[0] == socket.AF_INET})
    v6 = sorted({i[4][0] for i in infos if i[0] == socket.AF_INET6})
    return [f"tcp://{a}:{port}" for a in v4] or [f"tcp://[{a}]:{port}" for a in v6]


class Discovery:
    def __init__(self, scheduler: Scheduler, entries: list[str], interval_s: float) -> None:
        self.scheduler = scheduler
        self.entries = entries
        self.interval_s = interval_s
        self.errors: dict[str, str] = {}  # entry → why it resolves to nothing, for /readyz
        self._found: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        if any(split_tcp(e) for e in self.entries):
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # a resolver hiccup must not end discovery for good
                log.exception("worker discovery failed")

    async def refresh(self) -> None:
        for entry in self.entries:
            try:
                self._found[entry] = await resolve(entry)
                self.errors.pop(entry, None)
            except OSError as e:
                # Keep what was found: a DNS outage is not a reason to forget live nodes.
                self.errors[entry] = f"{entry} does not resolve: {e}"
                log.warning("%s", self.errors[entry])
        wanted = {endpoint for found in self._found.values() for endpoint in found}
        nodes: dict[str, NodeClient] = {n.endpoint: n for n in self.scheduler.nodes}
        for endpoint in sorted(wanted - nodes.keys()):
            log.info("worker node %s joined", endpoint)
            await self.scheduler.add_node(endpoint)
        for endpoint in sorted(nodes.keys() - wanted):
            log.info("worker node %s is no longer in HERD_WORKERS' names", endpoint)
            await self.scheduler.remove_node(nodes[endpoint])


DISCOVERY: web.AppKey[Discovery] = web.AppKey("herd_discovery", Discovery)
