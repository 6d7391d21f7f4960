"""The gateway's connection to one runner: submit, abort, and fan step outputs out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from herd.gateway.errors import RunnerError
from herd.gateway.cluster.request_stream import RequestStream
from herd.protocol.curve import ClientKeys, is_tcp
from herd.protocol.wire import (Abort, Embed, Embeddings, EngineStep, Ping, Rerank, Submit,
                                Tokenize, Tokens, WireCodec)

log = logging.getLogger("herd.gateway")


PING_EVERY_S = 5.0


class RunnerClient:
    """`stall_s`: a runner with requests in flight that answers nothing (no step, no Pong) for
    this long is hung; `on_stall` is told, and its requests fail."""

    def __init__(self, zctx: zmq.asyncio.Context, endpoint: str, stall_s: float = 120.0,
                 on_stall: Callable[[RunnerClient], None] = lambda client: None,
                 keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.stall_s = stall_s
        self.on_stall = on_stall
        self.last_heard = time.monotonic()
        self.codec = WireCodec()
        # A plain socket read from the event loop's own selector (_on_readable), not
        # zmq.asyncio's: that one costs a future, a poller round and a zmq.Again exception per
        # message, which at one stream was ~40 % of the gateway's CPU for every token.
        self.sock = zmq.Socket(zctx, zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never drop a step's text (see worker/runner.py)
        # Sends never wait: the queue to a runner is bounded by the requests admitted
        # (OLLAMA_MAX_QUEUE), and a DEALER that connected always has its pipe.
        self.sock.setsockopt(zmq.SNDHWM, 0)
        # A dropped TCP link to a live runner must come back (the default reconnect, backing off
        # to 2 s); a runner that died is reported by its node, and this client is closed then.
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if keys is not None and is_tcp(endpoint):
            keys.apply(self.sock)
        self.streams: dict[int, RequestStream] = {}
        # Request/reply calls (embed, rerank, tokenize) waiting for their one answer, by req_id.
        self.calls: dict[int, asyncio.Future[Embeddings | Tokens]] = {}
        self.sock.connect(endpoint)
        self._loop = asyncio.get_running_loop()
        self._fd = self.sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._on_readable)
        self._closed = False
        self._watchdog = asyncio.create_task(self._watch())

    def _send(self, message: Submit | Abort | Ping | Embed | Rerank | Tokenize) -> None:
        self.sock.send_multipart(self.codec.encode(message), zmq.NOBLOCK)
        # ZeroMQ's descriptor is edge-triggered and any operation on the socket may consume
        # the edge of a message that has arrived meanwhile: look again once the loop is free.
        self._loop.call_soon(self._on_readable)

    async def submit(self, submit: Submit) -> RequestStream:
        stream = RequestStream(submit.req_id)
        self.streams[submit.req_id] = stream
        self._send(submit)
        return stream

    async def _call(self, request: Embed | Rerank | Tokenize) -> Embeddings | Tokens:
        future: asyncio.Future[Embeddings | Tokens] = self._loop.create_future()
        self.calls[request.req_id] = future
        try:
            self._send(request)
            return await future
        finally:
            self.calls.pop(request.req_id, None)

    async def embed(self, request: Embed) -> Embeddings:
        return await self._call(request)  # type: ignore[return-value]

    async def rerank(self, request: Rerank) -> Embeddings:
        return await self._call(request)  # type: ignore[return-value]

    async def tokenize(self, request: Tokenize) -> Tokens:
        return await self._call(request)  # type: ignore[return-value]

    async def abort(self, req_id: int) -> None:
        if self.streams.pop(req_id, None) is not None and not self._closed:
            self._send(Abort(req_id))

    def fail_all(self, message: str) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.fail(message)
        for future in self.calls.values():
            if not future.done():
                future.set_exception(RunnerError(message))

    async def close(self) -> None:
        self._watchdog.cancel()
        try:
            await self._watchdog
        except asyncio.CancelledError:
            pass
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self.sock.close()

    async def _watch(self) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(PING_EVERY_S)
            if not self.streams and not self.calls:
                self.last_heard = time.monotonic()  # idle: silence is expected
                continue
            if time.monotonic() - self.last_heard > self.stall_s:
                log.error("runner %s answered nothing for %.0f s with requests in flight: "
                          "treating it as dead", self.endpoint, self.stall_s)
                self.on_stall(self)
                return
            nonce += 1
            self._send(Ping(nonce))

    def _on_readable(self) -> None:
        """Everything queued, then back to the loop; EVENTS says when that is, without the
        exception a NOBLOCK receive on an empty socket raises."""
        sock = self.sock
        try:
            while not self._closed and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = sock.recv_multipart(zmq.NOBLOCK)
                try:
                    self._dispatch(frames)
                except Exception:  # a bug of ours fails this message, not every later one
                    log.exception("a message from runner %s could not be handled", self.endpoint)
        except zmq.ZMQError as e:  # the socket or its context is closed: nothing left to read
            log.debug("runner %s socket: %s", self.endpoint, e)

    def _dispatch(self, frames: list[bytes]) -> None:
        self.last_heard = time.monotonic()
        if len(frames) != 2:
            return
        try:
            message = self.codec.decode(frames[0], frames[1])
        except Exception:
            log.warning("undecodable message from runner %s", self.endpoint)
            return
        if isinstance(message, (Embeddings, Tokens)):
            future = self.calls.get(message.req_id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        if not isinstance(message, EngineStep):
            return
        streams = self.streams
        for output in message.outputs:
            stream = streams.get(output.req_id)
            if stream is None:
                continue
            stream.feed(output)
            if output.finish:
                del streams[output.req_id]
