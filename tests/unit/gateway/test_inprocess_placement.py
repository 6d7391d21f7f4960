"""Placement, replicas, eviction and prefix affinity through the real scheduler and routes,
on fake nodes whose devices are described like HERD_DEVICES (no model, no process)."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from support.fake_cluster import FakeCluster, devices
from support.inprocess import gateway
from support.tiny_models import write_tiny_llama

MiB = 2**20


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    d = tmp_path_factory.mktemp("gguf")
    return (write_tiny_llama(d / "a.gguf", seed=1, embedding_length=128, block_count=4),
            write_tiny_llama(d / "b.gguf", seed=2, embedding_length=128, block_count=4))


def _size(tmp_path, ggufs) -> int:
    from support.inprocess import InProcessGateway
    from herd.protocol.config import Settings

    g = InProcessGateway(None, None, Settings(context_length=256, num_parallel=1,  # type: ignore
                                              num_batch=32))
    return g.estimate(ggufs[0]).total


async def _generate(g, model: str, prompt: str = "a b", n: int = 4) -> dict:
    r = await g.client.post("/api/generate", json={"model": model, "prompt": prompt,
                                                   "stream": False, "options": {"num_predict": n}})
    assert r.status == 200, await r.text()
    return await r.json()


def test_two_models_that_do_not_fit_one_device_together_land_on_two(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 1.5), cuda_1=int(size * 1.5),
                                           cpu=1 * MiB)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster, max_replicas=1) as g:
            await g.create("a", ggufs[0])
            await g.create("b", ggufs[1])
            await _generate(g, "a")
            await _generate(g, "b")
            placed = {m["name"]: m["runners"][0]["devices"] for m in await g.ps()}
            assert placed == {"a:latest": ["cuda:0"], "b:latest": ["cuda:1"]} or \
                placed == {"a:latest": ["cuda:1"], "b:latest": ["cuda:0"]}
            for m in await g.ps():
                assert m["size_vram"] == m["size"] == m["runners"][0]["size_vram"] == size
    asyncio.run(scenario())


def test_best_fit_picks_the_smallest_device_that_holds_the_model(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"n1": devices(cuda_0=4 * size, cpu=1 * MiB),
                           "n2": devices(cuda_0=int(size * 1.2), cuda_1=size // 2, cpu=1 * MiB)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster) as g:
            await g.create("a", ggufs[0])
            await _generate(g, "a")
            (model,) = await g.ps()
            assert [(r["node"], r["devices"]) for r in model["runners"]] == [("n2", ["cuda:0"])]
    asyncio.run(scenario())


def test_a_model_no_single_device_holds_is_split_by_layers(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 0.85), cuda_1=int(size * 0.85),
                                           cpu=1 * MiB)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster) as g:
            await g.create("a", ggufs[0])
            await _generate(g, "a")
            (model,) = await g.ps()
            assert sorted(model["runners"][0]["devices"]) == ["cuda:0", "cuda:1"]
            (spec,) = cluster.loads
            assert spec.num_gpu_layers == 999  # every layer on the GPUs: a split, not an offload
            assert len(spec.tensor_split) == 2 and abs(sum(spec.tensor_split) - 1) < 1e-6
            assert model["size_vram"] == sum(spec.device_memory) > 0
    asyncio.run(scenario())


def test_a_model_that_fits_nowhere_is_a_clear_error_with_both_figures(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=size // 4, cpu=size // 4)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster) as g:
            await g.create("a", ggufs[0])
            r = await g.client.post("/api/generate", json={"model": "a", "prompt": "x"})
            assert r.status == 400
            message = (await r.json())["error"]
            assert message.startswith("model requires more memory than is available")
            assert str(size) in message and str(size // 4) in message
    asyncio.run(scenario())


def test_idle_models_are_evicted_in_lru_order(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 1.5), cpu=1 * MiB)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster) as g:
            await g.create("a", ggufs[0])
            await g.create("b", ggufs[1])
            await _generate(g, "a")
            await _generate(g, "b")
            assert [m["name"] for m in await g.ps()] == ["b:latest"]
            await _generate(g, "a")
            assert [m["name"] for m in await g.ps()] == ["a:latest"]
    asyncio.run(scenario())


def test_a_busy_model_gets_a_second_replica_on_the_free_device(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 1.2), cuda_1=int(size * 1.2),
                                           cpu=1 * MiB)}, step_s=0.01)

    async def scenario() -> None:
        async with gateway(tmp_path, cluster, max_queue=16) as g:
            await g.create("a", ggufs[0])
            answers = await asyncio.gather(*(_generate(g, "a", n=20) for _ in range(6)))
            assert {a["response"] for a in answers} == {"a b " * 10}
            (model,) = await g.ps()
            assert sorted(r["devices"][0] for r in model["runners"]) == ["cuda:0", "cuda:1"]
            assert model["size_vram"] == 2 * size
            served = [len(r.served) for r in cluster.runners.values()]
            assert sum(served) == 6 and min(served) >= 1
    asyncio.run(scenario())


def test_max_replicas_1_keeps_one_runner_per_model(tmp_path, ggufs) -> None:
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=2 * size, cuda_1=2 * size, cpu=1 * MiB)},
                          step_s=0.01)

    async def scenario() -> None:
        async with gateway(tmp_path, cluster, max_queue=16, max_replicas=1) as g:
            await g.create("a", ggufs[0])
            await asyncio.gather(*(_generate(g, "a", n=10) for _ in range(4)))
            assert len(cluster.loads) == 1
    asyncio.run(scenario())


def test_prompts_sharing_a_long_prefix_go_to_the_replica_that_served_it(tmp_path, ggufs) -> None:
    """Without affinity an idle tie goes to the first replica; with it, the follow-up turns go
    to the second one, which served the first turn while the first replica was busy."""
    size = _size(tmp_path, ggufs)
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 1.2), cuda_1=int(size * 1.2),
                                           cpu=1 * MiB)}, step_s=0.01)
    system = "You are a careful assistant. " * 60  # ~1.7k characters shared by every request

    async def scenario() -> None:
        async with gateway(tmp_path, cluster, max_queue=16) as g:
            await g.create("a", ggufs[0])
            await asyncio.gather(*(_generate(g, "a", prompt=f"warm {i}", n=20) for i in range(6)))
            first, second = cluster.runners.values()
            assert len(cluster.runners) == 2
            for runner in (first, second):
                runner.served.clear()
            busy = asyncio.ensure_future(_generate(g, "a", prompt="unrelated", n=60))
            while not first.served:
                await asyncio.sleep(0.005)
            await _generate(g, "a", prompt=system + "question 0")  # the first is busy
            await busy
            for turn in range(1, 4):
                await _generate(g, "a", prompt=system + f"question {turn}")
            assert (len(first.served), len(second.served)) == (1, 4)
    asyncio.run(scenario())


def test_a_draft_model_travels_in_the_spec_and_counts_in_the_placement(tmp_path, ggufs) -> None:
    """A model with a draft: the runner is told the draft's blob (by digest), the estimate
    holds both models, and requests draft four tokens unless they say otherwise (Ollama)."""
    import hashlib

    size = _size(tmp_path, ggufs)
    draft_size = _size(tmp_path, ggufs[1:])
    # Room for the model and its draft on cuda:1 only; cuda:0 would hold the model alone.
    cluster = FakeCluster({"node": devices(cuda_0=int(size * 1.5),
                                           cuda_1=int((size + draft_size) * 1.1), cpu=1 * MiB)})

    async def scenario() -> None:
        async with gateway(tmp_path, cluster) as g:
            digests = []
            for gguf in ggufs:
                data = gguf.read_bytes()
                digests.append("sha256:" + hashlib.sha256(data).hexdigest())
                await g.client.post(f"/api/blobs/{digests[-1]}", data=data)
            r = await g.client.post("/api/create", json={
                "model": "d", "stream": False, "files": {"a.gguf": digests[0]},
                "draft_files": {"b.gguf": digests[1]}})
            assert r.status == 200, await r.text()
            await _generate(g, "d")
            (spec,) = cluster.loads
            assert spec.draft_digest == digests[1] and "|draft=" in spec.key
            (model,) = await g.ps()
            assert model["size_vram"] == size + draft_size
            assert model["runners"][0]["devices"] == ["cuda:1"]
            r = await g.client.post("/api/generate", json={
                "model": "d", "prompt": "x", "stream": False,
                "options": {"num_predict": 2, "draft_num_predict": 0}})
            assert r.status == 200
            (runner,) = cluster.runners.values()
            assert [s.sampling.draft_num_predict for s in runner.served] == [4, 0]
    asyncio.run(scenario())
