"""CORS for browser clients and the DNS-rebinding guard, as Ollama does them."""

from __future__ import annotations

import httpx
import pytest

from gateway.cors import host_allowed, origin_allowed


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost", True), ("http://localhost:3000", True), ("https://127.0.0.1:8443", True),
    ("app://obsidian.md", True), ("vscode-webview://abc", True), ("https://evil.example", False),
    ("http://localhost.evil.example", False),
])
def test_default_origins(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, ()) is allowed


def test_extra_origins_with_wildcards() -> None:
    assert origin_allowed("https://chat.example.com", ("https://*.example.com",))
    assert not origin_allowed("https://example.org", ("https://*.example.com",))


@pytest.mark.parametrize("host,allowed", [
    ("", True), ("localhost:11434", True), ("127.0.0.1:11434", True), ("[::1]:11434", True),
    ("10.0.0.5", True), ("myhost.local", True), ("svc.internal:80", True),
    ("evil.example.com", False), ("8.8.8.8:11434", False),
])
def test_host_guard(host: str, allowed: bool) -> None:
    assert host_allowed(host) is allowed


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
