"""The host's cores shared among the runners that compute on them at the same moment.

Each runner's llama.cpp context defaults to every core. ggml's thread pools spin at their
barriers, so two runners decoding at once with all the cores each wait on each other's spinning
threads: on this repository's 2-core machine, SmolLM2 and gemma3 in two llama-server processes
at 2 threads each made 11 tok/s each at once, at 1 thread each 143 and 81 (bench/RESULTS.md,
"Two models at once"). A chat model beside an embedding model, or two chat models, is a common
way to use one host.

So the node keeps a board, one byte per runner slot in a small file its runners map: a runner
marks its byte while it has work, and before each step takes its share of the cores among the
marked ones (llama_set_n_threads; the count applies from the next decode) and writes it there.
A runner alone gets its full count again at its next step. Runners whose layers all live on a
GPU take no part: their threads barely compute.
"""

from __future__ import annotations

import mmap
import os

SLOTS = 256


def fair_share(cores: int, busy: list[int], mine: int, cap: int) -> int:
    """This slot's threads when the slots in `busy` (which include `mine`) compute at once:
    the cores split evenly, the remainder to the lowest slots, never above `cap` or below 1."""
    ranked = sorted(set(busy) | {mine})
    base, extra = divmod(cores, len(ranked))
    share = base + (1 if ranked.index(mine) < extra else 0)
    return max(1, min(cap, share))


class CpuBoard:
    """The node's side: creates the board and hands out slots."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SLOTS)
            self._map = mmap.mmap(fd, SLOTS)
        finally:
            os.close(fd)
        self._free = list(range(SLOTS - 1, -1, -1))

    def take(self) -> int:
        """A free slot, or -1 when every one is taken (that runner then shares nothing)."""
        return self._free.pop() if self._free else -1

    def give_back(self, slot: int) -> None:
        """The runner has exited: its mark goes (a crashed runner must not hold a share)."""
        if slot < 0:
            return
        self._map[slot] = 0
        self._free.append(slot)
        self._free.sort(reverse=True)

    def threads(self) -> dict[int, int]:
        """The working runners' slots and the threads each said it computes with."""
        return {i: b for i, b in enumerate(self._map[:SLOTS]) if b}

    def close(self) -> None:
        self._map.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class CpuShare:
    """A runner's side: its byte on the board holds the threads it computes with while it has
    work (0 while it has none), so the node and tests can read the split."""

    def __init__(self, path: str, slot: int, cores: int, cap: int) -> None:
        self.slot = slot
        self.cores = cores
        self.cap = cap
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SLOTS)
        finally:
            os.close(fd)

    def update(self, working: bool) -> int:
        """Marks this runner working or idle; returns the threads it may use now."""
        if not working:
            if self._map[self.slot]:
                self._map[self.slot] = 0
            return self.cap
        self._map[self.slot] = 1  # counted by the others from now on, before its share is known
        board = self._map[:SLOTS]
        if board.count(0) == SLOTS - 1:  # alone: the common case, read without a list
            threads = self.cap
        else:
            busy = [i for i, b in enumerate(board) if b]
            threads = fair_share(self.cores, busy, self.slot, self.cap)
        self._map[self.slot] = min(threads, 255)
        return threads

    def close(self) -> None:
        self.update(False)
        self._map.close()
