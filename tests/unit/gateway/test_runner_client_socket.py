"""RunnerClient reads its DEALER from the event loop's selector. ZeroMQ's descriptor is
edge-triggered and a send can swallow the edge of a reply that arrived meanwhile: replies that
race the client's own sends must all still be read. A real ROUTER on a real socket answers."""

from __future__ import annotations

import asyncio
import threading

import zmq
import zmq.asyncio

from herd.gateway.cluster.runner_client import RunnerClient
from herd.protocol.wire import (EngineStep, FinishReason, RequestOutput, SamplingParams, Submit,
                                Tokenize, Tokens, WireCodec)


def _echo_runner(router: zmq.Socket, stop: threading.Event) -> None:
    """Answers each Tokenize with its req_id as the one token, and each Submit with three steps
    (two texts, then the finish), at once, as fast as it can."""
    codec = WireCodec()
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(50):
            continue
        client, kind, payload = router.recv_multipart()
        message = codec.decode(kind, payload)
        if isinstance(message, Tokenize):
            router.send_multipart([client, *codec.encode(Tokens(message.req_id, [message.req_id]))])
        elif isinstance(message, Submit):
            for text in ("a", "b"):
                step = EngineStep([RequestOutput(message.req_id, text=text)])
                router.send_multipart([client, *codec.encode(step)])
            done = EngineStep([RequestOutput(message.req_id, finish=FinishReason.LENGTH)])
            router.send_multipart([client, *codec.encode(done)])


def test_replies_racing_the_clients_sends_are_all_read() -> None:
    zctx = zmq.asyncio.Context()
    router = zmq.Socket(zctx, zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    thread = threading.Thread(target=_echo_runner, args=(router, stop), daemon=True)
    thread.start()

    async def main() -> tuple[list[int], list[str]]:
        client = RunnerClient(zctx, f"tcp://127.0.0.1:{port}")
        try:
            async def tokenize(i: int) -> int:
                return (await client.tokenize(Tokenize(i, content="x"))).tokens[0]

            async def generate(i: int) -> str:
                stream = await client.submit(Submit(10_000 + i, raw_prompt="x",
                                                    sampling=SamplingParams()))
                text = ""
                while True:
                    update = await stream.next()
                    text += update.text
                    if update.final is not None:
                        return text

            # A deadline only so that a lost reply fails the test instead of hanging it.
            tokens = await asyncio.wait_for(asyncio.gather(*map(tokenize, range(1, 401))), 60)
            texts = await asyncio.wait_for(asyncio.gather(*map(generate, range(200))), 60)
            return list(tokens), list(texts)
        finally:
            await client.close()

    try:
        tokens, texts = asyncio.run(main())
    finally:
        stop.set()
        thread.join()
        router.close(0)
        zctx.term()
    assert tokens == list(range(1, 401))
    assert texts == ["ab"] * 200
