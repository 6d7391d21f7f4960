"""Optional API keys (HERD_API_KEYS): every route but `GET /` and `HEAD /` (the liveness check
Ollama's clients and load balancers make) needs `Authorization: Bearer KEY`, or the Anthropic
SDK's `x-api-key: KEY`. Keys are compared in constant time, every key every time, so the
answer's timing tells nothing about how close a guess was."""

from __future__ import annotations

import hmac

from aiohttp import web

from herd.gateway.errors import Unauthorized
from herd.protocol.config import Settings

_OPEN = frozenset({("GET", "/"), ("HEAD", "/")})


def presented_key(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    given_bytes = given.encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(given_bytes, key.encode())
    return matched and bool(given)


def auth_middleware(settings: Settings):
    keys = settings.api_keys

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if (request.method, request.path) not in _OPEN and not key_matches(
                presented_key(request), keys):
            raise Unauthorized()  # the error middleware picks the dialect's envelope
        return await handler(request)

    return middleware
