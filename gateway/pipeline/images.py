"""Images on /api/generate and /api/chat: checked as Ollama's decoder would, and refused with a
clear 400 for every model until Herd runs vision projectors: never dropped silently."""

from __future__ import annotations

from herd.gateway.errors import BadRequest
from herd.gateway.store.models import ModelEntry

_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = "\r\n"


def base64_error_offset(text: str) -> int | None:
    """Where Go's padded standard base64 decoder (encoding/json's for []byte) gives up on
    `text`, or None if it decodes: clients see that offset in Ollama's error."""
    n, si = len(text), 0
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j  # a quantum cut short
            c = text[si]
            si += 1
            if c in _ALPHABET:
                j += 1
                continue
            if c in _NEWLINES:
                continue
            if c != "=" or j < 2:
                return si - 1
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
    return None


def check_images(images: list[str] | None, entry: ModelEntry) -> None:
    if not images:
        return
    for image in images:
        offset = base64_error_offset(image)
        if offset is not None:
            raise BadRequest(f"illegal base64 data at input byte {offset}")
    if "vision" not in entry.capabilities:
        raise BadRequest("this model is missing data required for image input")
    # A vision model's images would reach a text-only runner and be dropped without a word.
    raise BadRequest("image input is not supported yet: Herd does not run vision models' "
                     "projectors, so images cannot be sent to this model")
