"""Images on /api/generate and /api/chat: checked as Ollama's decoder would, and refused with a
clear 400 for every model until Herd runs vision projectors: never dropped silently.

A body may carry 256 MiB of base64, so the check is linear and runs in C, one 1 MiB slice at a
time (a thread running it hands the GIL back to the event loop between slices), and big images
are checked in a thread."""

from __future__ import annotations

import asyncio
import re

from herd.gateway.errors import BadRequest
from herd.gateway.store.models import ModelEntry

_OUTSIDE = re.compile(r"[^A-Za-z0-9+/\r\n]")  # the first byte that is not data or a newline
_DATA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\r\n"
_NEWLINES = "\r\n"
_SLICE = 1 << 20  # ~1 ms of scanning: the longest the GIL is held at a time
THREAD_ABOVE = 1 << 20  # images bigger than this (in all) are checked off the event loop


def _first_outside(text: str) -> int:
    for start in range(0, len(text), _SLICE):
        piece = text[start:start + _SLICE]
        # bytes.translate deleting the alphabet runs at ~1 GB/s, 3x the regex: the regex only
        # looks for where the trouble is once a slice has some.
        if piece.isascii() and not piece.encode("ascii").translate(None, _DATA):
            continue
        match = _OUTSIDE.search(piece)
        if match is not None:
            return start + match.start()
    return -1


def _data_chars(text: str, end: int) -> int:
    return end - text.count("\n", 0, end) - text.count("\r", 0, end)


def base64_error_offset(text: str) -> int | None:
    """Where Go's padded standard base64 decoder (encoding/json's for []byte) gives up on
    `text`, or None if it decodes: clients see that offset in Ollama's error."""
    n = len(text)
    si = _first_outside(text)
    if si < 0:  # data and newlines only: whole quanta, or cut short at the end
        j = _data_chars(text, n) % 4
        return None if j == 0 else n - j
    j = _data_chars(text, si) % 4
    if text[si] != "=" or j < 2:
        return si
    si += 1
    if j == 2:  # "==" expected: the first one is consumed
        while si < n and text[si] in _NEWLINES:
            si += 1
        if si == n:
            return n
        if text[si] != "=":
            return si - 1
        si += 1
    while si < n and text[si] in _NEWLINES:
        si += 1
    return si if si < n else None  # anything after the padding is garbage


def _check_all(images: list[str]) -> None:
    for image in images:
        offset = base64_error_offset(image)
        if offset is not None:
            raise BadRequest(f"illegal base64 data at input byte {offset}")


async def check_images(images: list[str] | None, entry: ModelEntry) -> None:
    if not images:
        return
    if sum(len(image) for image in images) > THREAD_ABOVE:
        await asyncio.to_thread(_check_all, images)
    else:
        _check_all(images)
    if "vision" not in entry.capabilities:
        raise BadRequest("this model is missing data required for image input")
    # A vision model's images would reach a text-only runner and be dropped without a word.
    raise BadRequest("image input is not supported yet: Herd does not run vision models' "
                     "projectors, so images cannot be sent to this model")
