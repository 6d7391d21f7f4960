"""BlobDownloads without a registry: one fetch per digest however many pulls wait on it, a
mismatching blob never committed, an abandoned download stopped and later resumed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
from contextlib import asynccontextmanager

import pytest

from herd.gateway.registry.download import BlobDownloads
from herd.gateway.errors import DigestMismatch
from herd.gateway.store.models import ModelStore


class _SlowSource:
    """Serves one blob in small pieces, slowly, and counts the requests."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[int] = []

    @asynccontextmanager
    async def _respond(self, offset: int):
        self.requests.append(offset)
        data = self.data

        class Content:
            async def iter_chunked(self, size: int):
                for i in range(offset, len(data), 4):
                    await asyncio.sleep(0.005)
                    yield data[i:i + 4]

        class Response:
            status = 206 if offset else 200
            url = "fake://blob"
            content = Content()

        yield Response()

    def blob(self, digest: str, offset: int, size: int = 0):
        return self._respond(offset)

    async def error(self, response, what: str):
        raise AssertionError(what)


def test_downloads_of_one_digest_are_shared(tmp_path: pathlib.Path) -> None:
    data = os.urandom(64)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = ModelStore(str(tmp_path / "models"))

    async def main() -> None:
        downloads = BlobDownloads(store)
        source = _SlowSource(data)
        first = downloads.join(source, digest, len(data))
        second = downloads.join(source, digest, len(data))
        assert first is second and first.waiters == 2
        await asyncio.gather(first.task, second.task)
        assert source.requests == [0] and store.has_blob(digest)
        # A digest that does not match is never committed.
        bad = downloads.join(_SlowSource(b"x" * 64), "sha256:" + "0" * 64, 64)
        with pytest.raises(DigestMismatch):
            await bad.task
        assert not os.path.exists(store.blob_path("sha256:" + "0" * 64))
        # The last watcher leaving stops the download; its partial file stays for a resume.
        other = os.urandom(64)
        other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
        slow = _SlowSource(other)
        abandoned = downloads.join(slow, other_digest, 64)
        while abandoned.completed < 16:
            await asyncio.sleep(0.005)
        downloads.leave(abandoned)
        with pytest.raises(asyncio.CancelledError):
            await abandoned.task
        resumed = downloads.join(slow, other_digest, 64)
        await resumed.task
        assert slow.requests[0] == 0 and slow.requests[1] >= 16
        assert store.has_blob(other_digest)
        await downloads.close()

    asyncio.run(main())
