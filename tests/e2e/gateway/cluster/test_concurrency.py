"""Several clients at once: continuous batching, queue bounds, and disconnects freeing slots."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import httpx
import ollama
import pytest

from support.herd_server import wait_until


def test_eight_concurrent_streams_all_complete_with_their_counts(server) -> None:
    async def one(session: aiohttp.ClientSession, i: int) -> tuple[str, dict]:
        n = 10 + i
        async with session.post(server.url + "/api/generate", json={
                "model": "tiny", "prompt": f"tell me story {i}",
                "options": {"temperature": 0.8, "seed": i, "num_predict": n}}) as r:
            assert r.status == 200
            lines = [line async for line in r.content]
        chunks = [__import__("json").loads(line) for line in lines if line.strip()]
        assert chunks[-1]["done"] and chunks[-1]["eval_count"] == n
        return "".join(c["response"] for c in chunks), chunks[-1]

    async def main() -> list[tuple[str, dict]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            return await asyncio.gather(*(one(session, i) for i in range(8)))

    results = asyncio.run(main())
    assert len(results) == 8
    assert all(text for text, _ in results)
    assert all(final["done_reason"] == "length" for _, final in results)


def test_concurrent_greedy_requests_match_their_sequential_answers(make_server) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL="4")
    client = server.client()
    prompts = ["hello world", "why is the sky blue", "tell me a story", "hi"]
    opts = {"temperature": 0, "num_predict": 12}
    sequential = [client.generate(model="tiny", prompt=p, options=opts).eval_count for p in prompts]
    results: dict[int, int] = {}

    def run(i: int) -> None:
        results[i] = server.client().generate(model="tiny", prompt=prompts[i], options=opts).eval_count

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results[i] for i in range(4)] == sequential == [12] * 4


def _long_running_server(make_server, tmp_path, **env: str):
    """One slot and a model whose context is large enough that an unbounded generation outlives
    the test: only an abort or a 503 can make room."""
    from support.tiny_models import write_tiny_llama

    gguf = write_tiny_llama(tmp_path / "long.gguf", context_length=131072)
    server = make_server(OLLAMA_NUM_PARALLEL="1", **env)
    server.create_model("long", gguf)
    server.client().generate(model="long", prompt="hi", options={**LONG_CTX, "num_predict": 1})
    return server


LONG_CTX = {"num_ctx": 131072}
ENDLESS = {"model": "long", "prompt": "hello", "options": {**LONG_CTX, "num_predict": -1}}


def test_requests_beyond_slots_and_queue_get_503(make_server, tmp_path) -> None:
    server = _long_running_server(make_server, tmp_path, OLLAMA_MAX_QUEUE="0")
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", server.url + "/api/generate", json=ENDLESS) as first:
            lines = first.iter_lines()  # keep the iterator: dropping it closes the connection
            next(lines)  # generating: the only slot is taken, and no queue
            busy = httpx.post(server.url + "/api/generate", timeout=60, json={
                "model": "long", "prompt": "hi", "options": {**LONG_CTX, "num_predict": 1}})
            assert busy.status_code == 503
            assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    # Once the client is gone the slot is free and the server serves again.
    assert wait_until(lambda: httpx.post(server.url + "/api/generate", timeout=60, json={
        "model": "long", "prompt": "hi", "stream": False,
        "options": {**LONG_CTX, "num_predict": 1}}).status_code == 200)


def test_client_disconnect_frees_the_slot(make_server, tmp_path) -> None:
    server = _long_running_server(make_server, tmp_path)
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", server.url + "/api/generate", json=ENDLESS) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
    r = server.client(timeout=60).generate(model="long", prompt="hi",
                                           options={**LONG_CTX, "num_predict": 3})
    assert r.eval_count == 3


def test_ollama_client_streams_from_several_threads(server) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []

    def chat(i: int) -> None:
        try:
            client = ollama.Client(host=server.url, timeout=120)
            parts = list(client.chat(model="tiny", stream=True, options={"num_predict": 6, "seed": i},
                                     messages=[{"role": "user", "content": f"hi {i}"}]))
            counts.append(parts[-1].eval_count)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert counts == [6] * 6


@pytest.mark.parametrize("parallel", ["2"])
def test_more_requests_than_slots_queue_and_all_finish(make_server, parallel: str) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL=parallel)

    async def main() -> list[int]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            async def one(i: int) -> int:
                async with s.post(server.url + "/api/generate", json={
                        "model": "tiny", "prompt": "hi", "stream": False,
                        "options": {"num_predict": 5 + i}}) as r:
                    return (await r.json())["eval_count"]
            return await asyncio.gather(*(one(i) for i in range(6)))

    assert asyncio.run(main()) == [5, 6, 7, 8, 9, 10]
