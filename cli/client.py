"""HerdClient: the one way the `herd` commands reach a server, as Ollama's cmd/ goes through
api/client.go. Typed methods take and return herd.protocol.api Structs; the URLs, the JSON, the
streams and the mapping of failures to CliError live here and nowhere else.

Like api/client.go's `stream`, every line of a streamed answer is first read for an `error`
key (a failure after the 200 was sent), and a non-2xx answer raises with the server's message.
Transport failures (no server, a connection that breaks) become CliError too, so a command only
ever sees CliError, and `herd.cli.main` prints it as `Error: ...`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import httpx
import msgspec

from herd.cli.common import CliError, base_url
from herd.protocol.api import (
    ChatChunk,
    ChatRequest,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    GenerateChunk,
    GenerateRequest,
    PsResponse,
    ShowRequest,
    ShowResponse,
    StatusChunk,
    TagsResponse,
    TransferRequest,
    VersionResponse,
)

# No read timeout: a create that quantizes a large model can go minutes between lines.
_TIMEOUT = httpx.Timeout(None, connect=10.0)
_JSON = {"Content-Type": "application/json"}
_CHUNK = 1 << 20
Line = TypeVar("Line", StatusChunk, GenerateChunk, ChatChunk)
Answer = TypeVar("Answer", bound=msgspec.Struct)


class _ErrorLine(msgspec.Struct):
    """The `error` of an error body or of a stream line; every other key is skipped."""

    error: str | None = None


def api_key(environ: Mapping[str, str]) -> str | None:
    """The key sent as `Authorization: Bearer`: HERD_API_KEY, else OLLAMA_API_KEY."""
    return environ.get("HERD_API_KEY") or environ.get("OLLAMA_API_KEY") or None


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        message = msgspec.json.decode(response.content, type=_ErrorLine).error
    except msgspec.DecodeError:  # not JSON (a proxy's page): the body is the message
        message = None
    raise CliError(message or response.text.strip() or f"HTTP {response.status_code}",
                   response.status_code)


class HerdClient:
    """An HTTP connection to the server at OLLAMA_HOST; use it as a context manager."""

    def __init__(self, host: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.url = base_url(environ.get("OLLAMA_HOST", "") if host is None else host)
        key = api_key(environ)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, timeout=_TIMEOUT, headers=headers)

    def __enter__(self) -> HerdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @contextmanager
    def _transport(self) -> Iterator[None]:
        """httpx's failures as the CLI words them."""
        try:
            yield
        except httpx.ConnectError:
            raise CliError(f"could not connect to a server at {self.url}, is it running?") \
                from None
        except httpx.HTTPError as e:
            raise CliError(str(e) or type(e).__name__) from None
        except msgspec.DecodeError as e:  # also ValidationError: an answer not of the API
            raise CliError(f"unexpected answer from the server: {e}") from None

    def _call(self, method: str, path: str, body: msgspec.Struct | None = None) -> bytes:
        """One request; returns its whole answer."""
        content = msgspec.json.encode(body) if body is not None else None
        with self._transport():
            response = self._http.request(method, path, content=content,
                                          headers=_JSON if content is not None else None)
            _raise_for_status(response)
            return response.content

    def _answer(self, method: str, path: str, body: msgspec.Struct | None,
                answer: type[Answer]) -> Answer:
        raw = self._call(method, path, body)
        with self._transport():
            return msgspec.json.decode(raw, type=answer)

    def _stream(self, path: str, body: msgspec.Struct, line_type: type[Line],
                on_line: Callable[[Line], None] | None) -> Line | None:
        """POSTs `body` and hands each decoded line to `on_line`; returns the last line.
        Leaving early (an exception, Ctrl-C) closes the connection, which the server takes
        as a cancel."""
        last: Line | None = None
        with self._transport(), self._http.stream(
                "POST", path, content=msgspec.json.encode(body), headers=_JSON) as response:
            _raise_for_status(response)
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                error = msgspec.json.decode(raw, type=_ErrorLine).error
                if error is not None:
                    raise CliError(error)
                last = msgspec.json.decode(raw, type=line_type)
                if on_line is not None:
                    on_line(last)
        return last

    def _status_stream(self, path: str, body: msgspec.Struct,
                       on_status: Callable[[StatusChunk], None] | None, cut_off: str) -> None:
        """A create/pull/push: a stream that ends without "success" may have left nothing
        behind, so it fails with `cut_off`."""
        last = self._stream(path, body, StatusChunk, on_status)
        if last is None or last.status != "success":
            raise CliError(cut_off)

    def version(self) -> str:
        return self._answer("GET", "/api/version", None, VersionResponse).version

    def list(self) -> TagsResponse:
        return self._answer("GET", "/api/tags", None, TagsResponse)

    def ps(self) -> PsResponse:
        return self._answer("GET", "/api/ps", None, PsResponse)

    def show(self, model: str) -> ShowResponse:
        return self._answer("POST", "/api/show", ShowRequest(model=model), ShowResponse)

    def copy(self, source: str, destination: str) -> None:
        self._call("POST", "/api/copy", CopyRequest(source=source, destination=destination))

    def delete(self, model: str) -> None:
        self._call("DELETE", "/api/delete", DeleteRequest(model=model))

    def create(self, request: CreateRequest,
               on_status: Callable[[StatusChunk], None] | None = None) -> None:
        self._status_stream("/api/create", request, on_status,
                            "the server closed the connection before the create finished")

    def pull(self, request: TransferRequest,
             on_status: Callable[[StatusChunk], None] | None = None) -> None:
        self._status_stream("/api/pull", request, on_status,
                            "the server closed the connection before the transfer finished")

    def push(self, request: TransferRequest,
             on_status: Callable[[StatusChunk], None] | None = None) -> None:
        self._status_stream("/api/push", request, on_status,
                            "the server closed the connection before the transfer finished")

    def generate(self, request: GenerateRequest,
                 on_chunk: Callable[[GenerateChunk], None] | None = None) -> GenerateChunk | None:
        """Streams /api/generate; returns the last chunk (the done one unless cut off)."""
        return self._stream("/api/generate", request, GenerateChunk, on_chunk)

    def chat(self, request: ChatRequest,
             on_chunk: Callable[[ChatChunk], None] | None = None) -> ChatChunk | None:
        """Streams /api/chat; returns the last chunk (the done one unless cut off)."""
        return self._stream("/api/chat", request, ChatChunk, on_chunk)

    def has_blob(self, digest: str) -> bool:
        with self._transport():
            response = self._http.head(f"/api/blobs/{digest}")
        if response.status_code == 404:
            return False
        _raise_for_status(response)
        return True

    def create_blob(self, path: pathlib.Path, digest: str,
                    on_progress: Callable[[int, int], None] | None = None) -> None:
        """Uploads the file as the blob `digest` (the server checks it), reporting
        (bytes sent, size) as it goes."""
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent, size)
                    yield chunk

        if on_progress is not None:
            on_progress(0, size)
        with self._transport():
            _raise_for_status(self._http.post(f"/api/blobs/{digest}", content=body(),
                                              headers={"Content-Length": str(size)}))
