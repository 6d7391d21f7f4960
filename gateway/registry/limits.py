"""What a registry may make the gateway do: how much it may send where a small answer is
expected, how long one transfer may take, and where it may send the gateway (and its token).

A registry is another party on the network: a manifest, a token or an error page of unbounded
size would sit in memory, a registry trickling one byte a minute would hold a pull for ever, and
a redirect or an upload `Location` could point the gateway, bearer token attached, at any host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from herd.gateway.errors import RegistryError

MAX_MANIFEST = 4 << 20  # distribution's own cap on a manifest it accepts
MAX_TOKEN = 64 << 10
MAX_ERROR_BODY = 512  # what an error message quotes of the registry's answer
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)

# A small request (manifest, token, HEAD, upload start, manifest PUT) is done in two minutes; a
# blob transfer gets two minutes plus its size at a floor rate, so a trickle cannot hold it.
SMALL_TOTAL = 120.0
MIN_RATE = 256 * 1024  # bytes per second


def small_timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=SMALL_TOTAL, sock_connect=30, sock_read=60)


def transfer_timeout(size: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=SMALL_TOTAL + max(0, size) / MIN_RATE, sock_connect=30,
                                 sock_read=60)


async def read_limited(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body, refused once it passes `limit` bytes (a Content-Length over it at once)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise RegistryError(f"{what}: the registry's answer is {declared} bytes, over the "
                            f"{limit} allowed")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > limit:
            raise RegistryError(f"{what}: the registry's answer is over the {limit} bytes "
                                f"allowed")
    return bytes(body)


async def read_snippet(response: aiohttp.ClientResponse) -> bytes:
    """At most MAX_ERROR_BODY bytes of an error answer; the rest is never read."""
    return await response.content.read(MAX_ERROR_BODY)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def same_host(url: str, base_url: str) -> bool:
    """The registry's own host (any port: token and upload services often run beside it)."""
    return host_of(url) == host_of(base_url) != ""


def check_hop(url: str, base_url: str, previous: str, *, foreign_ok: bool, what: str) -> None:
    """May the gateway go to `url` (a redirect or an upload location) from `previous`? Only to
    the registry's host, or, where `foreign_ok` (a blob the registry stores elsewhere), to a
    storage host it names; never from https down to http."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise RegistryError(f"{what}: the registry pointed to {url!r}")
    if urlsplit(previous).scheme.lower() == "https" and scheme != "https":
        raise RegistryError(f"{what}: the registry redirected from https to {url!r}")
    if not foreign_ok and not same_host(url, base_url):
        raise RegistryError(f"{what}: the registry pointed to another host: {host_of(url)!r}")
