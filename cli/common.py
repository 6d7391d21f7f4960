"""What every `herd` client command shares and that costs no import: its error type, where the
server is (OLLAMA_HOST as `ollama` reads it) and sizes as `ollama` prints them.

Kept free of httpx and rich on purpose: herd.cli.main imports this module for every command,
`herd worker` included. The HTTP client is herd.cli.client, the progress bars herd.cli.progress.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORT = 11434


class CliError(Exception):
    """Printed as `Error: <message>` with exit status 1, like the ollama CLI. `status` is the
    HTTP status of the answer that carried the error, when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(value: str) -> str:
    """OLLAMA_HOST as a URL to connect to: [scheme://]host[:port][/path], 0.0.0.0 → 127.0.0.1."""
    value = value.strip().strip("\"'").strip()
    scheme, port = "http", DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        scheme = scheme.lower()
        port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    hostport, _, path = value.partition("/")
    host: str | None
    try:
        host = str(ipaddress.ip_address(hostport))  # a bare IPv6 address has no port
    except ValueError:
        parts = urlsplit(f"//{hostport}")
        host = parts.hostname
        try:
            port = parts.port or port
        except ValueError:
            raise CliError(f"invalid OLLAMA_HOST {value!r}") from None
    # A server listening on every interface is reached through loopback.
    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    path = path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def human_bytes(size: int) -> str:
    """Decimal units; one decimal below 10 unless whole: "253 MB", "1.2 GB", "2 GB"."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"
