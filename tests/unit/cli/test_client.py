"""herd.cli.client.HerdClient against a tiny aiohttp app on a free port: typed answers, stream
decoding, and how a failure (an error body, an error line in a stream, a cut-off stream, no
server) becomes a CliError with the server's message.

The reference is Ollama's api/client.go: `checkError` (a non-2xx answer's `error` field, else
the body, is the message) and `stream` (each line is first read for an `error` key; an error
line ends the stream as an error even after a 200)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from support.herd_server import free_port

from herd.cli.client import HerdClient
from herd.cli.common import CliError
from herd.protocol.api import (ChatChunk, ChatRequest, CreateRequest, GenerateRequest, Message,
                               StatusChunk, TransferRequest)


@dataclass
class Seen:
    """What the fake server received, newest last."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def last(self) -> tuple[str, str, dict[str, str], bytes]:
        return self.requests[-1]


def _lines(*items: object, blank: bool = False) -> bytes:
    text = "".join(json.dumps(item) + "\n" + ("\n" if blank else "") for item in items)
    return text.encode()


def _chat_line(content: str, done: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "created_at": "2024-01-01T00:00:00Z", "done": done,
            "message": {"role": "assistant", "content": content, **extra.pop("message", {})},
            **extra}


def _app(seen: Seen) -> web.Application:
    blobs: dict[str, bytes] = {"sha256:" + "a" * 64: b"there"}

    async def record(request: web.Request) -> None:
        seen.requests.append((request.method, request.path, dict(request.headers),
                              await request.read()))

    async def handler(request: web.Request) -> web.StreamResponse:
        await record(request)
        path, body = request.path, seen.last()[3]
        if path == "/api/version":
            return web.json_response({"version": "0.0.1-test"})
        if path == "/api/tags":
            return web.json_response({"models": [{
                "name": "tiny:latest", "model": "tiny:latest", "modified_at": "2024-01-01T00:00:00Z",
                "size": 12, "digest": "sha256:" + "b" * 64, "details": {"family": "llama"}}]})
        if path == "/api/ps":
            return web.json_response({"models": []})
        if path == "/api/show":
            model = json.loads(body)["model"]
            if model == "html":  # a proxy in front of the server, answering with a page
                return web.Response(status=502, text="<html>bad gateway</html>\n")
            if model == "empty":
                return web.Response(status=503)
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        if path in ("/api/copy", "/api/delete"):
            return web.Response()
        if path.startswith("/api/blobs/"):
            digest = path.removeprefix("/api/blobs/")
            if request.method == "HEAD":
                if digest == "sha256:broken":
                    return web.Response(status=500)
                return web.Response(status=200 if digest in blobs else 404)
            blobs[digest] = body
            return web.Response(status=201)
        streams = {
            "/api/chat": _lines(_chat_line("Hel", message={"thinking": "hmm"}), _chat_line("lo"),
                                _chat_line("", done=True, eval_count=2, done_reason="stop"),
                                blank=True),
            "/api/generate": _lines({"model": "m", "created_at": "t", "response": "",
                                     "done": True, "done_reason": "unload"}),
            # An error after the 200: the status line came first.
            "/api/pull": _lines({"status": "pulling manifest"},
                                {"error": "pull model manifest: file does not exist"}),
            # Cut off: the connection ends before "success".
            "/api/push": _lines({"status": "pushing", "digest": "sha256:x", "total": 10,
                                 "completed": 5}),
            "/api/create": _lines({"status": "parsing"}, {"status": "success"}),
        }
        if path == "/api/generate" and json.loads(body)["model"] == "garbled":
            streams[path] = b'{"model": "m", "done": "maybe"}\n'
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(streams[path])
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Seen]]:
    """The fake server on its own event loop in a thread, as the sync client expects."""
    seen, port, loop = Seen(), free_port(), asyncio.new_event_loop()
    runner = web.AppRunner(_app(seen))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{port}", seen
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@pytest.fixture
def client(server: tuple[str, Seen]) -> Iterator[HerdClient]:
    with HerdClient(host=server[0], environ={}) as c:
        yield c


def test_typed_answers_and_request_bodies(server: tuple[str, Seen], client: HerdClient) -> None:
    seen = server[1]
    assert client.version() == "0.0.1-test"
    tags = client.list()
    assert [m.name for m in tags.models] == ["tiny:latest"]
    assert tags.models[0].details.family == "llama"
    assert client.ps().models == []
    client.copy("a", "b")
    assert seen.last()[:2] == ("POST", "/api/copy")
    assert json.loads(seen.last()[3]) == {"source": "a", "destination": "b"}
    assert seen.last()[2]["Content-Type"] == "application/json"
    client.delete("a")
    assert seen.last()[:2] == ("DELETE", "/api/delete")
    assert json.loads(seen.last()[3])["model"] == "a"


