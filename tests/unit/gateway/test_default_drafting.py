"""Which drafting a request gets when it sets no `draft_num_predict`: prompt lookup where it
pays (-1) for an answer sampled without a seed, off for greedy and seeded ones (whose answers
must not depend on batch shapes), whatever the dialect; a request's or a model's own setting
wins."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from support.fake_cluster import FakeCluster, devices
from support.inprocess import gateway
from support.tiny_models import write_tiny_llama

MiB = 1 << 20


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "a.gguf", seed=1)


def _served(tmp_path: pathlib.Path, gguf: pathlib.Path,
            requests: list[tuple[str, dict]], parameters: dict | None = None) -> list[int]:
    """The draft_num_predict each request reached the runner with."""
    cluster = FakeCluster({"node": devices(cpu=4096 * MiB)})

    async def scenario() -> list[int]:
        async with gateway(tmp_path, cluster) as g:
            await g.create("base", gguf)
            r = await g.client.post("/api/create", json={
                "model": "m", "from": "base", "stream": False, "parameters": parameters or {}})
            assert r.status == 200, await r.text()
            for path, body in requests:
                r = await g.client.post(path, json={"model": "m", "stream": False, **body})
                assert r.status == 200, await r.text()
            (runner,) = cluster.runners.values()
            return [s.sampling.draft_num_predict for s in runner.served]
    return asyncio.run(scenario())


def test_unseeded_sampling_drafts_where_it_pays_and_greedy_or_seeded_does_not(
        tmp_path, gguf) -> None:
    drafts = _served(tmp_path, gguf, [
        ("/api/generate", {"prompt": "a"}),
        ("/api/generate", {"prompt": "a", "options": {"temperature": 0}}),
        ("/api/generate", {"prompt": "a", "options": {"seed": 7}}),
        ("/api/generate", {"prompt": "a", "options": {"temperature": 1.2, "seed": -1}}),
        ("/api/chat", {"messages": [{"role": "user", "content": "a"}]}),
        ("/api/chat", {"messages": [{"role": "user", "content": "a"}],
                       "options": {"temperature": 0.0}}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "seed": 3}),
        ("/v1/completions", {"prompt": "a", "temperature": 0}),
    ])
    assert drafts == [-1, 0, 0, -1, -1, 0, -1, 0, 0]


def test_a_request_or_the_model_that_says_wins(tmp_path, gguf) -> None:
    drafts = _served(tmp_path, gguf, [
        ("/api/generate", {"prompt": "a", "options": {"draft_num_predict": 0}}),
        ("/api/generate", {"prompt": "a", "options": {"draft_num_predict": 3, "temperature": 0}}),
        ("/api/generate", {"prompt": "a"}),  # the model's parameters: greedy
        ("/api/generate", {"prompt": "a", "options": {"temperature": 0.7}}),
    ], parameters={"temperature": 0})
    assert drafts == [0, 3, 0, -1]


def test_a_model_parameter_turns_drafting_off_for_every_request(tmp_path, gguf) -> None:
    drafts = _served(tmp_path, gguf, [("/api/generate", {"prompt": "a"}),
                                      ("/api/chat", {"messages": [{"role": "user", "content": "a"}]})],
                     parameters={"draft_num_predict": 0})
    assert drafts == [0, 0]
