"""`herd worker` and `herd gateway` as separate processes: workers bind, gateways connect, and
gateway replicas share one runner per model through the node."""

from __future__ import annotations

import httpx

from support.herd_server import HerdServer, free_port, wait_until


def test_two_gateways_share_one_worker_over_tcp(tmp_path, tiny_gguf) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    models = tmp_path / "models"
    worker = HerdServer(tmp_path / "worker", models_dir=models, command=("worker", "--bind", endpoint))
    gateways = [HerdServer(tmp_path / f"gw{i}", models_dir=models, command=("gateway",),
                           env={"HERD_WORKERS": endpoint}) for i in range(2)]
    with worker:
        for gw in gateways:
            gw.start()
        try:
            gateways[0].create_model("tiny", tiny_gguf)
            for gw in gateways:
                r = gw.client().generate(model="tiny", prompt="hello", options={"num_predict": 4})
                assert r.eval_count == 4
                assert [m["name"] for m in httpx.get(gw.url + "/api/ps").json()["models"]] == ["tiny:latest"]
            # Both gateways lease the same runner: one process for one model.
            assert len(worker.runner_pids()) == 1
            # One gateway letting go does not stop the runner the other still uses.
            httpx.post(gateways[0].url + "/api/generate", json={"model": "tiny", "keep_alive": 0})
            assert wait_until(lambda: httpx.get(gateways[0].url + "/api/ps").json()["models"] == [])
            r = gateways[1].client().generate(model="tiny", prompt="hi", options={"num_predict": 2})
            assert r.eval_count == 2
            assert len(worker.runner_pids()) == 1
        finally:
            for gw in gateways:
                gw.stop()


def test_gateway_without_workers_refuses_to_start(tmp_path) -> None:
    import subprocess
    import sys

    from support.herd_server import ROOT

    env = {"HERD_WORKERS": "", "OLLAMA_MODELS": str(tmp_path), "HERD_RUN_DIR": str(tmp_path / "run"),
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "herd.cli", "gateway"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)
    assert r.returncode == 2
    assert b"HERD_WORKERS" in r.stderr
