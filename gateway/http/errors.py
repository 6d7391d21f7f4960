"""The one error middleware: every error a handler raises becomes the error body its API's
clients expect (Ollama's, OpenAI's or Anthropic's envelope), never a bare 500 page."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import msgspec
from aiohttp import web

from herd.gateway.errors import HerdError
from herd.protocol import anthropic, openai
from herd.protocol.api import OPTION_TYPE_NAMES, ErrorBody

log = logging.getLogger("herd.gateway")

_OPTION_PATH = re.compile(r"at `\$\.options\.(\w+)")


def describe_decode_error(error: msgspec.MsgspecError) -> str:
    """msgspec's message names the JSON path; options get Ollama's own wording."""
    text = str(error)
    match = _OPTION_PATH.search(text)
    if match and match.group(1) in OPTION_TYPE_NAMES:
        name = match.group(1)
        return f'option "{name}" must be of type {OPTION_TYPE_NAMES[name]}'
    return text


ErrorShape = Callable[[str, int], object]


def native_error(message: str, status: int) -> ErrorBody:
    return ErrorBody(message)


def error_shape(path: str) -> ErrorShape:
    """Each API's clients expect their own error body: Anthropic's SDK on /v1/messages,
    OpenAI's on the rest of /v1, Ollama's everywhere else."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic.error_envelope
    if path.startswith("/v1/"):
        return openai.error_envelope
    return native_error


def error_response(message: str, status: int, shape: ErrorShape = native_error,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(shape(message, status)), status=status,
                        content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    shape = error_shape(request.path)
    try:
        return await handler(request)
    except HerdError as e:
        return error_response(str(e), e.status, shape, e.headers)
    except msgspec.MsgspecError as e:
        return error_response(describe_decode_error(e), 400, shape)
    except web.HTTPNotFound:
        return web.Response(text="404 page not found", status=404)
    except web.HTTPMethodNotAllowed:
        return web.Response(text="405 method not allowed", status=405)
    except web.HTTPException:
        raise
    except Exception as e:  # never a bare 500 page: log it and answer in the envelope
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(f"internal error: {e}", 500, shape)