def test_a_non_2xx_answer_raises_the_servers_message_and_status(client: HerdClient) -> None:
    with pytest.raises(CliError) as error:
        client.show("ghost")
    assert str(error.value) == "model 'ghost' not found"
    assert error.value.status == 404
    # Not JSON: the body is the message (api/client.go's checkError); no body: the status.
    with pytest.raises(CliError, match=r"^<html>bad gateway</html>$") as error:
        client.show("html")
    assert error.value.status == 502
    with pytest.raises(CliError, match=r"^HTTP 503$"):
        client.show("empty")


def test_chat_streams_each_line_to_the_callback_and_returns_the_last(
        client: HerdClient) -> None:
    chunks: list[ChatChunk] = []
    final = client.chat(ChatRequest(model="m", messages=[Message(role="user", content="hi")]),
                        chunks.append)
    assert [c.message.content for c in chunks] == ["Hel", "lo", ""]  # blank lines skipped
    assert chunks[0].message.thinking == "hmm"
    assert final is chunks[-1] and final.done and final.eval_count == 2
    assert final.done_reason == "stop"


def test_generate_without_a_callback_returns_the_load_answer(
        server: tuple[str, Seen], client: HerdClient) -> None:
    final = client.generate(GenerateRequest(model="m", keep_alive=0))
    assert final is not None and final.done_reason == "unload"
    assert json.loads(server[1].last()[3]) == {"model": "m", "keep_alive": 0}


def test_an_error_line_in_a_stream_raises_after_the_lines_before_it(client: HerdClient) -> None:
    statuses: list[StatusChunk] = []
    with pytest.raises(CliError, match=r"^pull model manifest: file does not exist$"):
        client.pull(TransferRequest(model="ghost"), statuses.append)
    assert [s.status for s in statuses] == ["pulling manifest"]


def test_a_status_stream_must_end_with_success(client: HerdClient) -> None:
    statuses: list[StatusChunk] = []
    with pytest.raises(CliError, match="closed the connection before the transfer finished"):
        client.push(TransferRequest(model="m"), statuses.append)
    assert (statuses[0].total, statuses[0].completed) == (10, 5)
    created: list[str] = []
    client.create(CreateRequest(model="m", from_="tiny"), lambda s: created.append(s.status))
    assert created == ["parsing", "success"]


def test_blobs_are_checked_then_uploaded_with_progress(
        server: tuple[str, Seen], client: HerdClient, tmp_path: pathlib.Path) -> None:
    assert client.has_blob("sha256:" + "a" * 64)
    assert not client.has_blob("sha256:" + "c" * 64)
    with pytest.raises(CliError) as error:
        client.has_blob("sha256:broken")
    assert error.value.status == 500
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"x" * 3000)
    progress: list[tuple[int, int]] = []
    client.create_blob(path, "sha256:" + "c" * 64, lambda sent, size: progress.append((sent, size)))
    assert progress[0] == (0, 3000) and progress[-1] == (3000, 3000)
    method, where, headers, body = server[1].last()
    assert (method, where, body) == ("POST", "/api/blobs/sha256:" + "c" * 64, b"x" * 3000)
    assert headers["Content-Length"] == "3000"
    assert client.has_blob("sha256:" + "c" * 64)


@pytest.mark.parametrize(("environ", "sent"), [
    ({}, None),
    ({"OLLAMA_API_KEY": "ollama-key"}, "Bearer ollama-key"),
    ({"HERD_API_KEY": "herd-key"}, "Bearer herd-key"),
    ({"HERD_API_KEY": "herd-key", "OLLAMA_API_KEY": "ollama-key"}, "Bearer herd-key"),
])
def test_an_api_key_is_sent_as_a_bearer_token(
        server: tuple[str, Seen], environ: dict[str, str], sent: str | None) -> None:
    with HerdClient(environ={"OLLAMA_HOST": server[0], **environ}) as client:
        client.version()
    assert server[1].last()[2].get("Authorization") == sent


def test_no_server_is_a_cli_error_naming_the_url() -> None:
    port = free_port()
    with HerdClient(host=f"127.0.0.1:{port}", environ={}) as client:
        with pytest.raises(CliError, match=rf"^could not connect to a server at "
                                           rf"http://127\.0\.0\.1:{port}, is it running\?$"):
            client.list()


def test_a_line_not_of_the_api_is_a_cli_error(client: HerdClient) -> None:
    with pytest.raises(CliError, match="^unexpected answer from the server: "):
        client.generate(GenerateRequest(model="garbled"))
