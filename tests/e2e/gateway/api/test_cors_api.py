"""CORS for browser clients and the DNS-rebinding guard, as Ollama does them."""

from __future__ import annotations

import httpx



def test_server_sends_cors_headers_on_plain_and_streamed_responses(server) -> None:
    origin = {"Origin": "http://localhost:3000"}
    r = httpx.get(server.url + "/api/tags", headers=origin)
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    with httpx.stream("POST", server.url + "/api/generate", headers=origin, timeout=60,
                      json={"model": "tiny", "prompt": "hi", "options": {"num_predict": 2}}) as s:
        assert s.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = httpx.get(server.url + "/api/tags", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_preflight(server) -> None:
    r = httpx.options(server.url + "/api/chat", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert "Content-Type" in r.headers["access-control-allow-headers"]
    r = httpx.options(server.url + "/api/chat", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_rebinding_host_is_forbidden_on_loopback(server) -> None:
    r = httpx.get(server.url + "/api/tags", headers={"Host": "attacker.example"})
    assert r.status_code == 403
