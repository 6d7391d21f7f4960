"""Load, unload, keep_alive expiry and /api/ps; a killed runner fails cleanly and is replaced."""

from __future__ import annotations

import os
import re
import signal
import threading

import httpx
import ollama

from support.herd_server import wait_until

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+([+-]\d\d:\d\d|Z)$")


def loaded_names(server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/ps").json()["models"]]


def test_empty_prompt_loads_and_keep_alive_zero_unloads(make_server) -> None:
    server = make_server()
    assert loaded_names(server) == []
    r = httpx.post(server.url + "/api/generate", json={"model": "tiny"}, timeout=60).json()
    assert r["done"] is True and r["done_reason"] == "load" and r["response"] == ""
    assert loaded_names(server) == ["tiny:latest"]
    r = httpx.post(server.url + "/api/generate", json={"model": "tiny", "keep_alive": 0}, timeout=60).json()
    assert r["done_reason"] == "unload"
    assert wait_until(lambda: loaded_names(server) == [])
    assert wait_until(lambda: server.runner_pids() == [])


def test_chat_with_no_messages_loads_and_unloads(make_server) -> None:
    server = make_server()
    r = httpx.post(server.url + "/api/chat", json={"model": "tiny", "messages": []}, timeout=60).json()
    assert r["done_reason"] == "load" and r["message"] == {"role": "assistant", "content": ""}
    assert loaded_names(server) == ["tiny:latest"]
    r = httpx.post(server.url + "/api/chat", json={"model": "tiny", "keep_alive": "0s"}, timeout=60).json()
    assert r["done_reason"] == "unload"
    assert wait_until(lambda: loaded_names(server) == [])


def test_ps_reports_the_loaded_model(server) -> None:
    server.client().generate(model="tiny", prompt="hi", options={"num_predict": 1}, keep_alive="10m")
    models = httpx.get(server.url + "/api/ps").json()["models"]
    (m,) = [m for m in models if m["name"] == "tiny:latest"]
    assert m["model"] == "tiny:latest"
    assert m["size"] > 0 and m["size_vram"] == 0
    assert m["context_length"] == 2048  # num_ctx 4096 clamped to the model's trained context
    assert RFC3339.match(m["expires_at"])
    assert len(m["digest"]) == 64
    assert m["details"]["family"] == "llama"


def test_keep_alive_expiry_unloads_an_idle_model(make_server) -> None:
    server = make_server()
    server.client().generate(model="tiny", prompt="hi", options={"num_predict": 2}, keep_alive="1s")
    assert loaded_names(server) == ["tiny:latest"]
    assert wait_until(lambda: loaded_names(server) == [], timeout=30)
    assert wait_until(lambda: server.runner_pids() == [])


def test_default_keep_alive_comes_from_the_environment(make_server) -> None:
    server = make_server(OLLAMA_KEEP_ALIVE="1")
    server.client().generate(model="tiny", prompt="hi", options={"num_predict": 2})
    assert wait_until(lambda: loaded_names(server) == [], timeout=30)


def test_negative_keep_alive_keeps_the_model_forever(make_server) -> None:
    server = make_server(OLLAMA_KEEP_ALIVE="1")
    server.client().generate(model="tiny", prompt="hi", options={"num_predict": 2}, keep_alive=-1)
    (m,) = httpx.get(server.url + "/api/ps").json()["models"]
    assert int(m["expires_at"][:4]) > 2100


def test_changing_num_ctx_reloads_the_model(server) -> None:
    client = server.client()
    client.generate(model="tiny", prompt="hi", options={"num_predict": 1, "num_ctx": 128})
    client.generate(model="tiny", prompt="hi", options={"num_predict": 1, "num_ctx": 256})
    models = [m for m in httpx.get(server.url + "/api/ps").json()["models"] if m["name"] == "tiny:latest"]
    assert [m["context_length"] for m in models] == [256]


def test_killed_runner_fails_its_stream_and_is_replaced(make_server) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL="1")
    client = server.client()
    client.generate(model="tiny", prompt="hi", options={"num_predict": 1})
    (pid,) = server.runner_pids()
    errors: list[ollama.ResponseError] = []
    started = threading.Event()

    def stream_forever() -> None:
        try:
            for _ in client.generate(model="tiny", prompt="hello", stream=True,
                                     options={"num_predict": -1, "num_ctx": 2048}):
                started.set()
        except ollama.ResponseError as e:
            errors.append(e)
        started.set()

    t = threading.Thread(target=stream_forever)
    t.start()
    assert started.wait(60)
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    assert len(errors) == 1 and "model runner has unexpectedly stopped" in errors[0].error
    # The next request gets a fresh runner.
    r = client.generate(model="tiny", prompt="hi", options={"num_predict": 3})
    assert r.eval_count == 3
    (new_pid,) = server.runner_pids()
    assert new_pid != pid


def test_killed_runner_fails_a_non_streaming_request_with_500(make_server, tmp_path) -> None:
    from support.tiny_models import write_tiny_llama

    # A context so large that the unbounded generation is still running when the kill lands.
    server = make_server(OLLAMA_NUM_PARALLEL="1")
    server.create_model("long", write_tiny_llama(tmp_path / "long.gguf", context_length=131072))
    client = server.client()
    opts = {"num_ctx": 131072}
    client.generate(model="long", prompt="hi", options={**opts, "num_predict": 1})
    (pid,) = server.runner_pids()
    result: list[httpx.Response] = []
    t = threading.Thread(target=lambda: result.append(httpx.post(
        server.url + "/api/generate", timeout=120, json={
            "model": "long", "prompt": "hello", "stream": False,
            "options": {**opts, "num_predict": -1}})))
    t.start()
    busy_from = _cpu_ticks(pid)
    assert wait_until(lambda: _cpu_ticks(pid) > busy_from + 20)  # generating: 0.2 s of CPU
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    (r,) = result
    assert r.status_code == 500
    assert "model runner has unexpectedly stopped" in r.json()["error"]
    assert client.generate(model="long", prompt="hi", options={**opts, "num_predict": 2}).eval_count == 2


def _cpu_ticks(pid: int) -> int:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def test_a_killed_worker_node_is_replaced_and_serving_goes_on(make_server) -> None:
    server = make_server()
    client = server.client()
    client.generate(model="tiny", prompt="hi", options={"num_predict": 1})
    old_node, (old_runner,) = server.node_pid(), server.runner_pids()
    assert old_node is not None
    os.kill(old_node, signal.SIGKILL)
    # The orphaned runner notices its node is gone and exits; the supervisor starts a new node;
    # the gateway's heartbeat sees a new node id and drops the runners of the old one.
    assert wait_until(lambda: old_runner not in server.runner_pids())
    assert wait_until(lambda: server.node_pid() not in (None, old_node))
    assert wait_until(lambda: loaded_names(server) == [])
    r = client.generate(model="tiny", prompt="hi", options={"num_predict": 3})
    assert r.eval_count == 3
    assert server.runner_pids() and old_runner not in server.runner_pids()
