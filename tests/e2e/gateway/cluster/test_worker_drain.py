"""SIGTERM on a worker drains it: the streams its runners have finish, the gateways are told
(new loads go to another node), and it exits 0. No answer is cut by a routine rollout."""

from __future__ import annotations

import json
import signal
import threading

import httpx

from support.herd_server import HerdServer, free_port, wait_until

STREAMS = 4
TOKENS = 150


def test_sigterm_on_a_worker_lets_its_runners_finish(tmp_path, tiny_gguf) -> None:
    models = tmp_path / "models"
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    workers = [HerdServer(tmp_path / f"w{i}", models_dir=models, command=("worker", "--bind", e),
                          env={"HERD_DRAIN_TIMEOUT": "300"}) for i, e in enumerate(endpoints)]
    gateway = HerdServer(tmp_path / "gw", models_dir=models, command=("gateway",),
                         env={"HERD_WORKERS": ",".join(endpoints),
                              "OLLAMA_NUM_PARALLEL": str(STREAMS)})
    with workers[0], workers[1], gateway:
        gateway.create_model("tiny", tiny_gguf)
        started = threading.Semaphore(0)
        results: list[list[dict]] = [[] for _ in range(STREAMS)]

        def stream(i: int) -> None:
            body = {"model": "tiny", "prompt": f"story {i}",
                    "options": {"num_predict": TOKENS, "seed": i, "temperature": 1}}
            with httpx.stream("POST", gateway.url + "/api/generate", json=body, timeout=600) as r:
                for line in r.iter_lines():
                    if line:
                        results[i].append(json.loads(line))
                        if len(results[i]) == 1:
                            started.release()

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
        for t in threads:
            t.start()
        for _ in range(STREAMS):
            assert started.acquire(timeout=300)
        (busy,) = [w for w in workers if w.runner_pids()]
        (other,) = [w for w in workers if w is not busy]
        busy_endpoint = endpoints[workers.index(busy)]
        assert busy.process is not None
        busy.process.send_signal(signal.SIGTERM)
        at_signal = [len(lines) for lines in results]

        def node_error() -> str:
            workers = httpx.get(gateway.url + "/readyz").json()["workers"]
            return next(w.get("error", "") for w in workers if w["endpoint"] == busy_endpoint)

        assert wait_until(lambda: "shutting down" in node_error())
        # New work is placed on the other node meanwhile.
        r = gateway.client().generate(model="tiny", prompt="hello", options={"num_predict": 3})
        assert r.eval_count == 3
        assert len(other.runner_pids()) == 1

        for t in threads:
            t.join(600)
        for lines, seen in zip(results, at_signal):
            assert len(lines) > seen
            assert not any("error" in line for line in lines)
            assert lines[-1]["done"] is True and lines[-1]["eval_count"] == TOKENS
        assert busy.process.wait(120) == 0
        busy.process = None
