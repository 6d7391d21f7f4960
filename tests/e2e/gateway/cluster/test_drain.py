"""SIGTERM on a gateway drains it: /readyz turns 503 at once and new requests are refused, the
streams in flight run to their end, then it exits 0; a second gateway keeps serving."""

from __future__ import annotations

import json
import signal
import threading

import httpx

from support.herd_server import HerdServer, free_port, wait_until

STREAMS = 8
TOKENS = 200


def test_sigterm_lets_streams_in_flight_finish(tmp_path, tiny_gguf) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    models = tmp_path / "models"
    worker = HerdServer(tmp_path / "worker", models_dir=models, command=("worker", "--bind", endpoint))
    env = {"HERD_WORKERS": endpoint, "OLLAMA_NUM_PARALLEL": str(STREAMS),
           "HERD_DRAIN_TIMEOUT": "300"}
    draining, serving = (HerdServer(tmp_path / f"gw{i}", models_dir=models, command=("gateway",),
                                    env=env) for i in range(2))
    with worker, draining, serving:
        draining.create_model("tiny", tiny_gguf)
        started = threading.Semaphore(0)
        results: list[list[dict]] = [[] for _ in range(STREAMS)]

        def stream(i: int) -> None:
            body = {"model": "tiny", "prompt": f"story {i}",
                    "options": {"num_predict": TOKENS, "seed": i, "temperature": 1}}
            with httpx.stream("POST", draining.url + "/api/generate", json=body,
                              timeout=600) as r:
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
        assert draining.process is not None
        draining.process.send_signal(signal.SIGTERM)
        at_signal = [len(lines) for lines in results]

        assert wait_until(lambda: httpx.get(draining.url + "/readyz").status_code == 503)
        assert "shutting down" in httpx.get(draining.url + "/readyz").json()["error"]
        refused = httpx.post(draining.url + "/api/generate", json={"model": "tiny", "prompt": "x"})
        assert refused.status_code == 503
        # The other replica takes new work meanwhile.
        assert httpx.get(serving.url + "/readyz").status_code == 200
        r = serving.client().generate(model="tiny", prompt="hello", options={"num_predict": 3})
        assert r.eval_count == 3

        for t in threads:
            t.join(600)
        for lines, seen in zip(results, at_signal):
            assert len(lines) > seen  # it was still streaming when the signal came
            assert not any("error" in line for line in lines)
            assert lines[-1]["done"] is True and lines[-1]["eval_count"] == TOKENS
        assert draining.process.wait(120) == 0
        draining.process = None
