"""A runner that hangs, or a worker node that dies, fails only its own requests; the next
request is served by a fresh runner or another node."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx

from support.herd_server import HerdServer, free_port, wait_until


def stream_lines(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as r:
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


def test_a_hung_runner_is_treated_as_dead_and_replaced(tmp_path, tiny_gguf) -> None:
    with HerdServer(tmp_path, env={"HERD_RUNNER_TIMEOUT": "6"}) as srv:
        srv.create_model("tiny", tiny_gguf)
        srv.client().generate(model="tiny", prompt="warm", options={"num_predict": 2})
        (pid,) = srv.runner_pids()
        import threading

        lines: list[dict] = []
        reader = threading.Thread(target=lambda: lines.extend(stream_lines(srv.url, {
            "model": "tiny", "prompt": "go on", "options": {"num_predict": 100000}})))
        reader.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGSTOP)  # hung: alive, silent
        reader.join(60)
        assert not reader.is_alive()
        assert "error" in lines[-1] and "stopped answering" in lines[-1]["error"]
        # The node kills it (SIGKILL reaches a stopped process) and a fresh one serves.
        assert wait_until(lambda: pid not in srv.runner_pids(), timeout=30)
        r = srv.client().generate(model="tiny", prompt="again", options={"num_predict": 3})
        assert r.eval_count == 3 and srv.runner_pids() != [pid]


def test_a_killed_worker_fails_its_streams_and_the_other_node_serves(tmp_path, tiny_gguf) -> None:
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    models = tmp_path / "models"
    workers = [HerdServer(tmp_path / f"w{i}", models_dir=models, command=("worker", "--bind", ep))
               for i, ep in enumerate(endpoints)]
    for w in workers:
        w.start()
    gw = HerdServer(tmp_path / "gw", models_dir=models, command=("gateway",),
                    env={"HERD_WORKERS": ",".join(endpoints), "HERD_MAX_REPLICAS": "1"})
    try:
        with gw:
            gw.create_model("tiny", tiny_gguf)
            gw.client().generate(model="tiny", prompt="warm", options={"num_predict": 2})
            holder = next(w for w in workers if w.runner_pids())
            other = next(w for w in workers if w is not holder)
            import threading

            lines: list[dict] = []
            reader = threading.Thread(target=lambda: lines.extend(stream_lines(gw.url, {
                "model": "tiny", "prompt": "go on", "options": {"num_predict": 100000}})))
            reader.start()
            time.sleep(1.0)
            runner = holder.runner_pids()[0]
            holder.process.kill()  # SIGKILL: the node cannot say goodbye
            holder.process.wait()
            reader.join(60)
            assert not reader.is_alive()
            assert "error" in lines[-1] and "stopped answering" in lines[-1]["error"]
            r = gw.client().generate(model="tiny", prompt="again", options={"num_predict": 3})
            assert r.eval_count == 3
            assert len(other.runner_pids()) == 1
            (model,) = httpx.get(gw.url + "/api/ps").json()["models"]
            assert [r["node"] for r in model["runners"]] == [other.command[2]]
            assert wait_until(lambda: not os.path.exists(f"/proc/{runner}/status")
                              or b"zombie" in open(f"/proc/{runner}/status", "rb").read(),
                              timeout=60)
            # The node comes back on its address and rejoins: nothing counted twice.
            holder.process = None
            holder.start()
            assert wait_until(lambda: gw.client().generate(
                model="tiny", prompt="once more", options={"num_predict": 2}).eval_count == 2)
            (model,) = httpx.get(gw.url + "/api/ps").json()["models"]
            assert len(model["runners"]) == 1
    finally:
        for w in workers:
            w.stop()
