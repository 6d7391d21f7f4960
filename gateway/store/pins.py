"""Blobs that a create or pull in flight has written or chosen, and that no manifest on disk
names yet: a delete (of a model that shared one) must not take them.

Pins live in this process (a counter) and on disk as empty marker files in blobs/, named like the
store's temp files (`.tmp-<host>.<pid>-pin-<hex>-<n>`), so replicas sharing one store see each
other's pins and the start-up sweep clears those of a dead process. Taking a pin and removing
unreferenced blobs both hold an flock on `<root>/.herd-gc.lock`: a pin is either seen by the
remover or taken after the blob went, and then the pinning side finds the blob missing (a pull
downloads it again, a create reports it).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from herd.gateway.store.blobs import InvalidDigest, parse_digest, sweepable, temp_prefix

_PIN_FILE = re.compile(r"^\.tmp-[A-Za-z0-9_-]+\.\d+-pin-([0-9a-f]{64})-\d+$")
_serial = itertools.count()

Pin = Callable[[Iterable[str]], None]


class Pins:
    def __init__(self, root: str, blobs_dir: str) -> None:
        self.blobs_dir = blobs_dir
        self._lock_path = os.path.join(root, ".herd-gc.lock")
        self._local: Counter[str] = Counter()
        self._mutex = threading.Lock()

    @contextmanager
    def gc_lock(self) -> Iterator[None]:
        """Across processes and threads: one open file description per holder."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def holding(self) -> Iterator[Pin]:
        """`with pins.holding() as pin: pin(digests)`; the pins go when the block ends."""
        held: list[tuple[str, str]] = []

        def pin(digests: Iterable[str]) -> None:
            keys = []
            for digest in digests:
                try:
                    keys.append(parse_digest(digest))
                except InvalidDigest:
                    continue
            with self.gc_lock():
                for key in keys:
                    marker = os.path.join(self.blobs_dir,
                                          f"{temp_prefix('pin-')}{key}-{next(_serial)}")
                    with open(marker, "wb"):
                        pass
                    with self._mutex:
                        self._local[key] += 1
                    held.append((key, marker))

        try:
            yield pin
        finally:
            if held:
                with self.gc_lock():  # never in the middle of a remover's walk
                    for key, marker in held:
                        with self._mutex:
                            self._local[key] -= 1
                            if self._local[key] <= 0:
                                del self._local[key]
                        try:
                            os.unlink(marker)
                        except OSError:
                            pass

    def pinned(self) -> set[str]:
        """Every pinned hex digest, this process's and other live ones'; call under gc_lock."""
        with self._mutex:
            found = set(self._local)
        now = time.time()
        for fname in os.listdir(self.blobs_dir):
            match = _PIN_FILE.match(fname)
            if match is None or match.group(1) in found:
                continue
            try:
                mtime = os.lstat(os.path.join(self.blobs_dir, fname)).st_mtime
            except OSError:
                continue
            if not sweepable(fname, mtime, now) or _own(fname):
                found.add(match.group(1))
        return found


def _own(fname: str) -> bool:
    return fname.startswith(temp_prefix())
