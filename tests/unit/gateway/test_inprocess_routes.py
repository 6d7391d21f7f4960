"""Routes, envelopes and queue bounds against the in-process fake cluster (no model, no
process): the scheduler's seams are the node and runner factories create_app takes."""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest

from support.fake_cluster import GiB, FakeCluster, devices
from support.inprocess import gateway
from support.tiny_models import write_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0)


def host_cluster(**kw: object) -> FakeCluster:
    return FakeCluster({"node-a": devices(cpu=64 * GiB)}, **kw)  # type: ignore[arg-type]


def test_generate_streams_the_runners_pieces_as_ndjson(tmp_path, tiny) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path, host_cluster()) as g:
            await g.create("tiny", tiny)
            r = await g.client.post("/api/generate", json={"model": "tiny", "prompt": "hello world"})
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in (await r.text()).splitlines()]
            assert "".join(line["response"] for line in lines) == "hello world "
            assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
            assert lines[-1]["eval_count"] == 2
    asyncio.run(scenario())


def test_openai_and_anthropic_framings_of_the_same_answer(tmp_path, tiny) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path, host_cluster()) as g:
            await g.create("tiny", tiny)
            messages = [{"role": "user", "content": "red green blue"}]
            r = await g.client.post("/v1/chat/completions",
                                    json={"model": "tiny", "messages": messages, "stream": True})
            events = [line[6:] for line in (await r.text()).splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == \
                "red green blue "
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
            r = await g.client.post("/v1/messages", json={"model": "tiny", "max_tokens": 3,
                                                          "messages": messages})
            body = await r.json()
            assert body["content"] == [{"type": "text", "text": "red green blue "}]
            assert body["stop_reason"] == "end_turn"
    asyncio.run(scenario())


def test_errors_keep_each_dialects_envelope(tmp_path, tiny) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path, host_cluster()) as g:
            r = await g.client.post("/api/chat", json={"model": "nope", "messages": []})
            assert r.status == 404 and (await r.json()) == {"error": "model 'nope' not found"}
            r = await g.client.post("/v1/chat/completions",
                                    json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 404 and (await r.json())["error"]["message"] == "model 'nope' not found"
            r = await g.client.post("/v1/messages", json={"model": "nope", "max_tokens": 4,
                                                          "messages": [{"role": "user", "content": "x"}]})
            assert r.status == 404 and (await r.json())["type"] == "error"
    asyncio.run(scenario())


def test_a_full_queue_answers_503_with_retry_after(tmp_path, tiny) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path, host_cluster(step_s=0.02), max_queue=0) as g:
            await g.create("tiny", tiny)
            body = {"model": "tiny", "prompt": "a b c", "options": {"num_predict": 30},
                    "stream": False}
            first = asyncio.ensure_future(g.client.post("/api/generate", json=body))
            while not (await g.ps()):
                await asyncio.sleep(0.01)
            r = await g.client.post("/api/generate", json=body)
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert "maximum pending requests exceeded" in (await r.json())["error"]
            assert (await first).status == 200
    asyncio.run(scenario())


def test_requests_beyond_the_slots_wait_and_then_run(tmp_path, tiny) -> None:
    async def scenario() -> None:
        async with gateway(tmp_path, host_cluster(step_s=0.005), max_queue=8) as g:
            await g.create("tiny", tiny)
            body = {"model": "tiny", "prompt": "one two", "stream": False}
            answers = await asyncio.gather(*(g.client.post("/api/generate", json=body)
                                             for _ in range(5)))
            assert [a.status for a in answers] == [200] * 5
            assert {(await a.json())["response"] for a in answers} == {"one two "}
    asyncio.run(scenario())
