"""CORS as Ollama allows it, and its DNS-rebinding guard for servers on a loopback address."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket

from aiohttp import web

from herd.protocol.config import Settings

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
DEFAULT_ORIGINS: tuple[str, ...] = tuple(
    f"{scheme}://{host}{port}" for scheme in ("http", "https") for host in _LOCAL_HOSTS
    for port in ("", ":*")) + ("app://*", "file://*", "tauri://*", "vscode-webview://*",
                               "vscode-file://*")
ALLOWED_HEADERS = ", ".join([
    "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
    *(f"x-stainless-{h}" for h in ("arch", "async", "custom-poll-interval", "helper-method",
                                   "lang", "os", "package-version", "poll-helper", "retry-count",
                                   "runtime", "runtime-version", "timeout"))])
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def origin_allowed(origin: str, extra: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in (*extra, *DEFAULT_ORIGINS))


def host_allowed(host_header: str) -> bool:
    """A browser tricked into calling 127.0.0.1 under another name sends that name as Host."""
    if not host_header:
        return True
    if host_header.startswith("["):  # [v6]:port
        host = host_header[1:].split("]", 1)[0]
    elif host_header.count(":") == 1:  # name:port or v4:port
        host = host_header.rsplit(":", 1)[0]
    else:  # a bare name or a bare v6 address
        host = host_header
    host = host.lower()
    if host in ("localhost", socket.gethostname().lower()) or host.endswith(
            (".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip.is_link_local


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cors_middleware(settings: Settings):
    guard_hosts = _is_loopback(settings.host)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if guard_hosts and not host_allowed(request.headers.get("Host", "")):
            return web.Response(status=403)
        if request.method == "OPTIONS":
            origin = request.headers.get("Origin", "")
            return web.Response(status=204 if origin_allowed(origin, settings.origins) else 403)
        return await handler(request)

    return middleware


def add_cors_headers(settings: Settings):
    """on_response_prepare: streaming responses are prepared inside their handlers, so the
    headers go on at prepare time rather than after the handler returns."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin, settings.origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Vary"] = "Origin"

    return on_prepare
