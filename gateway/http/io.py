"""Request decoding and response writing shared by the routes."""

from __future__ import annotations

import functools
import time
from typing import TypeVar

import msgspec
from aiohttp import web

from herd.gateway.errors import BadRequest, UnsupportedMediaType
from herd.gateway.http.nulls import decode_request

T = TypeVar("T")

_json = msgspec.json.Encoder()
NDJSON = "application/x-ndjson"


# What a JSON route reads. Ollama reads any body as JSON; Herd refuses the types a web page can
# send without a CORS preflight (text/plain, multipart/form-data) and anything else that is
# not JSON. Form-urlencoded stays: it is what `curl -d` sends, and a page sending it carries an
# Origin that the CORS middleware already refuses.
_JSON_TYPES = ("application/json", "application/x-ndjson", "application/x-www-form-urlencoded")


def check_json_content_type(request: web.Request) -> None:
    # The raw header: aiohttp reports a missing one as application/octet-stream.
    header = request.headers.get("Content-Type")
    if header is None:
        return
    media_type = header.split(";", 1)[0].strip().lower()
    if media_type in _JSON_TYPES or (media_type.startswith("application/")
                                     and media_type.endswith("+json")):
        return
    raise UnsupportedMediaType(f"unsupported content type {media_type!r}: send application/json")


async def decode_body(request: web.Request, type_: type[T]) -> T:
    check_json_content_type(request)
    body = await request.read()
    if not body.strip():
        raise BadRequest("missing request body")
    return decode_request(body, type_)


def utc_now() -> str:
    """RFC 3339 with nanoseconds in UTC, as Ollama's created_at."""
    seconds, frac = divmod(time.time_ns(), 1_000_000_000)
    return f"{_utc_second(seconds)}.{frac:09d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    # Every streamed chunk has a created_at, and a stream writes a hundred or more a second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(value), status=status,
                        content_type="application/json", charset="utf-8")


def ndjson_line(value: object) -> bytes:
    buf = bytearray()
    _json.encode_into(value, buf)
    buf += b"\n"
    return bytes(buf)


async def start_ndjson(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
    await response.prepare(request)
    return response


SSE = "text/event-stream"


def sse(value: object) -> bytes:
    """One server-sent event carrying a JSON value (OpenAI's streams)."""
    return b"data: " + _json.encode(value) + b"\n\n"
