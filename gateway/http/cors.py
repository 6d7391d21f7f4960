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


def same_origin(origin: str, host_header: str) -> bool:
    """gin-contrib/cors treats `Origin: http://<Host>` (a page the server itself served, or
    fetch from it) as no CORS request at all."""
    return bool(host_header) and origin in (f"http://{host_header}", f"https://{host_header}")


def cors_middleware(settings: Settings):
    guard_hosts = _is_loopback(settings.host)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if guard_hosts and not host_allowed(host):
            return web.Response(status=403)
        origin = request.headers.get("Origin") or None  # empty is none, as in gin
        # Every method, not only preflights: a page may POST text/plain or a form without a
        # preflight, and the browser sends its Origin; Ollama answers those 403 too.
        if origin is not None and not same_origin(origin, host) and not origin_allowed(
                origin, settings.origins):
            return web.Response(status=403)
        if request.method == "OPTIONS":  # no Origin: not a preflight any browser sends
            return web.Response(status=204 if origin is not None else 403)
        return await handler(request)

    return middleware


def add_cors_headers(settings: Settings):
    """on_response_prepare: streaming responses are prepared inside their handlers, so the
    headers go on at prepare time rather than after the handler returns."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin") or None  # empty is none, as in gin
        if origin and origin_allowed(origin, settings.origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Vary"] = "Origin"

    return on_prepare
