"""A client of an OCI distribution (Docker Registry v2) registry, spoken the way Ollama does.

Manifests and blobs live under `<scheme>://<host>/v2/<namespace>/<model>/`. A `401` carrying a
`WWW-Authenticate: Bearer` challenge is answered once per request with an anonymous token from
the challenge's realm (Ollama's ed25519-signed token requests are not implemented: they matter
only for pushing to, or private models on, ollama.com). Every failure to talk to the registry
becomes a `RegistryError` with the request in its text, never a bare aiohttp exception.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
import msgspec
from msgspec import Struct
from yarl import URL

from herd.gateway.errors import BadRequest, ManifestNotFound, RegistryError, RegistryUnreachable
from herd.gateway.registry.limits import (MAX_MANIFEST, MAX_REDIRECTS, MAX_TOKEN, REDIRECTS,
                                          check_hop, read_limited, read_snippet, same_host,
                                          small_timeout, transfer_timeout)
from herd.gateway.store.manifest import MANIFEST_MEDIA_TYPE
from herd.protocol.names import ModelName
from herd.gateway.store.models import model_name_or_400

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# The errors that mean "the registry could not be talked to" (refused, DNS, TLS, timeouts).
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError)

Body = bytes | Callable[[], Any] | None  # a callable makes a fresh payload for the auth retry


class RegistryTarget(Struct, frozen=True):
    """A model name plus where its registry is: `<scheme>://<host>`."""

    name: ModelName
    base_url: str

    @property
    def repository(self) -> str:
        return f"{self.name.namespace}/{self.name.model}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/v2/{self.repository}/{path}"


def registry_target(text: str, insecure: bool) -> RegistryTarget:
    """The name's registry as Ollama finds it: https unless the name says `http://` (refused
    without `insecure`) or `insecure` is set (then always http)."""
    name = model_name_or_400(text)
    scheme = text.strip().split("://", 1)[0].lower() if "://" in text else "https"
    if scheme not in ("http", "https"):
        raise BadRequest("invalid model name")
    if scheme == "http" and not insecure:
        raise RegistryError("insecure protocol http")
    if insecure:
        scheme = "http"
    return RegistryTarget(name, f"{scheme}://{name.host}")


def describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out waiting for the registry"
    return str(error) or type(error).__name__


class _Token(Struct):
    token: str = ""
    access_token: str = ""  # the OAuth2 spelling some token services use


class RegistryClient:
    """One pull or push against one repository; keeps the bearer token between requests."""

    def __init__(self, session: aiohttp.ClientSession, target: RegistryTarget,
                 user_agent: str) -> None:
        self.session = session
        self.target = target
        self.user_agent = user_agent
        self._token = ""

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Body,
                    what: str, timeout: aiohttp.ClientTimeout,
                    foreign_ok: bool) -> aiohttp.ClientResponse:
        """One request, its redirects followed here (never by aiohttp) so that each hop is
        checked (limits.check_hop) and the token only ever goes to the registry's host."""
        base = self.target.base_url
        for _ in range(MAX_REDIRECTS + 1):
            sent = {"User-Agent": self.user_agent, **headers}
            if self._token and same_host(url, base):
                sent["Authorization"] = f"Bearer {self._token}"
            data = body() if callable(body) else body
            try:
                # encoded: an upload Location's `_state` query must go back byte for byte.
                response = await self.session.request(
                    method, URL(url, encoded=True), headers=sent, data=data, timeout=timeout,
                    allow_redirects=False)
            except NETWORK_ERRORS as e:
                raise RegistryUnreachable(f'{what}: {method} "{url}": {describe(e)}') from e
            location = response.headers.get("Location", "")
            if (response.status not in REDIRECTS or method not in ("GET", "HEAD")
                    or not location):
                return response
            response.release()
            next_url = urljoin(url, location)
            check_hop(next_url, base, url, foreign_ok=foreign_ok, what=what)
            url = next_url
        raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects")

    @asynccontextmanager
    async def request(self, method: str, url: str, *, what: str,
                      headers: dict[str, str] | None = None, body: Body = None,
                      timeout: aiohttp.ClientTimeout | None = None,
                      foreign_ok: bool = False) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request answered once more with a token when the registry challenges it.
        `foreign_ok`: redirects may lead to a storage host the registry names (blobs)."""
        headers = headers or {}
        timeout = timeout or small_timeout()
        response = await self._send(method, url, headers, body, what, timeout, foreign_ok)
        try:
            challenge = response.headers.get("WWW-Authenticate", "")
            if (response.status == 401 and challenge.lower().startswith("bearer ")
                    and same_host(str(response.url), self.target.base_url)):
                response.release()
                self._token = await self._fetch_token(challenge, what)
                response = await self._send(method, url, headers, body, what, timeout,
                                            foreign_ok)
            yield response
        finally:
            response.release()

    async def _fetch_token(self, challenge: str, what: str) -> str:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        # As Ollama: a token is only asked of the registry's own host (any port: token services
        # usually run beside the registry).
        if not same_host(realm, self.target.base_url):
            raise RegistryError(f"unauthorized: token endpoint {realm!r} does not match the "
                                f"registry host {self.target.name.host!r}")
        query = {key: params[key] for key in ("service", "scope") if key in params}
        query["ts"] = str(int(time.time()))
        query["nonce"] = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        try:
            async with self.session.get(url, headers={"User-Agent": self.user_agent},
                                        timeout=small_timeout(),
                                        allow_redirects=False) as reply:
                if reply.status != 200:
                    raise RegistryError(f"unauthorized: token request answered {reply.status}: "
                                        f"{_snippet(await read_snippet(reply))}")
                body = await read_limited(reply, MAX_TOKEN, "unauthorized: token")
        except NETWORK_ERRORS as e:
            raise RegistryUnreachable(f'{what}: GET "{realm}": {describe(e)}') from e
        try:
            token = msgspec.json.decode(body, type=_Token)
        except msgspec.DecodeError:
            raise RegistryError("unauthorized: the token service sent no token") from None
        return token.token or token.access_token

    async def error(self, response: aiohttp.ClientResponse, what: str) -> RegistryError:
        """The error for a response that is not the expected success."""
        if response.status in (401, 403):
            return RegistryError("unauthorized: access denied")
        try:
            body = await read_snippet(response)
        except NETWORK_ERRORS:
            body = b""
        return RegistryError(f"{what}: {response.status}: {_snippet(body)}")

    # -- the calls pull and push make --------------------------------------------------------

    async def manifest(self) -> bytes:
        """The manifest's raw bytes: they are stored as they are, so digests match."""
        what = "pull model manifest"
        url = self.target.url(f"manifests/{self.target.name.tag}")
        async with self.request("GET", url, what=what,
                                headers={"Accept": MANIFEST_MEDIA_TYPE}) as response:
            if response.status == 404:
                raise ManifestNotFound()
            if response.status != 200:
                raise await self.error(response, what)
            try:
                return await read_limited(response, MAX_MANIFEST, what)
            except NETWORK_ERRORS as e:
                raise RegistryUnreachable(f'{what}: GET "{url}": {describe(e)}') from e

    def blob(self, digest: str, offset: int,
             size: int) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """GET a blob from `offset` on, within a total time for its size; redirects may lead to
        the storage host the registry names (a CDN), where no token goes."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.request("GET", self.target.url(f"blobs/{digest}"), headers=headers,
                            what=f"pull blob {digest}", foreign_ok=True,
                            timeout=transfer_timeout(size - offset))

    async def has_blob(self, digest: str) -> bool:
        what = f"push blob {digest}"
        async with self.request("HEAD", self.target.url(f"blobs/{digest}"), what=what) as response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise await self.error(response, what)

    async def start_upload(self, digest: str) -> str:
        what = f"push blob {digest}"
        url = self.target.url("blobs/uploads/")
        async with self.request("POST", url, what=what, body=b"") as response:
            if response.status != 202:
                raise await self.error(response, what)
            return next_location(response, url, self.target.base_url)

    async def put_manifest(self, raw: bytes, media_type: str) -> None:
        what = "push model manifest"
        url = self.target.url(f"manifests/{self.target.name.tag}")
        async with self.request("PUT", url, what=what, body=raw,
                                headers={"Content-Type": media_type}) as response:
            if response.status not in (200, 201, 202):
                raise await self.error(response, what)


def next_location(response: aiohttp.ClientResponse, url: str, base_url: str) -> str:
    """Where an upload goes on: Docker-Upload-Location, else Location, relative to `url`; only
    ever on the registry's own host (the token goes there)."""
    location = response.headers.get("Docker-Upload-Location") or response.headers.get("Location")
    if not location:
        raise RegistryError(f"the registry gave no upload location for {url}")
    target = urljoin(url, location)
    check_hop(target, base_url, url, foreign_ok=False, what="push upload location")
    return target


def with_query(url: str, **params: str) -> str:
    """Adds parameters without re-encoding the ones already there (an upload's `_state`)."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _snippet(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()
