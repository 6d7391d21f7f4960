"""One error type, mapped to Ollama's JSON error envelope in one middleware."""

from __future__ import annotations

import logging
import re

import msgspec
from aiohttp import web

from protocol.api import OPTION_TYPE_NAMES, ErrorBody
from protocol.openai import error_envelope

log = logging.getLogger("herd.gateway")


class HerdError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HerdError):
    status = 400


class NotFound(HerdError):
    status = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")


class ServerBusy(HerdError):
    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class RequestCanceled(HerdError):
    status = 499

    def __init__(self) -> None:
        super().__init__("request canceled")


class RunnerError(HerdError):
    status = 500


RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")

_OPTION_PATH = re.compile(r"at `\$\.options\.(\w+)")


def describe_decode_error(error: msgspec.MsgspecError) -> str:
    """msgspec's message names the JSON path; options get Ollama's own wording."""
    text = str(error)
    match = _OPTION_PATH.search(text)
    if match and match.group(1) in OPTION_TYPE_NAMES:
        name = match.group(1)
        return f'option "{name}" must be of type {OPTION_TYPE_NAMES[name]}'
    return text


def error_response(message: str, status: int, openai: bool = False) -> web.Response:
    body = error_envelope(message, status) if openai else ErrorBody(message)
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    openai = request.path.startswith("/v1/")  # OpenAI clients expect their own envelope
    try:
        return await handler(request)
    except HerdError as e:
        return error_response(str(e), e.status, openai)
    except msgspec.MsgspecError as e:
        return error_response(describe_decode_error(e), 400, openai)
    except web.HTTPNotFound:
        return web.Response(text="404 page not found", status=404)
    except web.HTTPMethodNotAllowed:
        return web.Response(text="405 method not allowed", status=405)
    except web.HTTPException:
        raise
    except Exception as e:  # never a bare 500 page: log it and answer in the envelope
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(f"internal error: {e}", 500, openai)
