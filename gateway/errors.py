"""One error type, mapped in one middleware to the error body each API's clients expect."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import msgspec
from aiohttp import web

from protocol import anthropic, openai
from protocol.api import OPTION_TYPE_NAMES, ErrorBody

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


def error_response(message: str, status: int, shape: ErrorShape = native_error) -> web.Response:
    return web.Response(body=msgspec.json.encode(shape(message, status)), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    shape = error_shape(request.path)
    try:
        return await handler(request)
    except HerdError as e:
        return error_response(str(e), e.status, shape)
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
