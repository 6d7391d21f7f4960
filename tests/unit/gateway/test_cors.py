"""CORS origins and the DNS-rebinding host guard, as Ollama decides them."""

from __future__ import annotations

import pytest

from herd.gateway.http.cors import host_allowed, origin_allowed


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
