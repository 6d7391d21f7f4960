"""POST /api/push's work: every blob the registry lacks, then the manifest's exact bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

from herd.gateway.errors import ModelNotFound, RegistryUnreachable
from herd.gateway.store.manifest import Layer
from herd.gateway.registry.limits import check_hop, transfer_timeout
from herd.gateway.registry.pull import blob_status, decode_manifest, unique_layers
from herd.gateway.registry.client import (NETWORK_ERRORS, RegistryClient, describe, next_location, registry_target, with_query)
from herd.gateway.store.models import run_blocking
from herd.gateway.registry.transfers import Transfers, progress_of
from herd.protocol.api import StatusChunk

_CHUNK = 1 << 20
_MIN_PART = 100 * 1000 * 1000
_MAX_PART = 1000 * 1000 * 1000


async def push_model(transfers: Transfers, text: str,
                     insecure: bool) -> AsyncIterator[StatusChunk]:
    target = registry_target(text, insecure)
    store = transfers.store
    yield StatusChunk("retrieving manifest")
    try:
        raw = await run_blocking(store.manifest_bytes, target.name)
    except ModelNotFound:
        yield StatusChunk("couldn't retrieve manifest")
        raise
    manifest = decode_manifest(raw, "push model manifest")
    client = transfers.client(target)
    for layer in unique_layers(manifest):
        async for chunk in _push_blob(client, layer, store.blob_path(layer.digest)):
            yield chunk
    yield StatusChunk("pushing manifest")
    await client.put_manifest(raw, manifest.mediaType)
    yield StatusChunk("success")


class _Upload:
    def __init__(self, client: RegistryClient, layer: Layer, path: str) -> None:
        self.client = client
        self.layer = layer
        self.path = path
        self.sent = 0
        self._part_md5: Any = hashlib.md5()
        self.what = f"push blob {layer.digest}"

    async def run(self) -> None:
        """POST for an upload URL, PATCH the parts (a 307 sends a part to a storage URL
        instead, as Ollama's registry does), then PUT ?digest= to finish."""
        size = self.layer.size
        location = await self.client.start_upload(self.layer.digest)
        part_size = min(max(size // 16, _MIN_PART), _MAX_PART)
        part_md5s = []
        for offset in range(0, size, part_size):
            location = await self._patch(location, offset, min(part_size, size - offset))
            part_md5s.append(self._part_md5.digest())
        etag = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
        url = with_query(location, digest=self.layer.digest, etag=etag)
        async with self.client.request("PUT", url, what=self.what, body=b"",
                                       headers={"Content-Length": "0"}) as response:
            if response.status not in (200, 201, 202, 204):
                raise await self.client.error(response, self.what)

    def _body(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """A part's bytes, read off the event loop; made afresh for each attempt."""
        start = self.sent
        md5 = self._part_md5 = hashlib.md5()

        async def chunks() -> AsyncIterator[bytes]:
            self.sent = start
            with open(self.path, "rb") as f:
                done = 0
                while done < length:
                    chunk = await run_blocking(os.pread, f.fileno(),
                                               min(_CHUNK, length - done), offset + done)
                    if not chunk:
                        raise OSError(f"{self.path} is shorter than its manifest says")
                    md5.update(chunk)
                    done += len(chunk)
                    self.sent += len(chunk)
                    yield chunk

        return chunks()

    async def _patch(self, location: str, offset: int, length: int) -> str:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                   "Content-Range": f"{offset}-{offset + length - 1}", "X-Redirect-Uploads": "1"}
        async with self.client.request("PATCH", location, what=self.what, headers=headers,
                                       body=lambda: self._body(offset, length),
                                       timeout=transfer_timeout(length)) as response:
            if response.status == 307:  # the part goes to storage; the upload goes on here
                await self._put_part(urljoin(location, response.headers.get("Location", "")),
                                     location, offset, length)
            elif response.status not in (202, 204):
                raise await self.client.error(response, self.what)
            return next_location(response, location, self.client.target.base_url)

    async def _put_part(self, url: str, location: str, offset: int, length: int) -> None:
        # A storage URL is signed already: no registry token goes there, and it is followed no
        # further than the host the registry named.
        check_hop(url, self.client.target.base_url, location, foreign_ok=True, what=self.what)
        try:
            async with self.client.session.put(url, data=self._body(offset, length),
                                               headers={"Content-Length": str(length)},
                                               timeout=transfer_timeout(length),
                                               allow_redirects=False) as reply:
                if reply.status >= 400:
                    raise await self.client.error(reply, self.what)
        except NETWORK_ERRORS as e:
            raise RegistryUnreachable(f'{self.what}: PUT "{url}": {describe(e)}') from e


async def _push_blob(client: RegistryClient, layer: Layer, path: str) -> AsyncIterator[StatusChunk]:
    if await client.has_blob(layer.digest):
        yield blob_status("pushing", layer, layer.size)
        return
    upload = _Upload(client, layer, path)
    task = asyncio.create_task(upload.run())
    try:
        async for chunk in progress_of(task, lambda: blob_status("pushing", layer, upload.sent)):
            yield chunk
        task.result()
    finally:
        if not task.done():  # the client hung up: stop sending
            task.cancel()
