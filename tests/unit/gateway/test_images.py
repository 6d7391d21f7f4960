"""Image payloads are checked like Go's base64 decoder, with its byte offsets."""

from __future__ import annotations

import base64

import pytest

from herd.gateway.pipeline.images import base64_error_offset

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()


@pytest.mark.parametrize("text, offset", [
    (PNG, None), ("", None), ("QUJD", None), ("QUI=", None), ("QQ==", None),
    ("QU!D", 2), ("QUJD data", 4), ("QUJDR", 4), ("QQ=A", 2), ("QUJ", 0), ("QQ=", 3),
    ("=QUJ", 0), ("QUI=QUJD", 4), ("QUJD\nQUJD", None)])
def test_base64_offsets(text: str, offset: int | None) -> None:
    assert base64_error_offset(text) == offset


def test_valid_base64_always_passes() -> None:
    for n in range(0, 40):
        assert base64_error_offset(base64.b64encode(bytes(range(n))).decode()) is None


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _reference_offset(text: str) -> int | None:
    """The byte-by-byte walk of Go's decodeQuantum (encoding/base64) the fast check replaced."""
    n, si = len(text), 0
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = text[si]
            si += 1
            if c in _ALPHABET:
                j += 1
                continue
            if c in "\r\n":
                continue
            if c != "=" or j < 2:
                return si - 1
            if j == 2:
                while si < n and text[si] in "\r\n":
                    si += 1
                if si == n:
                    return n
                if text[si] != "=":
                    return si - 1
                si += 1
            while si < n and text[si] in "\r\n":
                si += 1
            return si if si < n else None
    return None


def test_the_sliced_check_agrees_with_the_byte_walk(monkeypatch) -> None:
    import random

    from herd.gateway.pipeline import images

    monkeypatch.setattr(images, "_SLICE", 7)  # trouble on and across slice boundaries
    rng = random.Random(9)
    pieces = ["QUJD", "QQ==", "QUI=", "=", "\n", "\r\n", "!", "é", "A", "AB", " "]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert base64_error_offset(text) == _reference_offset(text), repr(text)
