"""Multi-GPU placement with real processes: devices described by HERD_DEVICES stand in for a
GPU host (the runners compute on the CPU; every decision and figure is the real one)."""

from __future__ import annotations

import concurrent.futures
import pathlib

import httpx
import pytest

from herd.gateway.placement.estimate import estimate
from support.herd_server import HerdServer, free_port, wait_until
from support.tiny_models import write_tiny_llama

CTX, PARALLEL, BATCH = 512, 2, 64
ENV = {"OLLAMA_CONTEXT_LENGTH": str(CTX), "OLLAMA_NUM_PARALLEL": str(PARALLEL),
       "HERD_NUM_BATCH": str(BATCH)}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    d = tmp_path_factory.mktemp("placed")
    return (write_tiny_llama(d / "a.gguf", seed=3, embedding_length=128, block_count=4),
            write_tiny_llama(d / "b.gguf", seed=4, embedding_length=128, block_count=4))


def need(path: pathlib.Path) -> int:
    return estimate(str(path), n_ctx_per_seq=CTX, n_seq=PARALLEL, n_batch=BATCH).total


def ps(srv: HerdServer) -> list[dict]:
    return httpx.get(srv.url + "/api/ps").json()["models"]


def runner_env(pid: int) -> dict[str, str]:
    raw = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def generate(srv: HerdServer, model: str, prompt: str = "hello", n: int = 8) -> dict:
    # Queued behind others on a loaded 2-core machine, a long answer can take minutes.
    r = httpx.post(srv.url + "/api/generate", json={
        "model": model, "prompt": prompt, "stream": False,
        "options": {"num_predict": n, "temperature": 0}}, timeout=60.0 + n)
    assert r.status_code == 200, r.text
    return r.json()


def test_two_models_land_on_two_devices_each_pinned(tmp_path, two_models) -> None:
    size = int(need(two_models[0]) * 1.5)
    env = {**ENV, "HERD_DEVICES": f"cuda:0={size},cuda:1={size}", "HERD_MAX_REPLICAS": "1"}
    with HerdServer(tmp_path, env=env) as srv:
        for name, path in zip(("a", "b"), two_models):
            srv.create_model(name, path)
            generate(srv, name)
        placed = {m["name"]: m["runners"][0]["devices"] for m in ps(srv)}
        assert sorted(d for devices in placed.values() for d in devices) == ["cuda:0", "cuda:1"]
        visible = sorted(runner_env(pid).get("CUDA_VISIBLE_DEVICES") for pid in srv.runner_pids())
        assert visible == ["0", "1"]
        for m in ps(srv):
            assert m["size_vram"] == m["size"] > 0


def test_a_model_too_big_for_one_device_is_split_across_both(tmp_path, two_models) -> None:
    size = int(need(two_models[0]) * 0.85)
    env = {**ENV, "HERD_DEVICES": f"cuda:0={size},cuda:1={size}"}
    with HerdServer(tmp_path, env=env) as srv:
        srv.create_model("a", two_models[0])
        assert generate(srv, "a")["eval_count"] == 8
        (model,) = ps(srv)
        assert sorted(model["runners"][0]["devices"]) == ["cuda:0", "cuda:1"]
        (pid,) = srv.runner_pids()
        assert runner_env(pid)["CUDA_VISIBLE_DEVICES"] in ("0,1", "1,0")


def test_under_load_a_second_replica_starts_and_answers_alike(tmp_path, two_models) -> None:
    size = int(need(two_models[0]) * 1.2)
    env = {**ENV, "HERD_DEVICES": f"cuda:0={size},cuda:1={size}", "OLLAMA_NUM_PARALLEL": "1"}
    env["OLLAMA_NUM_PARALLEL"] = "1"
    with HerdServer(tmp_path, env=env) as srv:
        srv.create_model("a", two_models[0])
        # Long enough answers that the requests overlap even on a fast machine.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: generate(srv, "a", "the same prompt", 400), range(6)))
        # The second replica may finish starting after the last answer.
        assert wait_until(lambda: len(ps(srv)[0]["runners"]) == 2)
        (model,) = ps(srv)
        assert sorted(r["devices"][0] for r in model["runners"]) == ["cuda:0", "cuda:1"]
        assert len(srv.runner_pids()) == 2
        # Greedy answers do not depend on the replica.
        assert len({a["response"] for a in answers}) == 1


def test_two_worker_nodes_over_tcp(tmp_path, two_models) -> None:
    size = int(need(two_models[0]) * 1.5)
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    models = tmp_path / "models"
    workers = [HerdServer(tmp_path / f"w{i}", models_dir=models, command=("worker", "--bind", ep),
                          env={**ENV, "HERD_DEVICES": f"cuda:0={size}"})
               for i, ep in enumerate(endpoints)]
    for w in workers:
        w.start()
    gw = HerdServer(tmp_path / "gw", models_dir=models, command=("gateway",),
                    env={**ENV, "HERD_WORKERS": ",".join(endpoints), "HERD_MAX_REPLICAS": "1"})
    try:
        with gw:
            for name, path in zip(("a", "b"), two_models):
                gw.create_model(name, path)
                generate(gw, name)
            nodes = sorted(m["runners"][0]["node"] for m in ps(gw))
            assert nodes == sorted(endpoints)
            assert wait_until(lambda: all(len(w.runner_pids()) == 1 for w in workers))
    finally:
        for w in workers:
            w.stop()


def test_gpu_overhead_is_left_free_so_the_model_no_longer_fits_whole(tmp_path, two_models) -> None:
    """The device would hold the model 1.5 times over; OLLAMA_GPU_OVERHEAD takes 0.8 of that
    from it, so the model is placed partly or wholly on the host instead."""
    gpu, overhead = int(need(two_models[0]) * 1.5), int(need(two_models[0]) * 0.8)
    env = {**ENV, "HERD_DEVICES": f"cuda:0={gpu}", "OLLAMA_GPU_OVERHEAD": str(overhead)}
    with HerdServer(tmp_path, env=env) as srv:
        srv.create_model("a", two_models[0])
        assert generate(srv, "a")["eval_count"] == 8
        (model,) = ps(srv)
        assert "cpu" in model["runners"][0]["devices"]
        assert model["size_vram"] < model["size"]
        assert model["size_vram"] <= gpu - overhead
        metrics = httpx.get(srv.url + "/metrics").text
        reserved = [line for line in metrics.splitlines()
                    if line.startswith("herd_device_memory_reserved_bytes") and "cuda:0" in line]
        assert len(reserved) == 1 and float(reserved[0].split()[-1]) == overhead


@pytest.mark.parametrize("vram,parallel,expected", [
    ("8GiB", 1, 4096), ("24GiB", 1, 32768), ("48GiB", 4, 65536)])
def test_without_ollama_context_length_the_vram_tier_sets_the_context(
        tmp_path, vram: str, parallel: int, expected: int) -> None:
    """Ollama's default context is 4096, 32768 or 262144 by the host's VRAM, for its one
    request at a time; with four slots each gets a quarter (262144 / 4 here). A model trained
    for less would get its own (this one: 65536)."""
    path = write_tiny_llama(tmp_path / "long.gguf", seed=5, context_length=65536)
    env = {"OLLAMA_NUM_PARALLEL": str(parallel), "HERD_NUM_BATCH": str(BATCH),
           "HERD_DEVICES": f"cuda:0={vram}"}
    with HerdServer(tmp_path / "srv", env=env) as srv:
        srv.create_model("long", path)
        generate(srv, "long", n=2)
        (model,) = ps(srv)
        assert model["context_length"] == expected
