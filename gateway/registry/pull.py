"""POST /api/pull's work: manifest, then every blob not already in the store, then the manifest
file, with Ollama's progress statuses."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable

import msgspec

from herd.gateway.store.blobs import normal_digest, parse_digest
from herd.gateway.errors import (DigestMismatch, ManifestNotFound, NotFound, RegistryError, RegistryUnreachable)
from herd.gateway.store.manifest import Layer, Manifest
from herd.gateway.registry.client import RegistryClient, registry_target
from herd.gateway.store.models import ModelStore, run_blocking
from herd.gateway.registry.transfers import Transfers, progress_of
from herd.protocol.api import StatusChunk

log = logging.getLogger("herd.pull")


def decode_manifest(raw: bytes, what: str) -> Manifest:
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as e:
        raise RegistryError(f"{what}: invalid manifest: {e}") from None
    for layer in (manifest.config, *manifest.layers):
        parse_digest(layer.digest)  # a digest is a file name: nothing else gets near the disk
        if layer.size < 0:
            raise RegistryError(f"{what}: invalid manifest: negative layer size")
    return manifest


def unique_layers(manifest: Manifest) -> list[Layer]:
    """Layers then the config, each digest once (Ollama's order)."""
    seen: set[str] = set()
    layers = []
    for layer in (*manifest.layers, manifest.config):
        if (key := normal_digest(layer.digest)) not in seen:  # sha256:ABC… is sha256:abc…
            seen.add(key)
            layers.append(layer)
    return layers


def blob_status(verb: str, layer: Layer, completed: int) -> StatusChunk:
    return StatusChunk(f"{verb} {parse_digest(layer.digest)[:12]}", digest=layer.digest,
                       total=layer.size, completed=completed)


async def pull_model(transfers: Transfers, text: str,
                     insecure: bool) -> AsyncIterator[StatusChunk]:
    target = registry_target(text, insecure)
    client = transfers.client(target)
    yield StatusChunk("pulling manifest")
    raw = await client.manifest()
    manifest = decode_manifest(raw, "pull model manifest")
    store = transfers.store
    layers = unique_layers(manifest)
    # Pinned until the manifest is written: a delete of a model sharing a blob must not take it
    # between its download (or the check that it is there) and the manifest naming it.
    with store.pinning() as pin:
        pin([layer.digest for layer in layers])
        check_free_space(store, layers)
        mismatches: list[DigestMismatch] = []
        for layer in layers:
            try:
                async for chunk in _pull_blob(transfers, client, layer):
                    yield chunk
            except DigestMismatch as e:  # reported after every download, as Ollama verifies
                mismatches.append(e)
        yield StatusChunk("verifying sha256 digest")
        if mismatches:
            raise mismatches[0]
        if missing := [layer.digest for layer in layers if not store.has_blob(layer.digest)]:
            raise RegistryError(f"blob {missing[0]} vanished from the store during the pull")
        yield StatusChunk("writing manifest")
        replaced = await run_blocking(store.write_manifest_bytes, target.name, raw)
    if replaced:
        yield StatusChunk("removing unused layers")
    yield StatusChunk("success")


DISK_MARGIN = 64 << 20  # left free beside the blobs, for manifests and the store's temp files


def check_free_space(store: ModelStore, layers: list[Layer]) -> None:
    """A manifest's sizes are the registry's word: layers that cannot fit on the disk are
    refused before a byte is written, rather than filling it (what a partial file holds
    already is not needed again)."""
    need = 0
    for layer in layers:
        if not store.has_blob(layer.digest):
            try:
                have = os.path.getsize(store.partial_path(layer.digest))
            except OSError:
                have = 0
            need += max(0, layer.size - have)
    free = shutil.disk_usage(store.blobs_dir).free
    if need + DISK_MARGIN > free:
        raise RegistryError(f"insufficient disk space: the model needs {need} bytes, "
                            f"{free} are free")


async def _pull_blob(transfers: Transfers, client: RegistryClient,
                     layer: Layer) -> AsyncIterator[StatusChunk]:
    if transfers.store.has_blob(layer.digest):
        yield blob_status("pulling", layer, layer.size)
        return
    download = transfers.downloads.join(client, layer.digest, layer.size)
    try:
        assert download.task is not None
        async for chunk in progress_of(download.task,
                                       lambda: blob_status("pulling", layer, download.completed)):
            yield chunk
        download.task.result()
    finally:
        transfers.downloads.leave(download)


async def pull_base_model(transfers: Transfers, text: str,
                          emit: Callable[[StatusChunk], None]) -> None:
    """create's `from` names a model that is not local: pull it, as Ollama does. A registry
    without it, or no registry at all, leaves it what it was: a model that is not found."""
    try:
        async for chunk in pull_model(transfers, text, insecure=False):
            if chunk.status != "success":  # the create's own success ends the stream
                emit(chunk)
    except (ManifestNotFound, RegistryUnreachable) as e:
        log.info("create from %r: %s", text, e)
        raise NotFound(f'model "{text}" not found') from None
