"""Blob downloads: one per digest at a time, shared by every pull that needs that blob.

A download writes `blobs/sha256-<hex>-partial` while hashing and renames it to the blob's name
only once the sha256 matches, so an unverified byte is never visible under a blob name. A
download that fails or is abandoned keeps its partial file and the next one resumes it with a
`Range` request (the hash is carried on over the bytes already there). An flock on the partial
file keeps two gateways that share one store from writing it at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiohttp

from herd.gateway.store.blobs import parse_digest
from herd.gateway.errors import DigestMismatch, RegistryError, RegistryUnreachable
from herd.gateway.registry.client import NETWORK_ERRORS, describe
from herd.gateway.store.models import ModelStore, run_blocking

_CHUNK = 1 << 20
MAX_TRIES = 4
_LOCK_POLL = 0.2


class _Transient(Exception):
    """A failure worth another try from where the file stands (a dropped connection, a 5xx)."""


class BlobSource(Protocol):
    """What a download needs of a registry client: a blob from an offset on."""

    def blob(self, digest: str, offset: int,
             size: int) -> AbstractAsyncContextManager[aiohttp.ClientResponse]: ...

    async def error(self, response: aiohttp.ClientResponse, what: str) -> RegistryError: ...


class BlobDownload:
    """A download in flight; pulls that need the same blob watch the same one."""

    def __init__(self, digest: str, total: int) -> None:
        self.digest = digest
        self.total = total
        self.completed = 0
        self.waiters = 0
        self.task: asyncio.Task[None] | None = None


class BlobDownloads:
    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._active: dict[str, BlobDownload] = {}

    def join(self, source: BlobSource, digest: str, total: int) -> BlobDownload:
        """The download of `digest`, started now unless one is already under way."""
        download = self._active.get(digest)
        if (download is None or download.task is None or download.task.done()
                or download.task.cancelling()):
            download = BlobDownload(digest, total)
            download.task = asyncio.create_task(self._download(source, download))
            download.task.add_done_callback(lambda task: self._finished(download, task))
            self._active[digest] = download
        download.waiters += 1
        return download

    def leave(self, download: BlobDownload) -> None:
        """A pull stops watching; the last one to go (a client that hung up) stops the download,
        and its partial file stays for the next pull to resume."""
        download.waiters -= 1
        if download.waiters == 0 and download.task is not None and not download.task.done():
            download.task.cancel()

    def _finished(self, download: BlobDownload, task: asyncio.Task[None]) -> None:
        if self._active.get(download.digest) is download:
            del self._active[download.digest]
        if not task.cancelled():
            task.exception()  # retrieved here: a download nobody watches any more may fail

    async def close(self) -> None:
        tasks = [d.task for d in self._active.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one download ------------------------------------------------------------------------

    async def _download(self, source: BlobSource, download: BlobDownload) -> None:
        path = self.store.partial_path(download.digest)
        fd = await self._lock_partial(path, download.digest)
        if fd is None:  # another gateway on this store finished it while we waited
            download.completed = download.total
            return
        try:
            await self._fill(source, download, fd, path)
        finally:
            os.close(fd)  # releases the lock, after the rename

    async def _lock_partial(self, path: str, digest: str) -> int | None:
        while True:
            if self.store.has_blob(digest):
                return None
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                await asyncio.sleep(_LOCK_POLL)
                continue
            # The file we locked may have been renamed to the blob or removed meanwhile.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same and not self.store.has_blob(digest):
                return fd
            os.close(fd)

    async def _fill(self, source: BlobSource, download: BlobDownload, fd: int, path: str) -> None:
        want = f"sha256:{parse_digest(download.digest)}"
        size = os.fstat(fd).st_size
        if size > download.total:
            os.ftruncate(fd, 0)
            size = 0
        hasher = await run_blocking(_hash_prefix, fd, size)
        download.completed = size
        for attempt in range(1, MAX_TRIES + 1):
            try:
                hasher = await self._fetch(source, download, fd, hasher)
                break
            except _Transient as e:
                if attempt == MAX_TRIES:
                    raise RegistryError(f"max retries exceeded: {e}") from None
                await asyncio.sleep(0.5 * 2 ** attempt)
        await run_blocking(os.fsync, fd)
        got = f"sha256:{hasher.hexdigest()}"
        if got != want or download.completed != download.total:
            os.unlink(path)
            raise DigestMismatch(want, got)
        await run_blocking(self.store.commit_blob, path, download.digest)

    async def _fetch(self, source: BlobSource, download: BlobDownload, fd: int,
                     hasher: Any) -> Any:
        """Reads the rest of the blob into the file; returns the hash of all of it."""
        offset = download.completed
        if offset == download.total:
            return hasher
        try:
            async with source.blob(download.digest, offset, download.total) as response:
                if response.status >= 500:
                    raise _Transient(f"{response.status} from {response.url}")
                if response.status == 200 and offset:  # the registry ignored Range: start over
                    os.ftruncate(fd, 0)
                    offset, hasher = 0, hashlib.sha256()
                elif response.status not in (200, 206):
                    raise await source.error(response, f"pull blob {download.digest}")
                async for chunk in response.content.iter_chunked(_CHUNK):
                    if offset + len(chunk) > download.total:
                        os.ftruncate(fd, 0)
                        raise RegistryError(f"blob {download.digest} is larger than the "
                                            f"{download.total} bytes its manifest says")
                    await run_blocking(_write_and_hash, fd, offset, chunk, hasher)
                    offset += len(chunk)
                    download.completed = offset
        except RegistryUnreachable as e:
            raise _Transient(str(e)) from None
        except NETWORK_ERRORS as e:  # the connection dropped in the middle of the body
            raise _Transient(describe(e)) from None
        if offset < download.total:
            raise _Transient(f"the registry sent {offset} of {download.total} bytes")
        return hasher


def _hash_prefix(fd: int, size: int) -> Any:
    hasher = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return hasher


def _write_and_hash(fd: int, offset: int, chunk: bytes, hasher: Any) -> None:
    os.pwrite(fd, chunk, offset)
    hasher.update(chunk)
