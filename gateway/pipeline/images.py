"""Images on /api/generate and /api/chat: checked as Ollama's decoder would, refused with a
400 for models that cannot see, and sniffed here so that a file that is not an image, or one too
large, is a 400 naming it before any runner is involved (the runner decodes them fully).

A body may carry 256 MiB of base64, so the check is linear and runs in C, one 1 MiB slice at a
time (a thread running it hands the GIL back to the event loop between slices), and big images
are checked and decoded in a thread."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re

from herd.gateway.errors import BadRequest
from herd.gateway.store.models import ModelEntry
from herd.worker.engine.vision.imagefile import DEFAULT_MAX_PIXELS, image_format

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


def _checked(images: list[str], first: int) -> list[bytes]:
    _check_all(images)
    decoded = [base64.b64decode(image) for image in images]
    for n, data in enumerate(decoded, first):
        check_image_file(data, f"image {n}")
    return decoded


async def check_images(images: list[str] | None, entry: ModelEntry,
                       first: int = 1) -> list[bytes]:
    """One message's (or a prompt's) images, checked and decoded; `first` numbers them across
    the request, as the 400s name them."""
    if not images:
        return []
    big = sum(len(image) for image in images) > THREAD_ABOVE
    if "vision" not in entry.capabilities:
        # Ollama's order: the base64 is checked before the model's ability to see.
        await asyncio.to_thread(_check_all, images) if big else _check_all(images)
        raise BadRequest("this model is missing data required for image input")
    return await asyncio.to_thread(_checked, images, first) if big else _checked(images, first)


def check_image_file(data: bytes, name: str) -> None:
    """The signature and the header's size; the pixels are the runner's to decode."""
    fmt = image_format(data)
    if fmt is None:
        raise BadRequest(f"{name} is not a PNG, JPEG or WebP image")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
            Image.DecompressionBombError) as e:
        raise BadRequest(f"{name}: failed to read the {fmt.upper()} image ({e})") from None
    if width * height > DEFAULT_MAX_PIXELS:
        raise BadRequest(f"{name} is {width}x{height}, more than {DEFAULT_MAX_PIXELS} pixels")


_IMAGE_TYPES = ("jpeg", "jpg", "png", "webp")


def image_from_url(url: str) -> str:
    """A data: URI's base64 payload (Ollama's decodeImageURL); web URLs are not fetched."""
    if url.startswith(("http://", "https://")):
        raise BadRequest("image URLs are not currently supported, please use base64 encoded "
                         "data instead")
    prefixes = ["data:;base64,"] + [f"data:image/{t};base64," for t in _IMAGE_TYPES]
    prefix = next((p for p in prefixes if url.startswith(p)), None)
    if prefix is None:
        raise BadRequest("invalid image input")
    data = url[len(prefix):]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("invalid image input") from None
    return data
