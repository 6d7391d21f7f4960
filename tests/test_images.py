"""Images sent to a model that cannot see: a clear 400, never silently ignored."""

from __future__ import annotations

import base64

import httpx
import pytest

from gateway.images import base64_error_offset

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


def test_generate_and_chat_refuse_images_for_a_text_model(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "what is this?", "images": [PNG], "stream": False})
    assert r.status_code == 400
    assert r.json()["error"] == "this model is missing data required for image input"
    r = httpx.post(server.url + "/api/chat", json={"model": "tiny", "stream": False, "messages": [
        {"role": "user", "content": "and this?", "images": [PNG]}]})
    assert r.status_code == 400
    assert r.json()["error"] == "this model is missing data required for image input"


def test_bad_base64_names_the_byte(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "x", "images": ["QU!D"]})
    assert r.status_code == 400
    assert r.json()["error"] == "illegal base64 data at input byte 2"
