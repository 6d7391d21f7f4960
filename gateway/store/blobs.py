"""The blob half of the model store: blobs/sha256-<hex>, content-addressed and verified.

A blob only ever gets its digest name once its bytes are on disk, fsynced and hashed, so a crash
leaves at worst a dot-file that start-up housekeeping removes. The atomic-write primitives live
here too; the manifests (herd.gateway.store.models) write through them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator

from herd.gateway.errors import BadRequest
from herd.gateway.store.manifest import Layer

log = logging.getLogger("herd.store")

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_CHUNK = 1 << 20
# Temp files carry who made them, `.tmp-<host>.<pid>-...`: replicas sharing one store (each may
# be pid 1 in its own container, hence the host) sweep only their own leftovers or a dead
# process's. A file of another host is left alone unless it is a day old.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "host"
# A second dot: the quantizer's own partial output, `.<its temp name>.<hex>.partial`.
_OWNER = re.compile(r"^\.\.?tmp-([A-Za-z0-9_-]+)\.(\d+)-")
_FOREIGN_AGE = 24 * 3600


def temp_prefix(kind: str = "") -> str:
    """The prefix of every temp file or folder this process makes in the store."""
    return f".tmp-{_HOST}.{os.getpid()}-{kind}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweepable(fname: str, mtime: float, now: float) -> bool:
    """A dot-file in blobs/ that no live process of this host is still writing."""
    match = _OWNER.match(fname)
    if match is None or match.group(1) != _HOST:  # an older gateway's or another host's
        return now - mtime > _FOREIGN_AGE
    pid = int(match.group(2))
    return pid == os.getpid() or not _pid_alive(pid)


class InvalidDigest(BadRequest):
    def __init__(self) -> None:
        super().__init__("invalid digest format")


def parse_digest(digest: str) -> str:
    """'sha256:<hex>' or 'sha256-<hex>' → lower-case hex; anything else is a 400."""
    m = _DIGEST.match(digest)
    if m is None:
        raise InvalidDigest()
    return m.group(1).lower()


def normal_digest(digest: str) -> str:
    """The one spelling digests are compared in: `sha256:<lower-case hex>`."""
    return f"sha256:{parse_digest(digest)}"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class BlobStore:
    """The blobs folder under a store root; ModelStore adds the manifests on top of it."""

    def __init__(self, root: str) -> None:
        self.blobs_dir = os.path.join(root, "blobs")
        os.makedirs(self.blobs_dir, exist_ok=True)

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, f"sha256-{parse_digest(digest)}")

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def partial_path(self, digest: str) -> str:
        """Where a download in progress lives (Ollama's name), kept across restarts to resume;
        never a blob's name, so nothing reads it before it is verified and committed."""
        return self.blob_path(digest) + "-partial"

    def commit_blob(self, path: str, digest: str) -> None:
        """Gives a fully written, already verified file in blobs/ its digest name."""
        os.replace(path, self.blob_path(digest))
        fsync_dir(self.blobs_dir)

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Streams a blob to a temp file while hashing; only a verified blob gets its name.
        Writes, hashing (hashlib drops the GIL) and the fsyncs run in threads, never on the
        event loop."""
        final = self.blob_path(digest)
        expected = parse_digest(digest)
        fd, tmp = tempfile.mkstemp(dir=self.blobs_dir, prefix=temp_prefix())
        hasher = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    await asyncio.to_thread(_write_and_hash, f, chunk, hasher)
                await asyncio.to_thread(_flush_and_sync, f)
            got = hasher.hexdigest()
            if got != expected:
                raise BadRequest(f'digest mismatch, expected "sha256:{expected}", got "sha256:{got}"')
            await asyncio.to_thread(self._rename_into_place, tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _rename_into_place(self, tmp: str, final: str) -> None:
        os.replace(tmp, final)
        fsync_dir(self.blobs_dir)

    def write_bytes_blob(self, data: bytes) -> Layer:
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobs_dir, f"sha256-{digest}")
        if not os.path.exists(path):
            atomic_write(path, data)
        return Layer("", f"sha256:{digest}", len(data))

    def import_file(self, source: str, digest_hex: str | None = None) -> str:
        """Copies a local file into the blobs (verified) and returns its digest."""
        if digest_hex and os.path.isfile(os.path.join(self.blobs_dir, f"sha256-{digest_hex}")):
            return f"sha256:{digest_hex}"
        fd, tmp = tempfile.mkstemp(dir=self.blobs_dir, prefix=temp_prefix())
        hasher = hashlib.sha256()
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            got = hasher.hexdigest()
            if digest_hex and got != digest_hex:
                raise ValueError(f"{source}: sha256 {got} does not match {digest_hex}")
            os.replace(tmp, os.path.join(self.blobs_dir, f"sha256-{got}"))
            fsync_dir(self.blobs_dir)
            return f"sha256:{got}"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def adopt_file(self, path: str) -> str:
        """Moves a finished file from inside the blobs folder to its digest name."""
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
            os.fsync(f.fileno())
        digest = hasher.hexdigest()
        os.replace(path, os.path.join(self.blobs_dir, f"sha256-{digest}"))
        fsync_dir(self.blobs_dir)
        return f"sha256:{digest}"

    def remove_partial_files(self) -> None:
        """Start-up housekeeping: dot-files in blobs/ (temp files, conversion folders, partial
        quantizations) are what a crash leaves; no real blob starts with a dot. Only this
        process's own, or a dead one's, go (see sweepable)."""
        now = time.time()
        for fname in os.listdir(self.blobs_dir):
            if not fname.startswith("."):
                continue
            path = os.path.join(self.blobs_dir, fname)
            try:
                if not sweepable(fname, os.lstat(path).st_mtime, now):
                    continue
            except OSError:
                continue
            log.debug("removing leftover %s", fname)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _write_and_hash(f, chunk: bytes, hasher) -> None:
    f.write(chunk)
    hasher.update(chunk)


def _flush_and_sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())
