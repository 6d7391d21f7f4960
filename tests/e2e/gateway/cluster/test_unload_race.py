"""A request right after one with keep_alive 0 gets a runner that stays up.

The unload raced the next load: the node handed the next request the runner it had just been
told to stop, which then exited under it ("model runner has unexpectedly stopped"), found by
the route fuzz test. Ollama's scheduler likewise waits for an expiring runner to be unloaded
before it loads the model again (server/sched.go, processPending/unloadedCh)."""

from __future__ import annotations

import httpx


def test_a_request_after_keep_alive_0_gets_a_fresh_runner(server) -> None:
    client = httpx.Client(base_url=server.url, timeout=120)
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    for _ in range(6):
        first = client.post("/api/generate", json={**body, "keep_alive": 0})
        assert first.status_code == 200, first.text
        second = client.post("/api/generate", json=body)
        assert second.status_code == 200, second.text
    client.close()
