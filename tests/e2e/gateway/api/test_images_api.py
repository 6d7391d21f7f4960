"""Images sent to a model that cannot see: a clear 400, never silently ignored."""

from __future__ import annotations

import base64

import httpx


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()


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
