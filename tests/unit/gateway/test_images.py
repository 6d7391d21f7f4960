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
