"""What pulls and pushes share for the gateway's lifetime: one HTTP client session (its
connection pool, proxy settings from HTTPS_PROXY/NO_PROXY) and the blob downloads in flight."""

from __future__ import annotations

import asyncio
import platform
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from herd.gateway.registry.download import BlobDownloads
from herd.gateway.registry.client import RegistryClient, RegistryTarget
from herd.gateway.store.models import ModelStore
from herd.protocol.api import StatusChunk

PROGRESS_INTERVAL = 0.06  # Ollama's pace for progress lines
# No total limit (a blob can take an hour); a registry silent for a minute is a dead connection.
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=60)


class Transfers:
    def __init__(self, store: ModelStore, session: aiohttp.ClientSession, version: str) -> None:
        self.store = store
        self.session = session
        self.downloads = BlobDownloads(store)
        self.user_agent = (f"ollama/{version} ({platform.machine()} {sys.platform}) "
                           f"Python/{platform.python_version()} herd")

    @classmethod
    def open(cls, store: ModelStore, version: str) -> Transfers:
        # trust_env: HTTPS_PROXY / NO_PROXY apply to registry traffic, as in Ollama.
        return cls(store, aiohttp.ClientSession(timeout=_TIMEOUT, trust_env=True), version)

    def client(self, target: RegistryTarget) -> RegistryClient:
        return RegistryClient(self.session, target, self.user_agent)

    async def close(self) -> None:
        await self.downloads.close()
        await self.session.close()


TRANSFERS: web.AppKey[Transfers] = web.AppKey("herd_transfers", Transfers)


async def progress_of(task: asyncio.Future[object],
                      report: Callable[[], StatusChunk]) -> AsyncIterator[StatusChunk]:
    """`report()` every PROGRESS_INTERVAL while `task` runs, when it changed, and once at the
    end. Waiting never cancels the task: it may be shared with other pulls."""
    last: StatusChunk | None = None
    while True:
        done, _ = await asyncio.wait({task}, timeout=PROGRESS_INTERVAL)
        chunk = report()
        if chunk != last:
            yield chunk
            last = chunk
        if done:
            return
